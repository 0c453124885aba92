"""Teacher-feature cache: what is read back equals what the teacher computes."""

from __future__ import annotations

import json

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
