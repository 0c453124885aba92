"""End-to-end: S3PRL's own downstream runner trains and evaluates KS with a plugin upstream.

* ``python -m s3prl.run_downstream -h`` (unchanged S3PRL, subprocess) lists our upstreams, which
  only works through the ``.pth`` import hook installed with the package;
* ``python -m s3prl.run_downstream -m train ... -d speech_commands -u fithubert_local`` (unchanged
  S3PRL, hook) and ``python -m s3prl_distill.run_downstream`` (wrapper) train a few steps on tiny
  generated Speech Commands data with a student checkpoint made by
  ``s3prl_distill.models.build_student`` + ``s3prl_distill.checkpoint.save_student``, evaluate on
  dev and test, write S3PRL checkpoints, and resume / evaluate from them (weights_only loading of
  S3PRL's pickled ``Args`` Namespace).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill.checkpoint import save_student
from s3prl_distill.config import from_dict
from s3prl_distill.models import StudentConfig, build_student

from conftest import make_speech_commands_layout

compat.apply()  # this process reads S3PRL's checkpoints (pickled Args) with weights_only=True

# HuBERT's conv arithmetic (stride 320) with tiny widths: the featurizer checks the true rate
CNN = [{"channels": 8, "kernel": 10, "stride": 5}] + [{"channels": 8, "kernel": 3, "stride": 2}] * 4 \
    + [{"channels": 8, "kernel": 2, "stride": 2}] * 2
ENC = {"dim": 16, "ffn_dim": 24, "num_heads": 2, "num_layers": 2, "pos_conv_kernel": 8,
       "pos_conv_groups": 2}


def _student_ckpt(path: Path, family: str) -> Path:
    torch.manual_seed(0)
    if family == "fithubert":
        data = {"family": "fithubert", "cnn": {"layers": CNN}, "encoder": ENC, "time_reduction": 2,
                "teacher_dim": 12, "teacher_layers": 2,
                "heads": [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"}
                          for i in (1, 2)]}
    else:
        data = {"family": "distilhubert", "cnn": {"layers": CNN}, "encoder": ENC, "teacher_dim": 16,
                "heads": [{"student_layer": 2, "teacher_layer": t} for t in (2, 4)]}
    student = build_student(from_dict(StudentConfig, data, where="test"))
    save_student(path, student, teacher_desc={"source": "test"}, training={"steps": 0})
    return path


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("S3PRL_DISTILL_NO_HOOK", None)
    return env


def _ks_config(tmp_path: Path, layout: dict, total_steps: int = 4) -> Path:
    config = {
        "runner": {"total_steps": total_steps, "gradient_clipping": 1, "gradient_accumulate_steps": 1,
                   "log_step": 2, "eval_step": total_steps, "save_step": total_steps, "max_keep": 1,
                   "eval_dataloaders": ["dev", "test"]},
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-3},
        "downstream_expert": {
            "datarc": {"speech_commands_root": str(layout["train"]),
                       "speech_commands_test_root": str(layout["test"]),
                       "num_workers": 0, "batch_size": 4},
            "modelrc": {"projector_dim": 8, "select": "UtteranceLevel",
                        "UtteranceLevel": {"pooling": "MeanPooling"}},
        },
    }
    path = tmp_path / "ks.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``python *args`` in its own session; on timeout kill the whole group (launcher workers)."""
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(args)} timed out after {timeout} s:\n{out[-3000:]}\n"
                             f"{err[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}\n"
                             f"{err[-6000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_unchanged_s3prl_help_lists_plugin_upstreams(tmp_path):
    proc = _run(["-m", "s3prl.run_downstream", "-h"], cwd=tmp_path, timeout=180)
    listed = set(re.findall(r"[A-Za-z0-9_]+", proc.stdout))
    assert {"distilhubert_local", "fithubert_local", "distill_student_local"} <= listed
    assert {"hubert_local", "distiller_local"} <= listed  # S3PRL's own entries are still there


@pytest.mark.slow
def test_s3prl_runner_trains_and_evaluates_ks_with_plugin_upstream(tmp_path):
    layout = make_speech_commands_layout(tmp_path / "sc", per_word=2, dev_per_word=1,
                                         test_per_word=1, seconds=0.5)
    ckpt = _student_ckpt(tmp_path / "fit.ckpt", "fithubert")
    config = _ks_config(tmp_path, layout)
    expdir = tmp_path / "exp"
    # the unchanged S3PRL command line: the .pth hook registers fithubert_local
    _run(["-m", "s3prl.run_downstream", "-m", "train", "-u", "fithubert_local", "-k", str(ckpt),
          "-d", "speech_commands", "-c", str(config), "-p", str(expdir), "--device", "cpu"],
         cwd=tmp_path)
    states = sorted(expdir.glob("states-*.ckpt"))
    assert [p.name for p in states] == ["states-4.ckpt"]
    log = (expdir / "log.log").read_text()
    assert re.search(r"^dev at step 4: [0-9.]+$", log, re.M), log
    assert re.search(r"^test at step 4: [0-9.]+$", log, re.M), log
    truth = (expdir / "test_truth.txt").read_text().split("\n")
    assert len([t for t in truth if t]) == 12  # 10 words + _unknown_ + _silence_
    state = torch.load(states[0], weights_only=True)  # S3PRL's Args Namespace, allowed by compat
    assert state["Step"] == 4 and state["Args"].upstream == "fithubert_local"
    assert "Downstream" in state and "Featurizer" in state
    # evaluate from the S3PRL checkpoint through our wrapper command: one more test record
    before = len(re.findall(r"^test at step \d+: [0-9.]+$", log, re.M))
    (expdir / "test_predict.txt").unlink()
    _run(["-m", "s3prl_distill.run_downstream", "-m", "evaluate", "-e", str(states[0]),
          "-t", "test", "--device", "cpu"], cwd=tmp_path)
    after = (expdir / "log.log").read_text()
    assert len(re.findall(r"^test at step \d+: [0-9.]+$", after, re.M)) == before + 1
    assert len((expdir / "test_predict.txt").read_text().split()) == 2 * 12


@pytest.mark.slow
def test_wrapper_trains_distilhubert_and_resumes(tmp_path):
    layout = make_speech_commands_layout(tmp_path / "sc", per_word=2, dev_per_word=1,
                                         test_per_word=1, seconds=0.5)
    ckpt = _student_ckpt(tmp_path / "distil.ckpt", "distilhubert")
    config = _ks_config(tmp_path, layout, total_steps=2)
    expdir = tmp_path / "exp"
    env_rank = {k: v for k, v in os.environ.items() if k in ("LOCAL_RANK", "WORLD_SIZE")}
    assert not env_rank, "run this test outside a distributed launcher"
    _run(["-m", "s3prl_distill.run_downstream", "-m", "train", "-u", "distilhubert_local",
          "-k", str(ckpt), "-d", "speech_commands", "-c", str(config), "-p", str(expdir),
          "--device", "cpu"], cwd=tmp_path)
    assert (expdir / "states-2.ckpt").is_file()
    # resume the finished experiment with more steps: S3PRL reloads Args/optimizer under weights_only
    _run(["-m", "s3prl_distill.run_downstream", "-m", "train", "-e", str(expdir / "states-2.ckpt"),
          "-o", "config.runner.total_steps=4,,config.runner.save_step=4,,config.runner.eval_step=4",
          "--device", "cpu"], cwd=tmp_path)
    assert (expdir / "states-4.ckpt").is_file()
    state = torch.load(expdir / "states-4.ckpt", weights_only=True)
    assert state["Step"] == 4 and state["Args"].upstream == "distilhubert_local"


@pytest.mark.slow
def test_torchrun_two_processes_cpu(tmp_path):
    """torchrun (LOCAL_RANK in the environment, no --local_rank) -> S3PRL's DDP path on gloo.

    Before the fixes in s3prl_distill.run_downstream this failed three ways on current torch:
    S3PRL never saw a rank (trained 2 independent copies), ``torch.cuda.set_device`` / DDP
    ``device_ids`` broke on CPU, rank 1 never counted its steps and crashed when rank 0 exited,
    and rank 0's evaluation started a DDP buffer broadcast rank 1 never joined.
    """
    layout = make_speech_commands_layout(tmp_path / "sc", per_word=2, dev_per_word=1,
                                         test_per_word=1, seconds=0.5)
    ckpt = _student_ckpt(tmp_path / "distil.ckpt", "distilhubert")
    config = _ks_config(tmp_path, layout, total_steps=4)
    expdir = tmp_path / "exp"
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "s3prl_distill.run_downstream", "-m", "train", "-u", "distilhubert_local",
          "-k", str(ckpt), "-d", "speech_commands", "-c", str(config), "-p", str(expdir),
          "--device", "cpu"], cwd=tmp_path, timeout=300)
    state = torch.load(expdir / "states-4.ckpt", weights_only=True)
    assert state["WorldSize"] == 2 and state["Step"] == 4
    assert state["Args"].local_rank == 0 and state["Args"].backend == "gloo"
    log = (expdir / "log.log").read_text()
    assert re.search(r"^dev at step 4: [0-9.]+$", log, re.M)
    assert re.search(r"^test at step 4: [0-9.]+$", log, re.M)
