"""End-to-end pretraining runs (slow): SIGKILL + resume, S3PRL's own runner, 2-process DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml, runner_config
from s3prl_distill.checkpoint import read_checkpoint
from s3prl_distill.pretrain.checkpoints import list_checkpoints
from s3prl_distill.run_pretrain import parse_args, run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _env(threads: int = 1):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _same_params(a_path, b_path, atol=0.0):
    a, b = read_checkpoint(a_path)["state_dict"], read_checkpoint(b_path)["state_dict"]
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, worst
    return worst


# a run whose updates after each checkpoint are slowed down, so that the test can kill it mid-run
SLOW_CHILD = textwrap.dedent("""
    import sys, time
    import s3prl_distill
    from s3prl_distill.pretrain import trainer
    _save = trainer.Trainer.save
    def save(self):
        path = _save(self)
        time.sleep(0.4)
        return path
    trainer.Trainer.save = save
    from s3prl_distill.run_pretrain import main
    sys.exit(main(sys.argv[1:]))
""")


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8)
    model = model_yaml(tmp_path, teacher, "distilhubert", dropout=0.1)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=8, save_step=2, batch_size=3)
    torch.set_num_threads(1)
    argv = ["-u", "distiller", "-g", str(model), "-c", str(runner), "--device", "cpu", "--seed", "11"]
    full = run(parse_args(argv + ["-p", str(tmp_path / "full")]))

    expdir = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, *argv, "-p", str(expdir)],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (expdir / "states-4.ckpt").exists():
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    steps = [s for s, _ in list_checkpoints(str(expdir))]
    assert 8 not in steps and 4 in steps, steps  # killed mid-run

    resumed = run(parse_args(argv + ["-p", str(expdir)]))  # the same command again
    assert os.path.basename(resumed) == "states-8.ckpt"
    _same_params(full, resumed, atol=0.0)


S3PRL_RUNNER_CHILD = textwrap.dedent("""
    import argparse, os, sys, yaml
    import torch
    import s3prl_distill
    from s3prl_distill import compat, registry
    compat.apply()
    import s3prl
    sys.path.insert(0, os.path.dirname(s3prl.__file__))   # as S3PRL's run_pretrain.py runs
    from pretrain.runner import Runner                     # S3PRL's OWN runner
    registry.extend_pretrain_path()
    model_yaml, runner_yaml, expdir = sys.argv[1:4]
    config = yaml.safe_load(open(runner_yaml))
    args = argparse.Namespace(upstream="distiller", upstream_config=model_yaml, expdir=expdir,
                              init_ckpt=None, device="cpu", multi_gpu=False, seed=1)
    torch.manual_seed(1)
    runner = Runner(args, config)
    import pretrain.distiller.pretrain_expert as ours
    assert type(runner.upstream).__name__ == "UpstreamPretrainExpert", type(runner.upstream)
    assert ours.UpstreamPretrainExpert.__module__ == "s3prl_distill.pretrain.expert"
    before = {k: v.clone() for k, v in runner.upstream.model.state_dict().items()}
    losses = []
    forward = runner.upstream.forward
    def spy(data, **kw):
        loss, records = forward(data, **kw)
        losses.append(float(loss))
        return loss, records
    runner.upstream.forward = spy
    runner.train()
    runner.logger.close()
    after = runner.upstream.model.state_dict()
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    print("STEPS", len(losses), "CHANGED", changed, "FIRST", losses[0], "LAST", losses[-1])
    print("CKPTS", sorted(f for f in os.listdir(expdir) if f.startswith("states-")))
""")


def test_s3prl_own_runner_drives_our_expert(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8)
    model = model_yaml(tmp_path, teacher, "distilhubert")
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=6, save_step=3, log_step=2,
                           lr=2e-3)
    data = yaml.safe_load(runner.read_text())
    data["runner"]["fp16"] = False
    runner.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-c", S3PRL_RUNNER_CHILD, str(model), str(runner),
                          str(tmp_path / "s3prl_exp")], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("STEPS"))
    _, steps, _, changed, _, first, _, last = line.split()
    assert int(steps) == 6 and int(changed) > 0
    assert float(last) < float(first)
    assert "states-3.ckpt" in out.stdout and "states-" in out.stdout


def test_ddp_two_processes_match_single_process(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    # utterances of different lengths, no crop: ranks hold different frame counts
    make_audio_dir(tmp_path / "audio", count=8, seconds=(0.4, 0.9))
    model = model_yaml(tmp_path, teacher, "fithubert")
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=4, save_step=2, batch_size=4,
                           crop_seconds=0.0)
    argv = ["-u", "distiller", "-g", str(model), "-c", str(runner), "--device", "cpu", "--seed", "5"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "s3prl_distill.run_pretrain", *argv, "-p", str(tmp_path / "ddp")]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "student parameters identical across 2 processes" in out.stderr
    ddp_steps = [s for s, _ in list_checkpoints(str(tmp_path / "ddp"))]
    assert ddp_steps == [2, 4]  # only rank 0 wrote, no duplicates
    ckpt = read_checkpoint(tmp_path / "ddp" / "states-4.ckpt")
    assert ckpt["training"]["world_size"] == 2 and len(ckpt["rng"]) == 2

    torch.set_num_threads(1)
    single = run(parse_args(argv + ["-p", str(tmp_path / "single")]))
    worst = _same_params(tmp_path / "ddp" / "states-4.ckpt", single, atol=1e-5)
    assert worst < 1e-5


def test_ddp_with_teacher_cache_built_by_rank0_matches_single_process(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8, seconds=(0.4, 0.9))
    model = model_yaml(tmp_path, teacher, "fithubert")
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=4, save_step=2, batch_size=4,
                           crop_seconds=0.0, extra_datarc={"teacher_cache": str(tmp_path / "cache"),
                                                           "teacher_cache_dtype": "float32"})
    argv = ["-u", "distiller", "-g", str(model), "-c", str(runner), "--device", "cpu", "--seed", "5"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "s3prl_distill.run_pretrain", *argv, "-p", str(tmp_path / "ddp")]
    env = _env()
    env["S3PRL_DISTILL_LOG"] = "INFO"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "building it" in out.stderr  # rank 0 (rank 1 waiting: test_pretrain_cache.py)
    assert (tmp_path / "cache" / "index.json").is_file()
    assert "student parameters identical across 2 processes" in out.stderr

    torch.set_num_threads(1)
    single = run(parse_args(argv + ["-p", str(tmp_path / "single")]))  # reuses the cache
    _same_params(tmp_path / "ddp" / "states-4.ckpt", single, atol=1e-5)
