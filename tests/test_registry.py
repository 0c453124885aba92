"""registry.register() and the .pth import hook."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap
import types

import pytest

import s3prl_distill  # noqa: F401
from s3prl_distill import registry
from s3prl_distill.registry import PRETRAIN_DIR, RegistryError

import _s3prl_distill_hook as hook

OURS = {"distilhubert_local", "fithubert_local", "distill_student_local"}


@pytest.fixture
def hub():
    registry.register()
    import s3prl.hub

    yield s3prl.hub
    registry.register()  # restore the real entries after tests that monkeypatch them


def _fake_registered(monkeypatch, entries):
    from s3prl_distill.upstream import registered

    monkeypatch.setattr(registered, "registered_entries", lambda: dict(entries))


def test_register_puts_entries_on_hub_idempotently(hub):
    from s3prl_distill.upstream.hubconf import ENTRIES

    names = registry.register()
    assert OURS <= set(names) and registry.register() == names
    for name in OURS:
        assert getattr(hub, name) is ENTRIES[name]
    assert OURS <= {a for a in dir(hub) if a[0] != "_"}  # what run_downstream's -u choices list
    assert callable(hub.hubert_local) and callable(hub.distiller_local)  # S3PRL's untouched


def test_collision_with_s3prl_name_is_an_error(hub, monkeypatch):
    from s3prl_distill.upstream import hubconf

    s3prl_entry = hub.distiller_local
    monkeypatch.setitem(hubconf.ENTRIES, "distiller_local", lambda **kw: None)
    with pytest.raises(RegistryError, match=r"\['distiller_local'\].*refusing to shadow"):
        registry.register()
    assert hub.distiller_local is s3prl_entry


def test_registered_entries_added_and_removed(hub, monkeypatch):
    def mine(**kwargs):
        return "mine"

    _fake_registered(monkeypatch, {"my_student_v1": mine})
    assert "my_student_v1" in registry.register()
    assert hub.my_student_v1 is mine
    # a fresh callable for the same name (registered_entries builds new ones) is not a collision
    _fake_registered(monkeypatch, {"my_student_v1": lambda **kw: "again"})
    registry.register()
    assert hub.my_student_v1() == "again"
    _fake_registered(monkeypatch, {})
    registry.register()
    assert not hasattr(hub, "my_student_v1")
    _fake_registered(monkeypatch, {"fithubert_local": mine})
    with pytest.raises(RegistryError, match="'fithubert_local' collides with the built-in"):
        registry.register()
    _fake_registered(monkeypatch, {"hubert_local": mine})
    with pytest.raises(RegistryError, match="hubert_local"):
        registry.register()


def test_superb_install_called(hub):
    superb = importlib.import_module("s3prl_distill.superb")
    registry.register()
    assert superb.installed()


def test_pretrain_dir_on_s3prl_pretrain_path(hub):
    import s3prl.pretrain

    assert os.path.isfile(os.path.join(PRETRAIN_DIR, "distiller", "pretrain_expert.py"))
    assert PRETRAIN_DIR in list(s3prl.pretrain.__path__)
    assert list(s3prl.pretrain.__path__).index(PRETRAIN_DIR) > 0  # S3PRL's own first
    spec = importlib.util.find_spec("s3prl.pretrain.distiller.pretrain_expert")
    assert spec is not None and spec.origin.startswith(PRETRAIN_DIR)
    spec = importlib.util.find_spec("s3prl.pretrain.runner")  # S3PRL's still wins
    assert not spec.origin.startswith(PRETRAIN_DIR)


def test_top_level_pretrain_as_run_pretrain_sees_it(hub, monkeypatch, tmp_path):
    import s3prl

    monkeypatch.delitem(sys.modules, "pretrain", raising=False)
    monkeypatch.syspath_prepend(os.path.dirname(s3prl.__file__))  # what run_pretrain relies on
    top = importlib.import_module("pretrain")
    try:
        registry.extend_pretrain_path(top)
        assert PRETRAIN_DIR in list(top.__path__)
        assert registry.extend_pretrain_path(top) == ["pretrain"] and \
            list(top.__path__).count(PRETRAIN_DIR) == 1
        spec = importlib.util.find_spec("pretrain.distiller.pretrain_expert")
        assert spec.origin.startswith(PRETRAIN_DIR)
    finally:
        sys.modules.pop("pretrain", None)
    # some other project's top-level `pretrain` is left alone
    other = tmp_path / "other" / "pretrain"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "other"))
    foreign = importlib.import_module("pretrain")
    try:
        assert registry.extend_pretrain_path(foreign) == []
        assert PRETRAIN_DIR not in list(foreign.__path__)
    finally:
        sys.modules.pop("pretrain", None)


def _fake_s3prl_checkout(root, distiller_init=False):
    """An S3PRL source tree as a git checkout has it: ``pretrain/distiller/`` WITHOUT ``__init__.py``."""
    s3prl_dir = root / "s3prl"
    distiller = s3prl_dir / "pretrain" / "distiller"
    distiller.mkdir(parents=True)
    for name in ("hub.py", "run_pretrain.py", "pretrain/__init__.py"):
        (s3prl_dir / name).write_text("")
    (s3prl_dir / "pretrain" / "runner.py").write_text("WHO = 's3prl'\n")
    (distiller / "pretrain_expert.py").write_text("raise ImportError('S3PRL own distiller')\n")
    if distiller_init:
        (distiller / "__init__.py").write_text("")
    return s3prl_dir


def _forget_pretrain():
    for name in [m for m in sys.modules if m == "pretrain" or m.startswith("pretrain.")]:
        del sys.modules[name]


@pytest.mark.parametrize("s3prl_has_init", [False, True])
def test_pretrain_precedence_rule(tmp_path, monkeypatch, s3prl_has_init):
    """S3PRL's regular packages win; its distiller folder without __init__.py loses to ours."""
    s3prl_dir = _fake_s3prl_checkout(tmp_path, distiller_init=s3prl_has_init)
    monkeypatch.syspath_prepend(str(s3prl_dir))  # run_pretrain.py runs from inside this folder
    _forget_pretrain()
    try:
        top = importlib.import_module("pretrain")  # the .pth hook extends it right away
        assert PRETRAIN_DIR in list(top.__path__) and list(top.__path__).index(PRETRAIN_DIR) > 0
        assert importlib.import_module("pretrain.runner").WHO == "s3prl"  # S3PRL's wins
        origin = importlib.util.find_spec("pretrain.distiller.pretrain_expert").origin
        collisions = registry.pretrain_collisions(str(s3prl_dir / "pretrain"))
        if s3prl_has_init:  # a regular package of S3PRL would win: reported as a collision
            assert origin.startswith(str(s3prl_dir))
            assert collisions == {"distiller": "S3PRL's package pretrain.distiller shadows ours"}
        else:
            assert origin == os.path.join(PRETRAIN_DIR, "distiller", "pretrain_expert.py")
            assert collisions == {}
    finally:
        _forget_pretrain()


def test_pretrain_names_kinds(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "ns").mkdir()
    (tmp_path / "mod.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "README.md").write_text("")
    assert registry.pretrain_names(str(tmp_path)) == {"mod": "module", "ns": "namespace",
                                                      "pkg": "package"}


# ------------------------------------------------------------------------ import hook


def test_hook_runs_action_after_module_body(tmp_path, monkeypatch):
    (tmp_path / "fake_watched_mod.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    monkeypatch.setitem(hook._ACTIONS, "fake_watched_mod", lambda m: seen.append(m.VALUE + 1))
    finder = hook.install()
    assert finder is not None and finder in sys.meta_path
    module = importlib.import_module("fake_watched_mod")
    try:
        assert seen == [42] and module.VALUE == 41
        assert module.__spec__.loader.is_package("fake_watched_mod") is False  # delegation
        assert "fake_watched_mod" in hook.fired()
    finally:
        sys.modules.pop("fake_watched_mod", None)


def test_hook_failure_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    (tmp_path / "fake_watched_mod2.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def boom(module):
        raise RuntimeError("registration exploded")

    monkeypatch.setitem(hook._ACTIONS, "fake_watched_mod2", boom)
    hook.install()
    with caplog.at_level(logging.ERROR, logger="s3prl_distill.hook"):
        module = importlib.import_module("fake_watched_mod2")
    try:
        assert module.X == 1
        assert "registration exploded" in caplog.text and "fake_watched_mod2" in caplog.text
    finally:
        sys.modules.pop("fake_watched_mod2", None)


def _python(code, **env):
    full = dict(os.environ, OMP_NUM_THREADS="1")
    full.pop("S3PRL_DISTILL_NO_HOOK", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          timeout=120, check=True).stdout.strip()


def test_pth_hook_installed_and_free_at_startup():
    out = _python("import sys; print('torch' in sys.modules, "
                  "any(type(f).__name__ == 'HookFinder' for f in sys.meta_path))")
    assert out == "False True", "the .pth hook must be active and must not import torch"
    out = _python("import sys; print(any(type(f).__name__ == 'HookFinder' for f in sys.meta_path))",
                  S3PRL_DISTILL_NO_HOOK="1")
    assert out == "False"


def test_site_packages_holds_the_pth():
    import site

    dirs = site.getsitepackages() + [site.getusersitepackages()]
    pths = [os.path.join(d, "s3prl_distill_hook.pth") for d in dirs]
    found = [p for p in pths if os.path.isfile(p)]
    assert found, f"s3prl_distill_hook.pth not in {dirs}: reinstall the package (pip install -e .)"
    with open(found[0], encoding="utf-8") as handle:
        assert handle.read().strip() == "import _s3prl_distill_hook"


ALLOWED = textwrap.dedent("""
    import sys
    import torch
    def allowed():
        out = set()
        for item in torch.serialization.get_safe_globals():
            out.add(item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}")
        return out
    before = allowed()
    sys.path.insert(0, sys.argv[1])
    import pretrain          # what run_pretrain.py's `from pretrain.runner import Runner` does first
    after = allowed()
    for name in ("argparse.Namespace", "optimizers.WarmupLinearSchedule"):
        print(name, name in before, name in after)
""")


def test_hook_allows_s3prl_checkpoints_when_s3prl_pretrain_is_imported(tmp_path):
    """S3PRL's run_pretrain.py calls torch.load right after importing pretrain.runner."""
    s3prl_dir = _fake_s3prl_checkout(tmp_path / "checkout")
    out = subprocess.run([sys.executable, "-c", ALLOWED, str(s3prl_dir)], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:2] == ["argparse.Namespace False True",
                                           "optimizers.WarmupLinearSchedule False True"]
    # some other project's top-level `pretrain`: nothing happens, not even `import torch`
    other = tmp_path / "other" / "pretrain"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import pretrain; "
            "print('torch' in sys.modules, 'pretrain' in __import__('_s3prl_distill_hook').fired())")
    assert _python_args(code, str(tmp_path / "other")) == "False False"


def _python_args(code, *args):
    full = dict(os.environ, OMP_NUM_THREADS="1")
    full.pop("S3PRL_DISTILL_NO_HOOK", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=full, timeout=120, check=True).stdout.strip()


def test_pretrain_action_allows_checkpoints_before_extending(tmp_path, monkeypatch):
    """The allow-list is installed by the pretrain action itself (not by an import it happens to
    cause), before the path is extended; a foreign `pretrain` gets neither."""
    from s3prl_distill.compat import weights_only

    calls = []
    monkeypatch.setattr(weights_only, "allow_s3prl_checkpoints", lambda: calls.append("allow"))
    monkeypatch.setattr(registry, "extend_pretrain_path", lambda m: calls.append("extend"))
    s3prl_dir = _fake_s3prl_checkout(tmp_path)
    fake = types.ModuleType("pretrain")
    fake.__path__ = [str(s3prl_dir / "pretrain")]
    hook._after_pretrain(fake)
    assert calls == ["allow", "extend"]
    fake.__path__ = [str(tmp_path)]
    assert hook._after_pretrain(fake) is False and calls == ["allow", "extend"]
