"""What a careless or hostile user does to the pretraining runner: it does the right thing or stops
with one line naming the culprit (issue 14: seeds, overrides, locks, bad checkpoints, exit codes)."""

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

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml, runner_config
from s3prl_distill.checkpoint import CheckpointError, read_checkpoint
from s3prl_distill.config import ConfigError
from s3prl_distill.io import atomic_save, safe_load
from s3prl_distill.pretrain.checkpoints import (ExperimentBusyError, ExperimentLock,
                                                list_checkpoints, resume_candidates)
from s3prl_distill.run_pretrain import main, parse_args, run


@pytest.fixture
def setup(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8)
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=4, save_step=2)
    return tmp_path, model, runner


def _argv(tmp_path, model, runner, expdir="exp", *extra):
    return ["-u", "distiller", "-g", str(model), "-c", str(runner), "-p", str(tmp_path / expdir),
            "--device", "cpu", *extra]


def _same(a, b):
    a, b = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    return all(torch.equal(a[k], b[k]) for k in a)


def _keep_only(expdir, step):
    for s, path in list_checkpoints(str(expdir)):
        if s != step:
            os.remove(path)


def test_resume_keeps_the_saved_seed_and_refuses_another(setup, capsys):
    tmp_path, model, runner = setup
    full = run(parse_args(_argv(tmp_path, model, runner, "full", "--seed", "11")))
    run(parse_args(_argv(tmp_path, model, runner, "part", "--seed", "11")))
    _keep_only(tmp_path / "part", 2)
    # rerun without --seed: the run continues with its own seed 11, not the default 1337
    resumed = run(parse_args(_argv(tmp_path, model, runner, "part")))
    assert _same(full, resumed)
    assert safe_load(resumed)["data_state"]["seed"] == 11
    _keep_only(tmp_path / "part", 2)
    capsys.readouterr()
    assert main(_argv(tmp_path, model, runner, "part", "--seed", "3")) == 2
    err = capsys.readouterr().err
    assert "--seed 3" in err and "seed 11" in err and len(err.strip().splitlines()) == 1


def test_override_of_expdir_decides_where_the_run_resumes(setup):
    tmp_path, model, runner = setup
    run(parse_args(_argv(tmp_path, model, runner, "elsewhere", "--seed", "5")))
    _keep_only(tmp_path / "elsewhere", 2)
    argv = _argv(tmp_path, model, runner, "ignored", "-o", f"args.expdir={tmp_path / 'elsewhere'}")
    final = run(parse_args(argv))
    assert final == str(tmp_path / "elsewhere" / "states-4.ckpt")
    assert not (tmp_path / "ignored").exists()
    assert safe_load(final)["data_state"]["seed"] == 5  # resumed, not restarted


@pytest.mark.parametrize("override,match", [
    ("args.sed=3", "unknown argument 'sed'"),
    ("args.seed=abc", "args.seed=abc: expected an integer"),
    ("args.device=tpu", "--device tpu"),
    ("config.runner.total_steps=-5", r"-o config\.runner\.total_steps=-5: runner.*total_steps"),
    ("config.optimizer.lr=fast", r"-o config\.optimizer\.lr=fast: .*lr"),
    ("config.runner.nope=1", r"-o config\.runner\.nope=1: .*nope"),
    ("runner.total_steps=3", "keys start with 'args.'"),
])
def test_bad_overrides_stop_with_one_line_naming_the_override(setup, capsys, override, match):
    tmp_path, model, runner = setup
    assert main(_argv(tmp_path, model, runner, "exp", "-o", override)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    import re
    assert re.search(match, err), err
    assert not list_checkpoints(str(tmp_path / "exp"))


def test_user_errors_are_one_line_and_debug_shows_the_traceback(setup, capsys):
    tmp_path, model, runner = setup
    bad_teacher = tmp_path / "model_bad.yaml"
    bad_teacher.write_text(model.read_text().replace(str(tmp_path / "teacher.pt"),
                                                     str(tmp_path / "missing.pt")))
    assert main(_argv(tmp_path, bad_teacher, runner)) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(Exception, match="missing.pt"):
        main(_argv(tmp_path, bad_teacher, runner, "exp", "--debug"))
    empty = tmp_path / "empty"
    empty.mkdir()
    data_runner = runner_config(tmp_path, empty, name="runner_empty.yaml")
    capsys.readouterr()
    assert main(_argv(tmp_path, model, data_runner, "exp2")) == 2
    err = capsys.readouterr().err
    assert "no usable audio" in err or "no audio" in err, err


def test_a_folder_named_like_a_checkpoint_does_not_block_resume(setup):
    tmp_path, model, runner = setup
    full = run(parse_args(_argv(tmp_path, model, runner, "full", "--seed", "2")))
    run(parse_args(_argv(tmp_path, model, runner, "part", "--seed", "2")))
    _keep_only(tmp_path / "part", 2)
    (tmp_path / "part" / "states-99.ckpt").mkdir()
    assert [s for s, _ in list_checkpoints(str(tmp_path / "part"))] == [2]
    assert _same(full, run(parse_args(_argv(tmp_path, model, runner, "part"))))


def test_a_checkpoint_with_a_wrong_shape_falls_back_to_the_previous_good_one(setup, caplog):
    tmp_path, model, runner = setup
    full = run(parse_args(_argv(tmp_path, model, runner, "full", "--seed", "2")))
    run(parse_args(_argv(tmp_path, model, runner, "part", "--seed", "2")))
    _keep_only(tmp_path / "part", 2)
    good = safe_load(tmp_path / "part" / "states-2.ckpt")
    bad = dict(good, step=3)
    key = next(iter(bad["state_dict"]))
    bad["state_dict"] = dict(bad["state_dict"], **{key: torch.zeros(1, 2, 3)})
    atomic_save(bad, tmp_path / "part" / "states-3.ckpt")
    with caplog.at_level("WARNING"):
        resumed = run(parse_args(_argv(tmp_path, model, runner, "part")))
    assert "states-3.ckpt" in caplog.text and key in caplog.text
    assert _same(full, resumed)
    # an optimizer state of the wrong shape is refused too (torch would fail at the first update)
    _keep_only(tmp_path / "part", 2)
    bad = dict(good, step=3)
    state = dict(bad["optimizer"])
    state["state"] = {k: {n: (torch.zeros(7) if torch.is_tensor(v) and v.dim() else v)
                          for n, v in s.items()} for k, s in state["state"].items()}
    bad["optimizer"] = state
    atomic_save(bad, tmp_path / "part" / "states-3.ckpt")
    caplog.clear()
    with caplog.at_level("WARNING"):
        resumed = run(parse_args(_argv(tmp_path, model, runner, "part")))
    assert "optimizer state does not fit" in caplog.text
    assert _same(full, resumed)


def test_an_explicit_bad_checkpoint_is_an_error_naming_it(setup, capsys):
    tmp_path, model, runner = setup
    run(parse_args(_argv(tmp_path, model, runner, "part", "--seed", "2")))
    path = tmp_path / "part" / "states-2.ckpt"
    bad = safe_load(path)
    key = next(iter(bad["state_dict"]))
    bad["state_dict"][key] = torch.zeros(1, 2, 3)
    atomic_save(bad, tmp_path / "bad.ckpt")
    capsys.readouterr()
    assert main(_argv(tmp_path, model, runner, "other", "-e", str(tmp_path / "bad.ckpt"))) == 2
    err = capsys.readouterr().err
    assert "bad.ckpt" in err and key in err
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resume_candidates(str(tmp_path), str(tmp_path / "nowhere"))


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with ExperimentLock(str(tmp_path / "exp")):
        with pytest.raises(ExperimentBusyError, match=rf"pid {os.getpid()}"):
            ExperimentLock(str(tmp_path / "exp")).acquire()
    with ExperimentLock(str(tmp_path / "exp")):  # released: free again
        pass


HOLDER = textwrap.dedent("""
    import sys, time
    from s3prl_distill.pretrain.checkpoints import ExperimentLock
    ExperimentLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "exp")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(ExperimentBusyError, match=f"pid {child.pid}"):
            ExperimentLock(str(tmp_path / "exp")).acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    ExperimentLock(str(tmp_path / "exp")).acquire().release()


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_stops_with_one_line(setup):
    tmp_path, model, runner = setup
    slow = runner_config(tmp_path, tmp_path / "audio", total_steps=400, save_step=100,
                         name="runner_slow.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "s3prl_distill.run_pretrain", *_argv(tmp_path, model, slow, "shared")]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        lock = tmp_path / "shared" / ".lock"
        while not (lock.exists() and lock.read_text().startswith("pid")):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr and "another run" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
