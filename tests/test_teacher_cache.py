"""Teacher-feature cache: what is read back equals what the teacher computes."""

from __future__ import annotations

import json
import os

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.benchmark.training import _teacher_model
from s3prl_distill.pretrain.teacher_cache import TeacherCache, TeacherCacheError, write_teacher_cache


@pytest.fixture(scope="module")
def teacher():
    return _teacher_model(tiny=True, seed=0)[1]


def _wavs(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=gen) for n in lengths]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_roundtrip_equals_teacher(tmp_path, teacher, dtype, tol):
    lengths = [4000, 2500, 3300]
    wavs = _wavs(lengths)
    ids = ["a", "b", "c"]
    write_teacher_cache(str(tmp_path), teacher, ids, wavs, layers=[2, 4], batch_size=2, dtype=dtype,
                        shard_bytes=1)  # one shard per utterance
    cache = TeacherCache(str(tmp_path))
    assert len(cache) == 3 and "b" in cache and cache.layers == [2, 4]
    for utt, wav in zip(ids, wavs):
        with torch.inference_mode():
            out = teacher(wav[None], torch.tensor([wav.numel()]))
        got = cache.targets(utt)
        for k, tensor in zip([2, 4], got):
            ref = out.hidden_states[k][0, : int(out.lengths[0])]
            assert tensor.dtype == torch.float32 and tensor.shape == ref.shape
            assert (tensor - ref).abs().max() <= tol * max(1.0, float(ref.abs().max()))
    targets, lens = cache.batch_targets(["c", "a"], layers=[4])
    assert len(targets) == 1 and targets[0].shape[0] == 2
    assert lens.tolist() == [cache.targets("c")[0].shape[0], cache.targets("a")[0].shape[0]]
    assert torch.all(targets[0][0, lens[0]:] == 0)
    info = cache.describe()
    # 50 frames/s * 3600 s * 32 dims * 2 layers * bytes
    assert info["bytes_per_audio_hour"] == 180000 * 32 * 2 * (4 if dtype == torch.float32 else 2)
    assert info["utterances"] == 3 and info["bytes"] > 0


def test_errors_name_the_problem(tmp_path, teacher):
    write_teacher_cache(str(tmp_path), teacher, ["a"], _wavs([3000]), layers=[1])
    cache = TeacherCache(str(tmp_path))
    with pytest.raises(TeacherCacheError, match="'zz' is not cached"):
        cache.targets("zz")
    with pytest.raises(TeacherCacheError, match=r"layers \[3\] are not cached"):
        cache.targets("a", layers=[3])
    with pytest.raises(TeacherCacheError, match="cached from 3000 samples but is fed with 2000"):
        cache.check_utterance("a", 2000)
    cache.check_utterance("a", 3000)
    with pytest.raises(TeacherCacheError, match="unique"):
        write_teacher_cache(str(tmp_path / "x"), teacher, ["a", "a"], _wavs([3000, 3000]), layers=[1])
    with pytest.raises(TeacherCacheError, match=r"must lie in 0\.\.4"):
        write_teacher_cache(str(tmp_path / "y"), teacher, ["a"], _wavs([3000]), layers=[9])
    with pytest.raises(TeacherCacheError, match="no index.json"):
        TeacherCache(str(tmp_path / "missing"))
    index = json.loads((tmp_path / "index.json").read_text())
    index["version"] = 99
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(TeacherCacheError, match="version 99"):
        TeacherCache(str(tmp_path))


def test_cache_mismatch_names_why_a_cache_cannot_serve(tmp_path, teacher):
    from s3prl_distill.pretrain.teacher_cache import cache_mismatch, teacher_info

    folder = str(tmp_path)
    write_teacher_cache(folder, teacher, ["a", "b"], _wavs([3000, 2000]), layers=[1, 3])
    info = teacher_info(teacher)
    fed = {"a": 3000, "b": 2000}
    assert cache_mismatch(folder, info, [3, 1], fed) is None
    assert cache_mismatch(folder, info, [3], {"a": 3000}) is None  # a superset is fine
    assert "layers [2] are not cached" in cache_mismatch(folder, info, [1, 2], fed)
    assert "stores float16, float32 was asked" in cache_mismatch(folder, info, [1], fed, torch.float32)
    assert "1 of 3 utterances are not cached (e.g. 'c')" in cache_mismatch(folder, info, [1], {**fed, "c": 9})
    assert "'b' was cached from 2000 samples but has 2100" in cache_mismatch(folder, info, [1], {**fed, "b": 2100})
    other = _teacher_model(tiny=True, seed=1)[1]  # same description, other weights
    assert other.describe() == teacher.describe()
    assert "another teacher" in cache_mismatch(folder, teacher_info(other), [1], fed)
    shard = next(p for p in tmp_path.iterdir() if p.suffix == ".safetensors")
    shard.unlink()
    assert f"shard {shard.name} listed in the index is missing" in cache_mismatch(folder, info, [1], fed)


def test_interrupted_rebuild_never_leaves_a_valid_looking_index(tmp_path, teacher):
    from s3prl_distill.pretrain.teacher_cache import TeacherCacheWriter, cache_mismatch, teacher_info

    write_teacher_cache(str(tmp_path), teacher, ["a"], _wavs([3000]), layers=[1])
    writer = TeacherCacheWriter(str(tmp_path), [1], shard_bytes=1)  # a rebuild starts ...
    with torch.inference_mode():
        out = teacher(_wavs([3000])[0][None], torch.tensor([3000]))
    writer.add_output(["a"], out, torch.tensor([3000]))  # ... writes a shard, and is killed here
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
    reason = cache_mismatch(str(tmp_path), teacher_info(teacher), [1], {"a": 3000})
    assert reason is not None and "no index.json" in reason
    writer.finish(teacher_info(teacher))
    assert cache_mismatch(str(tmp_path), teacher_info(teacher), [1], {"a": 3000}) is None


def test_int8_cache_quarter_size_per_frame_scale(tmp_path, teacher):
    from s3prl_distill.pretrain.teacher_cache import dequantize_int8, quantize_int8

    x = torch.randn(2, 50, 32) * torch.linspace(0.01, 10, 50)[None, :, None]  # frames of any scale
    q, scale = quantize_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (2, 50)
    err = (dequantize_int8(q, scale) - x).abs()
    assert bool((err <= scale[..., None] / 2 + 1e-6).all())  # half a step of each frame's own scale
    assert bool((quantize_int8(torch.zeros(1, 3, 4))[0] == 0).all())
    wavs = _wavs([4000, 2500])
    write_teacher_cache(str(tmp_path / "f32"), teacher, ["a", "b"], wavs, layers=[2, 4], dtype=torch.float32)
    write_teacher_cache(str(tmp_path / "i8"), teacher, ["a", "b"], wavs, layers=[2, 4], dtype=torch.int8)
    exact, small = TeacherCache(str(tmp_path / "f32")), TeacherCache(str(tmp_path / "i8"))
    for utt in ("a", "b"):
        for ref, got in zip(exact.targets(utt), small.targets(utt)):
            assert got.dtype == torch.float32 and got.shape == ref.shape
            assert float((got - ref).abs().max()) <= float(ref.abs().amax(-1).max()) / 254 + 1e-6
    info = small.describe()
    assert small.dtype == "int8" and info["bytes_per_audio_hour"] == 180000 * 2 * (32 + 4)


def test_foreign_folder_is_refused_never_overwritten(tmp_path, teacher):
    from s3prl_distill.pretrain.teacher_cache import MARKER

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "index.json").write_text('{"my": "data"}')
    with pytest.raises(TeacherCacheError, match=r"holds files this package did not write \(index.json\)"):
        write_teacher_cache(str(theirs), teacher, ["a"], _wavs([3000]), layers=[1])
    assert (theirs / "index.json").read_text() == '{"my": "data"}' and sorted(os.listdir(theirs)) == ["index.json"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "shard-00000.safetensors").write_bytes(b"x")  # our name, but no index or marker of ours
    (other / "notes.txt").write_text("keep")
    with pytest.raises(TeacherCacheError, match="notes.txt, shard-00000.safetensors"):
        write_teacher_cache(str(other), teacher, ["a"], _wavs([3000]), layers=[1])
    assert (other / "shard-00000.safetensors").read_bytes() == b"x"
    with pytest.raises(TeacherCacheError, match="is not a folder"):
        write_teacher_cache(str(other / "notes.txt"), teacher, ["a"], _wavs([3000]), layers=[1])
    ours = tmp_path / "ours"
    write_teacher_cache(str(ours), teacher, ["a"], _wavs([3000]), layers=[1])
    assert (ours / MARKER).is_file()
    (ours / "mine.txt").write_text("a note of the user in our folder")
    write_teacher_cache(str(ours), teacher, ["a", "b"], _wavs([3000, 2000]), layers=[1])  # rebuilt
    assert len(TeacherCache(str(ours))) == 2 and (ours / "mine.txt").is_file()  # never deleted


def test_cache_of_an_older_version_is_claimed_and_rebuilt(tmp_path, teacher):
    from s3prl_distill.pretrain.teacher_cache import MARKER, cache_mismatch, teacher_info

    folder = tmp_path / "v1"
    write_teacher_cache(str(folder), teacher, ["a"], _wavs([3000]), layers=[1])
    (folder / MARKER).unlink()  # made before markers existed
    index = json.loads((folder / "index.json").read_text())
    index["version"] = 1
    (folder / "index.json").write_text(json.dumps(index))
    assert len(TeacherCache(str(folder))) == 1  # still readable
    reason = cache_mismatch(str(folder), teacher_info(teacher), [1], {"a": 3000})
    assert "older cache format (version 1)" in reason
    write_teacher_cache(str(folder), teacher, ["a"], _wavs([3000]), layers=[1])
    assert TeacherCache(str(folder)).index["version"] == 2 and (folder / MARKER).is_file()


def test_temp_files_of_a_killed_build_are_removed(tmp_path, teacher):
    write_teacher_cache(str(tmp_path), teacher, ["a"], _wavs([3000]), layers=[1])
    (tmp_path / ".tmp-index.json-k1ll3d").write_text("{")  # the index write was killed
    write_teacher_cache(str(tmp_path), teacher, ["a"], _wavs([3000]), layers=[1])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_any_utterance_id_is_a_valid_key(tmp_path, teacher):
    ids = ["tab\tid.wav", "new\nline.wav", os.fsdecode(b"latin1-\xe9.wav"), "caf\u00e9.wav"]
    write_teacher_cache(str(tmp_path), teacher, ids, _wavs([3000, 2000, 2500, 2200]), layers=[1])
    cache = TeacherCache(str(tmp_path))
    assert all(cache.targets(i)[0].shape[-1] == 32 for i in ids)


def test_changed_source_files_are_noticed(tmp_path, teacher):
    from s3prl_distill.pretrain.teacher_cache import TeacherCacheWriter, cache_mismatch, teacher_info

    write_teacher_cache(str(tmp_path), teacher, ["a", "b"], _wavs([3000, 2000]), layers=[1],
                        sources=["100:1", "200:2"])
    info = teacher_info(teacher)
    fed = {"a": 3000, "b": 2000}
    assert cache_mismatch(str(tmp_path), info, [1], fed, sources={"a": "100:1", "b": "200:2"}) is None
    assert "the file of 'b' changed since it was cached (size:mtime 200:2 -> 200:9)" in \
        cache_mismatch(str(tmp_path), info, [1], fed, sources={"a": "100:1", "b": "200:9"})
    writer = TeacherCacheWriter(str(tmp_path), [1])  # an unreadable file that was fixed later
    with torch.inference_mode():
        out = teacher(_wavs([3000])[0][None], torch.tensor([3000]))
    writer.add_output(["a"], out, torch.tensor([3000]), ["100:1"])
    writer.skip("b", "unreadable when cached", "7:7")
    writer.finish(info)
    assert cache_mismatch(str(tmp_path), info, [1], fed, sources={"a": "100:1", "b": "7:7"}) is None
    assert "the file of 'b' changed" in cache_mismatch(str(tmp_path), info, [1], fed,
                                                       sources={"a": "100:1", "b": "9:9"})


def test_second_builder_waits_for_the_first_then_reuses(tmp_path, teacher, caplog):
    """Two runs sharing one cache folder (two students of one teacher) must not build it at once."""
    import threading
    import time

    from s3prl_distill.pretrain.teacher_cache import build_lock, claim_folder, prepare_teacher_cache

    class Data:  # what prepare_teacher_cache reads of a DistillDataset
        ids, fingerprints, sample_rate = ["a", "b"], ["1:1", "2:2"], 16000
        full_lengths = lengths = [3000, 2000]

        def __len__(self):
            return 2

        def __getitem__(self, key):
            i = key[0]
            return {"wav": _wavs([3000, 2000])[i], "index": i, "id": self.ids[i]}

    folder = str(tmp_path / "cache")
    claim_folder(folder)
    done = []
    worker = threading.Thread(target=lambda: done.append(prepare_teacher_cache(folder, teacher, Data(), [1])))
    with caplog.at_level("INFO"):
        with build_lock(folder):  # the other run holds the folder
            worker.start()
            time.sleep(0.5)
            assert worker.is_alive() and not done  # waiting, not building
            write_teacher_cache(folder, teacher, ["a", "b"], _wavs([3000, 2000]), layers=[1],
                                sources=["1:1", "2:2"])
        worker.join(60)
    assert done and len(done[0]) == 2
    assert "another process is checking or building it" in caplog.text and ": reused" in caplog.text


def test_a_build_that_cannot_fit_stops_before_running_the_teacher(tmp_path, teacher, monkeypatch):
    import collections

    from s3prl_distill.pretrain import teacher_cache as cache_mod

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))

    class Data:
        ids, lengths, full_lengths, sample_rate = ["a"], [160000], [160000], 16000

        def __len__(self):
            return 1

        def __getitem__(self, key):
            raise AssertionError("the teacher must not run")

    with pytest.raises(TeacherCacheError, match=r"needs about .* GiB \(2 layers x 32 dims in float16\) "
                                                r"but only 0.0 GiB are free.*int8"):
        cache_mod.cache_dataset(str(tmp_path), teacher, Data(), [1, 2])
    # 500 frames x 2 layers x (32 x 2 bytes); int8: 32 bytes + a 4-byte scale per frame and layer
    assert cache_mod.estimate_bytes([160000], [1, 2], 32, torch.float16) == 500 * 2 * 64
    assert cache_mod.estimate_bytes([160000], [1, 2], 32, torch.int8) == 500 * 2 * 36


def test_full_disk_while_writing_a_shard_is_named(tmp_path, teacher, monkeypatch):
    import errno

    import safetensors.torch

    def full(tensors, path, metadata=None):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as info:
        write_teacher_cache(str(tmp_path), teacher, ["a"], _wavs([3000]), layers=[1])
    assert info.value.errno == errno.ENOSPC and "shard-00000.safetensors" in info.value.filename
    assert "No space left on device" in str(info.value) and "os error" not in str(info.value)
