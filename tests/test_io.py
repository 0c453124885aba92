"""Atomic checkpoint writes and pickle-free loading."""

from __future__ import annotations

import os

import pytest
import torch

from s3prl_distill.io import atomic_save, atomic_write_text, safe_load


def test_round_trip_plain_data(tmp_path):
    obj = {"config": {"dim": 4, "layers": [1, 2]}, "state_dict": {"w": torch.arange(6.0).view(2, 3)}}
    path = tmp_path / "sub" / "ckpt.pt"
    atomic_save(obj, path)
    back = safe_load(path)
    assert back["config"] == obj["config"]
    assert torch.equal(back["state_dict"]["w"], obj["state_dict"]["w"])
    assert [p for p in os.listdir(path.parent) if p.startswith(".tmp-")] == []


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"step": 1}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"step": 2, "bad": Unsaveable()}, path)
    assert safe_load(path) == {"step": 1}
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


class Payload:
    """A class no allow-list names (compat.apply() allows argparse.Namespace for S3PRL)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"args": Payload(lr=1.0)}, path)
    with pytest.raises(ValueError, match="pickled.pt: cannot be loaded safely"):
        safe_load(path)


def test_truncated_and_missing(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="ckpt.pt"):
        safe_load(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        safe_load(tmp_path / "nope.pt")


def test_atomic_text(tmp_path):
    atomic_write_text("héllo\n", tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
