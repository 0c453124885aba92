"""Import hook that plugs s3prl-distill into S3PRL's unchanged commands.

Installed with the package as ``s3prl_distill_hook.pth`` in site-packages, whose one line
``import _s3prl_distill_hook`` runs at interpreter start-up. Importing this module costs almost
nothing: it imports only ``sys``/``os`` (no torch, no importlib.abc) and puts one finder at the front
of ``sys.meta_path``. The finder does nothing until one of the watched modules is imported; then it
lets the normal finders load the module and runs our code right after the module's own body:

* ``s3prl`` -> ``s3prl_distill.compat.apply()`` (torchaudio/hub/numpy shims and the weights_only
  allow-list) before any S3PRL submodule imports torchaudio;
* ``s3prl.hub`` -> ``s3prl_distill.registry.register(hub)``: our upstreams appear in
  ``dir(s3prl.hub)``, hence in ``python -m s3prl.run_downstream -h``;
* ``s3prl.pretrain`` and S3PRL's top-level ``pretrain`` (``run_pretrain.py`` run from inside
  S3PRL's folder, as S3PRL's README does) -> first
  ``s3prl_distill.compat.weights_only.allow_s3prl_checkpoints()``, then
  ``s3prl_distill.registry.extend_pretrain_path(module)``. ``run_pretrain.py`` imports
  ``pretrain.runner`` at its top, before its first ``torch.load`` (``-e`` / ``-a`` resume), which
  therefore reads S3PRL's pickled ``Args`` and LR schedules with ``weights_only`` left on.
  A top-level ``pretrain`` of any other project is left alone (:func:`is_s3prl_pretrain_folder`).

A failure inside our code is logged with its traceback and does not break S3PRL's own import
(S3PRL's own upstreams keep working); ``python -m s3prl_distill.run_downstream`` calls
``register()`` directly and does raise. Set ``S3PRL_DISTILL_NO_HOOK=1`` to disable the hook.
"""

import os
import sys

__all__ = ["install", "uninstall", "HookFinder", "fired", "is_s3prl_pretrain_folder"]

_FIRED = []  # names whose post-import action acted, in order (for tests and debugging)


def is_s3prl_pretrain_folder(path):
    """Whether ``path`` is ``<root>/pretrain`` of an S3PRL source tree (installed or a git checkout).

    ``<root>`` must hold S3PRL's ``hub.py`` and ``run_pretrain.py``; decided from files only (no
    imports), so that it is cheap and never imports torch.
    """
    path = os.path.realpath(path)
    if os.path.basename(path) != "pretrain":
        return False
    root = os.path.dirname(path)
    return all(os.path.isfile(os.path.join(root, name)) for name in ("hub.py", "run_pretrain.py"))


def _is_s3prl_pretrain(module):
    return any(is_s3prl_pretrain_folder(p) for p in list(getattr(module, "__path__", None) or []))


def _after_s3prl(module):
    from s3prl_distill import compat

    compat.apply()


def _after_hub(module):
    from s3prl_distill import registry

    registry.register(module)


def _after_pretrain(module):
    if not _is_s3prl_pretrain(module):
        return False  # some other project's `pretrain`: leave it (and torch) alone
    from s3prl_distill import registry
    from s3prl_distill.compat import weights_only

    weights_only.allow_s3prl_checkpoints()  # before run_pretrain.py's first torch.load
    registry.extend_pretrain_path(module)


_ACTIONS = {
    "s3prl": _after_s3prl,
    "s3prl.hub": _after_hub,
    "s3prl.pretrain": _after_pretrain,
    "pretrain": _after_pretrain,
}


def _run_action(name, module):
    try:
        if _ACTIONS[name](module) is not False:
            _FIRED.append(name)
    except Exception:
        import logging

        logging.getLogger("s3prl_distill.hook").exception(
            "s3prl-distill import hook failed after importing %s; S3PRL is usable but the "
            "plugin is not registered (run python -m s3prl_distill.run_downstream to see the "
            "error directly)", name)


class _PostExecLoader:  # duck-typed loader: importlib.abc would cost ~15 ms at start-up
    """Wraps a module's real loader; runs our action after the module body executed."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_action(self._name, module)

    def __getattr__(self, attr):  # get_code, get_source, is_package, get_resource_reader, ...
        return getattr(self._loader, attr)


class HookFinder:  # duck-typed meta-path finder (only find_spec is needed)
    """Meta-path finder that only wraps the loaders of the watched module names."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _ACTIONS or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PostExecLoader(spec.loader, fullname)
        return spec


def install():
    """Put the finder at the front of ``sys.meta_path`` (idempotent). Returns the finder or None."""
    if os.environ.get("S3PRL_DISTILL_NO_HOOK", "") not in ("", "0"):
        return None
    for finder in sys.meta_path:
        if isinstance(finder, HookFinder) or type(finder).__name__ == "HookFinder":
            return finder
    finder = HookFinder()
    sys.meta_path.insert(0, finder)
    # modules imported before the hook was installed (e.g. in a long-lived process)
    for name in _ACTIONS:
        if name in sys.modules and name != "pretrain":
            _run_action(name, sys.modules[name])
    return finder


def uninstall():
    """Remove the finder from ``sys.meta_path``."""
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "HookFinder"]


def fired():
    """Names whose post-import action ran in this process."""
    return list(_FIRED)


install()
