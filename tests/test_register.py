"""``s3prl-distill register`` and the zero-argument hub entries of registered checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.cli import main as cli_main
from s3prl_distill.commands.register import RegisterError, register_checkpoint, remove
from s3prl_distill.upstream import registered
from superb_corpora import make_student_checkpoint

RESERVED = {"hubert", "fbank", "distill_student_local"}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    path = tmp_path / "config" / "registered.json"
    monkeypatch.setenv(registered.ENV_VAR, str(path))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_student_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.ckpt")


def test_registry_location(monkeypatch, tmp_path):
    monkeypatch.delenv(registered.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert registered.registry_path() == tmp_path / "xdg" / "s3prl-distill" / "registered.json"
    monkeypatch.setenv(registered.ENV_VAR, str(tmp_path / "r.json"))
    assert registered.registry_path() == tmp_path / "r.json"


def test_register_then_zero_argument_entry_loads_the_student(registry, ckpt):
    entry = register_checkpoint("my_student", str(ckpt), reserved=RESERVED)
    assert entry == {"ckpt": str(ckpt), "family": "distilhubert"}
    data = json.loads(registry.read_text())
    assert data["version"] == 1 and data["entries"]["my_student"]["ckpt"] == str(ckpt)
    entries = registered.registered_entries()
    assert list(entries) == ["my_student"]
    upstream = entries["my_student"]()            # no ckpt: the registered one
    same = entries["my_student"](ckpt=str(ckpt))  # S3PRL passes ckpt=, equal path is fine
    wav = [torch.randn(16000)]
    states = upstream(wav)["hidden_states"]
    assert len(states) == 3 and states[0].shape == (1, 49, 16)
    assert torch.equal(states[-1], same(wav)["hidden_states"][-1])
    with pytest.raises(ValueError, match="registered to .*student.ckpt; got -k /other.ckpt"):
        entries["my_student"](ckpt="/other.ckpt")


def test_names_and_checkpoints_are_validated(registry, ckpt, tmp_path):
    with pytest.raises(RegisterError, match="Python identifier"):
        register_checkpoint("my-student", str(ckpt), reserved=RESERVED)
    with pytest.raises(RegisterError, match="'hubert' is already an S3PRL"):
        register_checkpoint("hubert", str(ckpt), reserved=RESERVED)
    with pytest.raises(RegisterError, match="checkpoint not found"):
        register_checkpoint("a", str(tmp_path / "none.ckpt"), reserved=RESERVED)
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(RegisterError, match="not an s3prl-distill student checkpoint"):
        register_checkpoint("a", str(bogus), reserved=RESERVED)
    register_checkpoint("a", str(ckpt), reserved=RESERVED)
    other = make_student_checkpoint(tmp_path / "other.ckpt", seed=1)
    with pytest.raises(RegisterError, match="use --force"):
        register_checkpoint("a", str(other), reserved=RESERVED)
    assert register_checkpoint("a", str(other), force=True, reserved=RESERVED)["ckpt"] == str(other)
    remove("a")
    assert registered.read_registry() == {}
    with pytest.raises(RegisterError, match="not registered"):
        remove("a")


def test_missing_checkpoint_and_broken_registry(registry, ckpt, tmp_path, caplog):
    moved = tmp_path / "moved.ckpt"
    moved.write_bytes(ckpt.read_bytes())
    register_checkpoint("gone", str(moved), reserved=RESERVED)
    moved.unlink()
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        registered.registered_entries()["gone"]()
    registry.write_text("{not json")
    assert registered.registered_entries() == {}
    assert "not a readable JSON registry" in caplog.text
    with pytest.raises(registered.RegistryFileError, match="registered.json"):
        registered.read_registry()
    registry.write_text(json.dumps({"version": 1, "entries": {"x": {"path": "/a"}}}))
    with pytest.raises(registered.RegistryFileError, match=r"entries.x.ckpt"):
        registered.read_registry()


@pytest.mark.slow  # imports s3prl.hub (~30 s) to check the name against S3PRL's entries
def test_cli_register_list_remove(registry, ckpt, capsys):
    assert cli_main(["register", "cli_student", str(ckpt)]) == 0
    assert "registered cli_student (distilhubert)" in capsys.readouterr().out
    assert cli_main(["register", "--list"]) == 0
    assert f"cli_student\tdistilhubert\t{ckpt}" in capsys.readouterr().out
    assert cli_main(["register", "fbank", str(ckpt)]) == 1  # S3PRL's name
    assert cli_main(["register", "--remove", "cli_student"]) == 0


@pytest.mark.slow
def test_registered_name_works_in_s3prl_hub_unchanged(registry, ckpt):
    """A fresh process: the import hook puts the registered entry on s3prl.hub."""
    register_checkpoint("hooked_student", str(ckpt), reserved=RESERVED)
    code = ("import s3prl.hub as hub, torch; m = hub.hooked_student(); "
            "print(len(m([torch.randn(8000)])['hidden_states']))")
    env = {"S3PRL_DISTILL_REGISTRY": str(registry), "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "3"
