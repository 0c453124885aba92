"""SUPERB hidden-set folder: written, validated, run without s3prl-distill; the validator fails
broken folders with a clear line; the export command's targets."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import venv

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.export import ExportError
from s3prl_distill.export.superb_hidden import export_superb_hidden, trace_student
from s3prl_distill.export.validate import validate_folder
from test_export_onnx import tiny_student


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("superb") / "submission"
    export_superb_hidden(tiny_student("fithubert.yaml"), str(out))
    return out


def test_folder_has_the_template_files_and_passes_the_validator(folder):
    assert sorted(os.listdir(folder)) == ["README.md", "expert.py", "model.pt", "requirements.txt"]
    assert validate_folder(str(folder)) == []
    assert re.fullmatch(r"# .*\ntorch>=\d+\.\d+\n", (folder / "requirements.txt").read_text())
    assert "s3prl_distill" not in (folder / "expert.py").read_text().replace("s3prl-distill", "")


def test_traced_graph_equals_the_student_and_has_no_device_constants():
    student = tiny_student("whisper_tiny_fithubert.yaml")
    traced = trace_student(student)
    assert 'value="cpu"' not in str(traced.graph)
    from s3prl_distill.export.onnx import example_batch

    wavs, lengths = example_batch([9000, 2345, 16000], seed=4)
    with torch.inference_mode():
        ref = student(wavs, lengths, with_heads=False)
        out = traced(wavs, lengths)
    assert out[-1].tolist() == ref.lengths.tolist()
    for got, want in zip(out[:-1], ref.hidden_states):
        for b, n in enumerate(ref.lengths.tolist()):
            assert (got[b, :n] - want[b, :n]).abs().max() < 1e-4


def _broken(folder, tmp_path, name, edit):
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    edit(copy)
    return validate_folder(str(copy))


def test_validator_fails_broken_folders_with_one_clear_line(folder, tmp_path):
    problems = _broken(folder, tmp_path, "no_model", lambda f: (f / "model.pt").unlink())
    assert problems == [f"{tmp_path / 'no_model'}: missing model.pt (a submission holds expert.py, "
                        f"model.pt and requirements.txt)"]
    problems = _broken(folder, tmp_path, "reqs", lambda f: (f / "requirements.txt").write_text(
        "torch>=2.0\ns3prl-distill\nnot a requirement!\n"))
    assert any("must not need s3prl-distill" in p for p in problems)
    assert any("line 3" in p and "not a requirement" in p for p in problems)

    def edit(f, old, new):
        text = (f / "expert.py").read_text()
        assert old in text
        (f / "expert.py").write_text(text.replace(old, new))

    problems = _broken(folder, tmp_path, "rate", lambda f: edit(
        f, 'return int(self.meta["downsample_rate"])', "return 160"))
    assert len(problems) == 2 and all("get_downsample_rates says 160" in p for p in problems)
    problems = _broken(folder, tmp_path, "shapes", lambda f: edit(
        f, 'states = list(outputs[:-1])', 'states = list(outputs[:-1]); states[0] = states[0][:, :-1]'))
    assert problems and "differ in shape" in problems[0]
    problems = _broken(folder, tmp_path, "dropout", lambda f: edit(
        f, 'states = list(outputs[:-1])', 'states = [torch.nn.functional.dropout(s, 0.5) for s in outputs[:-1]]'))
    assert problems and "two calls on the same input differ" in problems[0]
    problems = _broken(folder, tmp_path, "crash", lambda f: edit(
        f, "def get_downsample_rates", "def renamed"))
    assert problems and "has no attribute 'get_downsample_rates'" in problems[0]


def test_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("mine")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_superb_hidden(tiny_student("distilhubert.yaml"), str(tmp_path / "out"))
    assert (tmp_path / "out" / "x").read_text() == "mine"


def _torch_only_site(target):
    """A folder of links to torch and the packages torch itself requires (nothing else), for a
    venv's .pth: torch alone, in seconds, offline (no pip download of a 900 MB wheel)."""
    seen, todo = set(), ["torch"]
    target.mkdir()
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[ ;<>=!~\[(]", req, 1)[0])
        tops = {str(f).split("/")[0] for f in dist.files or []}
        for top in tops:
            if top.endswith((".dist-info", ".egg-info")) or top in ("..", "bin", "__pycache__"):
                continue
            src = dist.locate_file(top)
            if os.path.exists(src) and not (target / top).exists():
                os.symlink(src, target / top)
    return seen


@pytest.mark.slow
def test_folder_runs_in_a_venv_with_torch_alone(folder, tmp_path):
    """A fresh venv that sees torch (and what torch requires) only: s3prl-distill, s3prl, numpy's
    friends and the .pth import hook are absent; the validator runs expert.py there."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dists = _torch_only_site(tmp_path / "torch_site")
    with open(os.path.join(site, "torch_only.pth"), "w") as handle:
        handle.write(str(tmp_path / "torch_site") + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    probe = subprocess.run([python, "-c", "import torch, importlib.util as u; print(torch.__version__, "
                            "[m for m in ('s3prl_distill', 's3prl', 'transformers', 'onnx') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().endswith("[]"), probe.stdout  # torch only
    assert "torch" in dists
    assert validate_folder(str(folder), python=python) == []


def test_export_command_targets_and_one_line_errors(tmp_path, capsys):
    """``s3prl-distill export CKPT --to ...``: the default stays the student-only checkpoint; a
    student HF cannot express is one line with exit code 2."""
    from s3prl_distill.cli import main as cli_main
    from superb_corpora import make_student_checkpoint

    ckpt = make_student_checkpoint(tmp_path / "s.ckpt", family="fithubert")
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "plain.ckpt")]) == 0
    assert (tmp_path / "plain.ckpt").is_file()
    assert cli_main(["export", str(ckpt), "--to", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.int8.onnx").is_file()
    capsys.readouterr()
    assert cli_main(["export", str(ckpt), "--to", "hf", "-o", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "time reduction" in err[0] and "--to onnx" in err[0]
    assert cli_main(["validate-superb", str(tmp_path)]) == 1
    assert "missing expert.py, model.pt, requirements.txt" in capsys.readouterr().out
