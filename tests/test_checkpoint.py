"""Student checkpoints: format, weights_only loading, heads, pretraining superset, clear errors."""

from __future__ import annotations

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.checkpoint import (
    FORMAT,
    CheckpointError,
    load_student,
    save_student,
    student_checkpoint,
)
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.io import atomic_save
from s3prl_distill.models import StudentConfig, build_student


def tiny_cfg(**over) -> StudentConfig:
    data = {
        "family": "distilhubert",
        "cnn": {"layers": [{"channels": 8, "kernel": 10, "stride": 5},
                           {"channels": 8, "kernel": 3, "stride": 2}]},
        "encoder": {"dim": 16, "ffn_dim": 32, "num_heads": 2, "num_layers": 2,
                    "pos_conv_kernel": 4, "pos_conv_groups": 2},
        "teacher_dim": 16,
        "teacher_layers": 4,
        "heads": [{"student_layer": 2, "teacher_layer": 2}, {"student_layer": 2, "teacher_layer": 4}],
    }
    data.update(over)
    return from_dict(StudentConfig, data, where="test")


def test_round_trip_is_weights_only_and_drops_heads(tmp_path):
    torch.manual_seed(0)
    student = build_student(tiny_cfg()).eval()
    path = tmp_path / "s.ckpt"
    save_student(path, student, teacher_desc={"source": "fairseq", "path": "/x.pt"},
                 training={"steps": 3, "loss": 1.5})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == 1
    assert set(raw) == {"format", "version", "config", "state_dict", "teacher", "training"}
    assert any(k.startswith("heads.") for k in raw["state_dict"])

    loaded, meta = load_student(path)
    assert len(loaded.heads) == 0 and loaded.target_layers == []
    assert meta["teacher"]["source"] == "fairseq" and meta["training"]["steps"] == 3
    assert not loaded.training
    wav = torch.randn(2, 900)
    a = student(wav, with_heads=False).hidden_states
    b = loaded(wav).hidden_states
    for x, y in zip(a, b):
        assert torch.equal(x, y)

    kept, _ = load_student(path, keep_heads=True)
    assert len(kept.heads) == 2 and kept.target_layers == [2, 4]
    ref = student(wav).predictions
    for x, y in zip(ref, kept(wav).predictions):
        assert torch.equal(x, y)


def test_config_keep_heads_is_followed(tmp_path):
    student = build_student(tiny_cfg(keep_heads=True, hidden_states="layers+heads"))
    save_student(tmp_path / "k.ckpt", student)
    loaded, _ = load_student(tmp_path / "k.ckpt")
    assert len(loaded.heads) == 2
    assert len(loaded(torch.randn(1, 900)).hidden_states) == 5


def test_forced_drop_of_kept_heads_falls_back_to_layers(tmp_path):
    cfg = tiny_cfg(teacher_dim=12, keep_heads=True, hidden_states="heads",
                   heads=[{"student_layer": 1, "teacher_layer": 2, "type": "linear"}])
    save_student(tmp_path / "h.ckpt", build_student(cfg))
    kept, _ = load_student(tmp_path / "h.ckpt")
    assert kept.dim == 12 and kept.num_hidden_states == 1
    dropped, _ = load_student(tmp_path / "h.ckpt", keep_heads=False)
    out = dropped(torch.randn(1, 900))
    assert dropped.dim == 16 and dropped.num_hidden_states == 3 == len(out.hidden_states)
    assert dropped.downsample_rate == 10 and out.hidden_states[0].shape[-1] == 16


def test_checkpoint_after_drop_heads_loads(tmp_path):
    student = build_student(tiny_cfg())
    student.drop_heads()
    save_student(tmp_path / "d.ckpt", student)
    loaded, _ = load_student(tmp_path / "d.ckpt", keep_heads=True)
    assert len(loaded.heads) == 0


def test_pretraining_superset_loads(tmp_path):
    student = build_student(tiny_cfg())
    opt = torch.optim.AdamW(student.parameters())
    extra = {"optimizer": opt.state_dict(), "scheduler": {"last_epoch": 3}, "step": 7,
             "rng": {"torch": torch.get_rng_state()}, "data_state": {"epoch": 1},
             "runner_config": {"runner": {"total_steps": 10}}, "model_config": {"student": {}}}
    ckpt = student_checkpoint(student, extra=extra)
    atomic_save(ckpt, tmp_path / "states-7.ckpt")
    loaded, meta = load_student(tmp_path / "states-7.ckpt")
    assert meta["step"] == 7 and len(loaded.heads) == 0
    with pytest.raises(ValueError, match="overwrite"):
        student_checkpoint(student, extra={"config": {}})
    with pytest.raises(TypeError, match="plain data"):
        student_checkpoint(student, training={"cfg": tiny_cfg()})


def test_clear_errors_name_the_file(tmp_path):
    student = build_student(tiny_cfg())
    good = student_checkpoint(student)

    bad_format = tmp_path / "other.ckpt"
    torch.save({"Upstream_Config": {}, "model": {}}, bad_format)
    with pytest.raises(CheckpointError, match=r"other\.ckpt.*S3PRL"):
        load_student(bad_format)

    bad_version = tmp_path / "v9.ckpt"
    torch.save({**good, "version": 9}, bad_version)
    with pytest.raises(CheckpointError, match=r"v9\.ckpt.*version 9"):
        load_student(bad_version)

    bad_shape = tmp_path / "shape.ckpt"
    state = dict(good["state_dict"])
    key = "encoder.feature_projection.projection.weight"
    state[key] = torch.zeros(3, 3)
    torch.save({**good, "state_dict": state}, bad_shape)
    with pytest.raises(CheckpointError, match=rf"shape\.ckpt.*{key}"):
        load_student(bad_shape)

    bad_cfg = tmp_path / "cfg.ckpt"
    torch.save({**good, "config": {**good["config"], "bogus": 1}}, bad_cfg)
    with pytest.raises(ConfigError, match=r"cfg\.ckpt: config.*bogus"):
        load_student(bad_cfg)

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_student(garbage)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_student(tmp_path / "missing.ckpt")
