"""S3PRL's OWN ``run_pretrain.py`` from a git checkout of S3PRL drives OUR distiller (slow).

A git checkout (``pip install -e .`` of S3PRL's repository) differs from the wheel in what matters
here: it ships ``pretrain/distiller/`` (S3PRL's own distiller, a folder WITHOUT ``__init__.py``),
and ``run_pretrain.py`` offers ``-u`` = the folder names of ``pretrain/``. The layout is rebuilt in
a temporary folder: the installed wheel's files (they include ``run_pretrain.py``,
``pretrain/runner.py``, ``optimizers.py``, ``schedulers.py``, ``utility/helper.py``) plus a
``pretrain/distiller/`` of stand-ins that fail loudly if imported. Nothing is written into the
installed S3PRL package. S3PRL's script runs as its README says:
``cd s3prl && python run_pretrain.py -u distiller -g MODEL.yaml -c RUNNER.yaml -n NAME``.

Resume through S3PRL's runner is exact: S3PRL saves ``Step`` = updates - 1 and so repeats the last
update before a checkpoint on resume; with one deterministic batch per step, the resumed run's
``states-j`` therefore equals the uninterrupted run's ``states-(j+1)`` bit for bit (weights, Adam
moments and the LR schedule restored).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml

pytestmark = pytest.mark.slow

STEPS = 30
# = train_batch_size: one batch per epoch, the same batch every step; more utterances than steps,
# else S3PRL's runner names its last checkpoint states-epoch-<n>.ckpt instead of states-<step>.ckpt
UTTERANCES = 32

STAND_IN = ("raise ImportError(\"S3PRL's own pretrain/distiller was imported: s3prl_distill's "
            "distiller should win (registry.REPLACED_S3PRL_TASKS)\")\n")


def installed_s3prl() -> Path:
    spec = importlib.util.find_spec("s3prl")
    return Path(list(spec.submodule_search_locations)[0])


def make_checkout(root: Path) -> Path:
    """``<root>/s3prl``: the installed S3PRL's files + ``pretrain/distiller/`` without __init__.py."""
    s3prl_dir = root / "s3prl"
    shutil.copytree(installed_s3prl(), s3prl_dir,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".cache", ".wav_lengths"))
    distiller = s3prl_dir / "pretrain" / "distiller"
    assert not distiller.exists(), "the wheel now ships pretrain/distiller: revisit this test"
    distiller.mkdir()
    for name in ("pretrain_expert.py", "dataset.py"):
        (distiller / name).write_text(STAND_IN)
    for name in ("config_model.yaml", "config_runner.yaml"):
        (distiller / name).write_text("# stand-in for S3PRL's own file (never read here)\n")
    return s3prl_dir


def s3prl_length_table(audio_dir: Path, folder: Path, name: str = "train-clean-100") -> Path:
    """``<folder>/<name>.csv`` as S3PRL's ``preprocess/generate_len_for_bucket.py`` writes it (an
    unnamed index column, then file_path relative to libri_root, length in samples, label)."""
    import soundfile as sf

    rows = sorted(((str(p.relative_to(audio_dir)), sf.info(str(p)).frames)
                   for p in audio_dir.rglob("*.wav")), key=lambda r: -r[1])
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",file_path,length,label"] + [f"{i},{rel},{n}," for i, (rel, n) in enumerate(rows)]
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder


def s3prl_runner_yaml(folder: Path, audio_dir: Path) -> Path:
    """A runner config in S3PRL's schema: its distiller's config_runner.yaml, tiny, with S3PRL's
    own datarc keys (libri_root + file_path length tables + sets + max_timestep)."""
    tables = s3prl_length_table(audio_dir, folder / "len_for_bucket")
    data = {
        "runner": {"n_epochs": -1, "total_steps": STEPS, "gradient_clipping": 5.0,
                   "gradient_accumulate_steps": 1, "log_step": 5, "save_step": 1,
                   "max_keep": STEPS + 5, "fp16": False},
        "optimizer": {"name": "AdamW_with_schedule", "lr": 2.0e-3, "warmup_proportion": 0.07,
                      "betas": [0.9, 0.98], "eps": 1.0e-6, "weight_decay": 1.0e-6},
        "pretrain_expert": {"datarc": {"num_workers": 0, "train_batch_size": UTTERANCES,
                                       "max_timestep": 0, "libri_root": str(audio_dir),
                                       "file_path": str(tables), "sets": ["train-clean-100"]}},
    }
    path = folder / "config_runner_s3prl.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _env(root: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("S3PRL_DISTILL_NO_HOOK", None)
    # `pip install -e .` of S3PRL's repository puts the checkout first (s3prl_distill is imported
    # as this process imports it: installed, or from PYTHONPATH)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def run_pretrain(s3prl_dir: Path, *args: str, timeout: int = 400) -> str:
    command = [sys.executable, "run_pretrain.py", *args, "--device", "cpu"]
    proc = subprocess.run(command, cwd=str(s3prl_dir), env=_env(s3prl_dir.parent),
                          capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{log[-5000:]}"
    return log


def _load(path: Path):
    from s3prl_distill import compat

    compat.apply()  # S3PRL's Args / LR schedules allowed, weights_only stays on
    return torch.load(path, map_location="cpu", weights_only=True)


def _weights(path: Path):
    return _load(path)["state_dict"]


def assert_same_weights(a: Path, b: Path):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    bad = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not bad, f"{a.name} != {b.name}: {bad[:5]}"


def _steps(expdir: Path):
    """Steps of S3PRL's checkpoints; its last one is ``states-epoch-<n>.ckpt`` when the run covers
    at least one epoch (S3PRL's runner names it so), here one update per epoch: step = n."""
    return sorted(int(p.stem.split("-")[-1]) for p in expdir.glob("states-*.ckpt"))


def _ckpt(expdir: Path, step: int) -> Path:
    """S3PRL's checkpoint of ``step`` (the last one is named by its epoch)."""
    path = expdir / f"states-{step}.ckpt"
    return path if path.exists() else expdir / f"states-epoch-{step}.ckpt"


def _snapshot(folder: Path):
    return {(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkout")
    before = _snapshot(installed_s3prl())
    s3prl_dir = make_checkout(root)
    data = tmp_path_factory.mktemp("data")
    teacher = make_teacher(data / "teacher.pt")
    make_audio_dir(data / "audio", count=UTTERANCES, seconds=(0.3, 0.45))
    model = model_yaml(data, teacher, "distilhubert")
    runner = s3prl_runner_yaml(data, data / "audio")
    args = ["-u", "distiller", "-g", str(model), "-c", str(runner)]
    log = run_pretrain(s3prl_dir, *args, "-n", "full")
    full = s3prl_dir / "result" / "pretrain" / "full"
    reference = root / "reference"
    shutil.copytree(full, reference)  # S3PRL's -e resume writes into the same folder
    yield {"s3prl": s3prl_dir, "args": args, "log": log, "full": full, "reference": reference,
           "model": model, "before": before}
    assert _snapshot(installed_s3prl()) == before, "the installed S3PRL package was changed"


def test_train_from_s3prl_checkout_runs_our_distiller(setup):
    log, full = setup["log"], setup["full"]
    assert "[Runner] - Start a new experiment" in log and "ImportError" not in log
    # what S3PRL's runner leaves in the experiment folder
    names = sorted(p.name for p in full.iterdir())
    assert {"config_model.yaml", "config_runner.yaml"} <= set(names)
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert _steps(full) == list(range(1, STEPS + 1))
    ckpt = _load(_ckpt(full, STEPS))
    assert {"Optimizer", "Step", "Args", "Config", "Upstream_Config", "state_dict", "config",
            "teacher", "training", "format", "version"} <= set(ckpt)
    assert ckpt["Step"] == STEPS - 1  # S3PRL saves its progress bar before counting the update
    assert ckpt["Args"].upstream == "distiller" and ckpt["Config"]["optimizer"]["name"] == \
        "AdamW_with_schedule"
    assert ckpt["Upstream_Config"] == yaml.safe_load(setup["model"].read_text())
    schedule = ckpt["Optimizer"]["param_groups"][0]["schedule"]
    assert type(schedule).__name__ == "WarmupLinearSchedule"  # pickled as optimizers.<class>
    # the weights moved, and S3PRL's checkpoint is a student checkpoint our upstream loads
    assert not all(torch.equal(a, b) for a, b in zip(_weights(full / "states-1.ckpt").values(),
                                                     ckpt["state_dict"].values()))
    from s3prl_distill.upstream.hubconf import distill_student_local

    upstream = distill_student_local(ckpt=str(_ckpt(full, STEPS))).eval()
    with torch.no_grad():
        states = upstream([torch.zeros(16000)])["hidden_states"]
    assert len(states) >= 2 and states[0].shape[0] == 1


def test_resume_with_past_exp_continues_exactly(setup):
    """``-e CKPT`` (torch.load before anything imports s3prl): weights, Adam state, LR schedule."""
    start = 10
    log = run_pretrain(setup["s3prl"], "-e", str(setup["full"] / f"states-{start}.ckpt"))
    assert f"Resume from {setup['full'] / f'states-{start}.ckpt'}" in log
    assert "Loading upstream weights from the previous experiment" in log
    assert "Loading optimizer weights from the previous experiment" in log
    for step in range(start, STEPS):  # S3PRL repeats update `start` (see the module docstring)
        assert_same_weights(_ckpt(setup["full"], step), _ckpt(setup["reference"], step + 1))


def test_kill_then_auto_resume_continues_exactly(setup):
    """SIGKILL mid-run, then the same command with ``-a``."""
    s3prl_dir, args = setup["s3prl"], setup["args"] + ["-n", "killed"]
    expdir = s3prl_dir / "result" / "pretrain" / "killed"
    command = [sys.executable, "run_pretrain.py", *args, "--device", "cpu"]
    child = subprocess.Popen(command, cwd=str(s3prl_dir), env=_env(s3prl_dir.parent),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (expdir / "states-3.ckpt").exists():
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    steps = _steps(expdir)
    assert STEPS not in steps, steps  # killed mid-run
    # S3PRL's runner saves with a plain torch.save: a kill during a save leaves a truncated newest
    # file, which S3PRL's -a would pick. Drop it as a user would (documented in PRETRAINING.md).
    try:
        _load(_ckpt(expdir, steps[-1]))
    except Exception:
        _ckpt(expdir, steps[-1]).unlink()
        steps = steps[:-1]
    newest = steps[-1]
    log = run_pretrain(s3prl_dir, *args, "-a")
    assert f"Resume from {Path('result/pretrain/killed') / f'states-{newest}.ckpt'}" in log
    assert _steps(expdir)[-1] == STEPS
    for step in range(newest, STEPS):
        assert_same_weights(_ckpt(expdir, step), _ckpt(setup["reference"], step + 1))
