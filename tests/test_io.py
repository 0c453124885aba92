"""Atomic checkpoint writes and pickle-free loading."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from s3prl_distill.errors import UserError, user_message
from s3prl_distill.io import LoadError, atomic_save, atomic_write_text, remove_stale_temp_files, safe_load


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
    with pytest.raises(LoadError) as info:
        safe_load(path)
    text = str(info.value)
    # names the file and the blocked class, and says what to do (not torch's generic text)
    assert "pickled.pt: refused to load" in text and "test_io.Payload" in text
    assert "add_safe_globals" in text and "Weights only load failed" not in text
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_truncated_and_missing(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError, match="ckpt.pt: cannot be loaded: it is truncated"):
        safe_load(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        safe_load(tmp_path / "nope.pt")


def test_atomic_text(tmp_path):
    atomic_write_text("héllo\n", tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"


def test_new_files_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_save({"step": 1}, tmp_path / "a.ckpt")
        atomic_write_text("x: 1\n", tmp_path / "config.yaml")
        os.umask(0o002)
        atomic_save({"step": 1}, tmp_path / "b.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.ckpt").stat().st_mode & 0o777 == 0o664


class _FullDisk:
    """A file object that accepts ``room`` bytes and then fails as a full disk does."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("room", [0, 300, 5000])
def test_full_disk_is_named_and_leaves_no_temp_file(tmp_path, monkeypatch, room):
    from s3prl_distill import io as io_mod

    path = tmp_path / "states-2.ckpt"
    atomic_save({"step": 1}, path)
    real_fdopen = os.fdopen
    monkeypatch.setattr(io_mod.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), room))
    with pytest.raises(OSError) as info:
        atomic_save({"w": torch.zeros(10000)}, path)
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == str(path)
    assert "No space left on device" in str(err)  # not torch's "unexpected pos ..."
    assert user_message(err).startswith(f"{path}: No space left on device")
    monkeypatch.undo()
    assert safe_load(path) == {"step": 1}  # the previous checkpoint is intact
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_stale_temp_files_of_one_target_are_removed(tmp_path):
    for name in (".tmp-index.json-abc", ".tmp-index.json-def", ".tmp-other.json-x", "index.json",
                 ".tmp-index.jsonx"):
        (tmp_path / name).write_text("x")
    assert remove_stale_temp_files(tmp_path / "index.json", min_age_s=3600) == []  # too recent
    removed = remove_stale_temp_files(tmp_path / "index.json")
    assert sorted(os.path.basename(p) for p in removed) == [".tmp-index.json-abc", ".tmp-index.json-def"]
    assert sorted(os.listdir(tmp_path)) == [".tmp-index.jsonx", ".tmp-other.json-x", "index.json"]
