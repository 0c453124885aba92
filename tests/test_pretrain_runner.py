"""Our pretraining runner: checkpoints, resume, export, overrides, autocast (fast, in-process).

The slow end-to-end runs (SIGKILL resume, S3PRL's own runner, 2-process DDP) live in
``test_pretrain_e2e.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml, runner_config
from s3prl_distill.checkpoint import load_student, read_checkpoint
from s3prl_distill.config import ConfigError
from s3prl_distill.io import safe_load
from s3prl_distill.pretrain.checkpoints import list_checkpoints
from s3prl_distill.run_pretrain import apply_override, parse_args, run


@pytest.fixture
def setup(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8)
    return tmp_path, teacher


def _args(tmp_path, model, runner, expdir="exp", *extra):
    return parse_args(["-u", "distiller", "-g", str(model), "-c", str(runner),
                       "-p", str(tmp_path / expdir), "--device", "cpu", "--seed", "7", *extra])


def _params(path):
    return read_checkpoint(path)["state_dict"]


def test_run_writes_loadable_checkpoints_and_keeps_last_n(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher, "fithubert")
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=6, save_step=2, max_keep=2)
    final = run(_args(tmp_path, model, runner))
    assert final == str(tmp_path / "exp" / "states-6.ckpt")
    assert [s for s, _ in list_checkpoints(str(tmp_path / "exp"))] == [4, 6]
    ckpt = safe_load(final)  # weights_only: tensors and plain data only
    for key in ("format", "version", "config", "state_dict", "teacher", "training", "optimizer",
                "scheduler", "step", "rng", "data_state", "runner_config", "model_config"):
        assert key in ckpt, key
    assert ckpt["step"] == 6 and ckpt["training"]["loss"] == "fithubert"
    assert any(k.startswith("heads.") for k in ckpt["state_dict"])
    student, meta = load_student(final)
    assert len(student.heads) == 0 and meta["step"] == 6
    with torch.no_grad():
        out = student(torch.randn(1, 16000))
    assert len({h.shape for h in out.hidden_states}) == 1
    assert (tmp_path / "exp" / "config_runner.yaml").is_file()
    assert (tmp_path / "exp" / "config_model.yaml").is_file()
    events = [f for f in os.listdir(tmp_path / "exp") if f.startswith("events.out.tfevents")]
    blob = b"".join((tmp_path / "exp" / f).read_bytes() for f in events)
    for tag in (b"distiller/train-loss", b"distiller/train-mse/layer1", b"distiller/train-mse/layer2",
                b"distiller/train-hint", b"distiller/train-lr", b"distiller/train-audio-seconds-per-second"):
        assert tag in blob, tag


def test_resume_gives_identical_parameters(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher, "distilhubert", dropout=0.1)  # RNG state matters
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=7, save_step=3, batch_size=3)
    full = run(_args(tmp_path, model, runner, "full"))
    # an interrupted run: keep only the checkpoint of update 3, then rerun the same command
    part = run(_args(tmp_path, model, runner, "part"))
    for step, path in list_checkpoints(str(tmp_path / "part")):
        if step != 3:
            os.remove(path)
    resumed = run(_args(tmp_path, model, runner, "part"))
    assert os.path.basename(resumed) == os.path.basename(full) == "states-7.ckpt"
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ca, cb = safe_load(full), safe_load(resumed)
    assert ca["data_state"] == cb["data_state"]
    assert ca["optimizer"]["state"][0]["step"] == cb["optimizer"]["state"][0]["step"]


def test_past_exp_and_finished_run(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=4, save_step=2)
    final = run(_args(tmp_path, model, runner))
    again = run(_args(tmp_path, model, runner))  # already finished: nothing trained
    assert again == final
    # -e resumes from a given checkpoint into the given expdir
    other = run(parse_args(["-e", str(tmp_path / "exp" / "states-2.ckpt"), "-p",
                            str(tmp_path / "other"), "--device", "cpu", "--seed", "7"]))
    a, b = _params(final), _params(other)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_student_only(setup):
    from s3prl_distill.commands.export import export_student

    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=2, save_step=1)
    final = run(_args(tmp_path, model, runner))
    out = export_student(final, str(tmp_path / "student.pt"))
    ckpt = safe_load(out)
    assert sorted(ckpt) == ["config", "format", "state_dict", "teacher", "training", "version"]
    assert not any(k.startswith("heads.") for k in ckpt["state_dict"])
    kept = safe_load(export_student(final, str(tmp_path / "with_heads.pt"), keep_heads=True))
    assert any(k.startswith("heads.") for k in kept["state_dict"])
    student, _ = load_student(out)
    ref = _params(final)
    for key, value in student.state_dict().items():
        assert torch.equal(value, ref[key])


def test_bf16_autocast_and_accumulation(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=2, save_step=2, accum=2,
                           batch_size=2)
    data = yaml.safe_load(runner.read_text())
    data["runner"]["precision"] = "bf16"
    runner.write_text(yaml.safe_dump(data))
    final = run(_args(tmp_path, model, runner))
    ckpt = safe_load(final)
    assert ckpt["training"]["precision"] == "bf16" and ckpt["training"]["global_batch_size"] == 4
    assert ckpt["data_state"]["batches_done"] == 4  # 2 updates x 2 accumulated micro-batches
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_override_is_parsed_not_evaluated():
    args = argparse.Namespace(seed=1)
    config = {"optimizer": {"lr": 1.0}}
    apply_override("config.optimizer.lr=1.0e-3,,args.seed=3,,config.runner.name='x',,"
                   "config.pretrain_expert.datarc.sets=[a, b],,config.x.y=__import__('os')", args, config)
    assert config["optimizer"]["lr"] == 1e-3 and args.seed == 3
    assert config["runner"]["name"] == "x"
    assert config["pretrain_expert"]["datarc"]["sets"] == ["a", "b"]
    assert config["x"]["y"] == "__import__('os')"  # a plain string, never evaluated
    with pytest.raises(ConfigError, match="key=value"):
        apply_override("config.optimizer.lr", args, config)


def test_config_errors_name_file_and_key(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio")
    data = yaml.safe_load(runner.read_text())
    data["runner"]["totl_steps"] = 3
    runner.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"runner\.yaml: runner.*totl_steps"):
        run(_args(tmp_path, model, runner))
    with pytest.raises(ConfigError, match="-g UPSTREAM_CONFIG"):
        run(parse_args(["-c", str(runner), "-p", str(tmp_path / "x"), "--device", "cpu"]))


def test_distil_api_with_data_and_workers_matches_cli(setup):
    from s3prl_distill.run_pretrain import distil

    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher, "fithubert", dropout=0.1)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=3, save_step=3)
    cli = run(_args(tmp_path, model, runner, "cli"))
    data = yaml.safe_load(runner.read_text())
    data["pretrain_expert"]["datarc"]["num_workers"] = 2  # crops/order independent of workers
    api = distil(yaml.safe_load(model.read_text()), data, tmp_path / "api", seed=7, device="cpu")
    assert os.path.basename(api) == "states-3.ckpt"
    a, b = _params(cli), _params(api)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_skips_unreadable_checkpoint_and_temp_files(setup, caplog):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=4, save_step=2)
    full = run(_args(tmp_path, model, runner, "full"))
    run(_args(tmp_path, model, runner, "part"))
    part = tmp_path / "part"
    (part / "states-4.ckpt").write_bytes(b"truncated by a crash")  # not loadable
    (part / ".tmp-states-4.ckpt-abc123").write_bytes(b"half a file")  # an interrupted save
    with caplog.at_level("WARNING"):
        resumed = run(_args(tmp_path, model, runner, "part"))
    assert "ignoring unreadable checkpoint" in caplog.text and "states-4.ckpt" in caplog.text
    assert not (part / ".tmp-states-4.ckpt-abc123").exists()
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_skips_files_found_bad_on_reading(tmp_path, caplog):
    import numpy as np
    import soundfile as sf

    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=3)
    bad = np.full(12000, 0.1, dtype=np.float32)
    bad[100] = np.nan
    sf.write(str(tmp_path / "audio" / "nan.wav"), bad, 16000, subtype="FLOAT")
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=5, save_step=5, batch_size=1)
    with caplog.at_level("WARNING"):
        final = run(_args(tmp_path, model, runner))
    assert "nan.wav" in caplog.text and "no usable audio" in caplog.text
    assert safe_load(final)["step"] == 5  # the empty batch was skipped, not counted as an update


def test_epoch_based_run_length(setup):
    tmp_path, teacher = setup  # 8 utterances
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", batch_size=2, accum=3, save_step=100)
    data = yaml.safe_load(runner.read_text())
    data["runner"].update(n_epochs=3, total_steps=-1)
    runner.write_text(yaml.safe_dump(data))
    final = run(_args(tmp_path, model, runner))
    ckpt = safe_load(final)
    # 3 epochs x 4 batches / 3 accumulated = 4 updates; they end on the last batch of epoch 2
    assert ckpt["step"] == 4 and ckpt["training"]["total_steps"] == 4
    assert ckpt["data_state"]["epoch"] == 2 and ckpt["data_state"]["batches_done"] == 4


def test_head_lr_puts_heads_in_their_own_group(setup):
    """optimizer.head_lr: the heads train at their own peak rate, scheduled like the body."""
    from s3prl_distill.config import from_dict
    from s3prl_distill.pretrain.config import OptimizerConfig
    from s3prl_distill.pretrain.optim import build_optimizer, build_scheduler, param_groups
    from s3prl_distill.pretrain.config import SchedulerConfig

    net = torch.nn.ModuleDict({"heads": torch.nn.Linear(2, 2), "body": torch.nn.Linear(2, 2)})
    cfg = from_dict(OptimizerConfig, {"lr": 1e-4, "head_lr": 2e-3}, where="r.yaml: optimizer")
    groups = param_groups(cfg, net.named_parameters())
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert all(p is q for p, q in zip(groups[1]["params"], net["heads"].parameters()))
    opt = build_optimizer(cfg, net.named_parameters(), 4)
    sched = build_scheduler(SchedulerConfig(warmup_proportion=0.5), opt, total_steps=4)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5e-4, 1e-3])
    plain = from_dict(OptimizerConfig, {"lr": 1e-4}, where="r.yaml: optimizer")
    assert len(param_groups(plain, net.named_parameters())) == 1
    with pytest.raises(ConfigError, match="head_lr"):
        from_dict(OptimizerConfig, {"head_lr": 0.0}, where="r.yaml: optimizer")
    with pytest.raises(ConfigError, match="no prediction heads"):
        param_groups(cfg, net["body"].named_parameters())


def test_head_lr_run_and_resume(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher, "distilhubert")
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=4, save_step=2, max_keep=2)
    data = yaml.safe_load(Path(runner).read_text())
    data["optimizer"]["head_lr"] = 1e-3
    Path(runner).write_text(yaml.safe_dump(data))
    final = run(_args(tmp_path, model, runner))
    ckpt = safe_load(final)
    assert len(ckpt["optimizer"]["param_groups"]) == 2
    assert ckpt["optimizer"]["param_groups"][1]["initial_lr"] == pytest.approx(1e-3)
