"""The runner with ``pretrain_expert.datarc.teacher_cache``: config checks, build once / reuse,
rebuild when stale, resume, and cached targets giving the live loss."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml, runner_config
from s3prl_distill.checkpoint import read_checkpoint
from s3prl_distill.config import ConfigError
from s3prl_distill.pretrain.expert import UpstreamPretrainExpert
from s3prl_distill.pretrain.checkpoints import list_checkpoints
from s3prl_distill.run_pretrain import parse_args, run


@pytest.fixture
def setup(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=6, seconds=(0.5, 1.2))
    return tmp_path, teacher


def _datarc(tmp_path, **extra):
    datarc = {"train_batch_size": 3, "num_workers": 0, "audio_dir": str(tmp_path / "audio"),
              "length_index": str(tmp_path / "lengths.tsv"), "crop_seconds": 0.0,
              "teacher_cache": str(tmp_path / "cache")}
    datarc.update(extra)
    return datarc


def _expert(tmp_path, model, **extra):
    torch.manual_seed(0)
    return UpstreamPretrainExpert(_datarc(tmp_path, **extra), str(model), "cpu", seed=3)


def _runner(tmp_path, **kw):
    return runner_config(tmp_path, tmp_path / "audio", crop_seconds=0.0, batch_size=3,
                         extra_datarc={"teacher_cache": str(tmp_path / "cache")}, **kw)


def _args(tmp_path, model, runner, expdir):
    return parse_args(["-u", "distiller", "-g", str(model), "-c", str(runner), "-p",
                       str(tmp_path / expdir), "--device", "cpu", "--seed", "7"])


def _shards(folder):
    return {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)
            if n.endswith(".safetensors")}


def test_random_crop_shorter_than_an_utterance_is_refused(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    with pytest.raises(ConfigError, match=r"pretrain_expert\.datarc: crop_seconds: 0\.5 s random "
                                          r"crops cannot be used with teacher_cache"):
        _expert(tmp_path, model, crop_seconds=0.5)
    assert not (tmp_path / "cache").exists()  # refused before anything was built
    expert = _expert(tmp_path, model, crop_seconds=2.0)  # longer than every utterance: no crop
    assert expert.run.cache is not None and len(expert.run.cache) == 6


@pytest.mark.parametrize("key,value,match", [
    ("teacher_cache", "  ", "teacher_cache: expected a folder path"),
    ("teacher_cache_dtype", "int4", "teacher_cache_dtype"),
])
def test_bad_cache_keys_name_the_key(setup, key, value, match):
    tmp_path, teacher = setup
    with pytest.raises(ConfigError, match=match):
        _expert(tmp_path, model_yaml(tmp_path, teacher), **{key: value})


def test_batches_carry_ids_of_the_cached_utterances(setup):
    tmp_path, teacher = setup
    expert = _expert(tmp_path, model_yaml(tmp_path, teacher))
    batch = next(iter(expert.get_train_dataloader()))
    assert len(batch["ids"]) == batch["wavs"].shape[0]
    assert all(i.startswith("spk") and i.endswith(".wav") and not os.path.isabs(i) for i in batch["ids"])
    assert all(i in expert.run.cache for i in batch["ids"])


@pytest.mark.parametrize("style", ["distilhubert", "fithubert"])
@pytest.mark.parametrize("dtype,rel", [("float32", 1e-5), ("float16", 1e-3)])
def test_cached_step_gives_the_live_loss(setup, style, dtype, rel):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher, style)
    live = _expert(tmp_path, model, teacher_cache=None)
    cached = _expert(tmp_path, model, teacher_cache_dtype=dtype)
    for expert in (live, cached):
        expert.task.train(False)
    assert cached.run.cache.dtype == dtype and live.run.cache is None
    calls = []
    cached.teacher.register_forward_hook(lambda *a: calls.append(1))
    for batch_live, batch_cached in zip(live.get_train_dataloader(), cached.get_train_dataloader()):
        assert batch_live["ids"] == batch_cached["ids"]
        with torch.no_grad():
            loss_live, terms_live = live.run.step(live.task, batch_live)
            loss_cached, terms_cached = cached.run.step(cached.task, batch_cached)
        assert float(loss_cached) == pytest.approx(float(loss_live), rel=rel)
        assert float(terms_cached["frames"]) == float(terms_live["frames"])
    assert not calls  # the teacher never ran in the cached steps


def test_cache_built_once_reused_by_second_run_and_resume(setup, caplog):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher, "distilhubert", dropout=0.1)
    runner = _runner(tmp_path, total_steps=4, save_step=2)
    with caplog.at_level("INFO"):
        full = run(_args(tmp_path, model, runner, "full"))
    assert "building it" in caplog.text and ": reused (it holds" not in caplog.text
    shards = _shards(tmp_path / "cache")
    assert shards
    caplog.clear()
    with caplog.at_level("INFO"):
        run(_args(tmp_path, model, runner, "part"))
    assert ": reused (it holds" in caplog.text and "building" not in caplog.text
    for step, path in list_checkpoints(str(tmp_path / "part")):
        if step != 2:
            os.remove(path)
    caplog.clear()
    with caplog.at_level("INFO"):
        resumed = run(_args(tmp_path, model, runner, "part"))
    assert "resumed at update 2" in caplog.text and ": reused (it holds" in caplog.text
    assert _shards(tmp_path / "cache") == shards  # never rewritten
    a, b = read_checkpoint(full)["state_dict"], read_checkpoint(resumed)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stale_cache_is_rebuilt(setup, caplog):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    first = _expert(tmp_path, model)
    assert len(first.run.cache) == 6
    make_audio_dir(tmp_path / "audio" / "more", count=1, seed=5)  # a new file in the corpus
    with caplog.at_level("INFO"):
        second = _expert(tmp_path, model)
    assert "1 of 7 utterances are not cached" in caplog.text and "building it" in caplog.text
    assert len(second.run.cache) == 7
    make_teacher(tmp_path / "teacher.pt", seed=1)  # the teacher file was replaced
    caplog.clear()
    with caplog.at_level("INFO"):
        _expert(tmp_path, model)
    assert "built with another teacher" in caplog.text and "building it" in caplog.text


def test_pretrain_config_accepts_cache_keys(tmp_path):
    from s3prl_distill.pretrain.config import PretrainConfig

    runner = runner_config(tmp_path, tmp_path / "audio",
                           extra_datarc={"teacher_cache": "/x", "teacher_cache_dtype": "float32"})
    cfg = PretrainConfig.from_data(yaml.safe_load(runner.read_text()))
    assert cfg.pretrain_expert.datarc.teacher_cache == "/x"
    assert cfg.pretrain_expert.datarc.teacher_cache_dtype == "float32"
    default = PretrainConfig.from_data(yaml.safe_load(runner_config(tmp_path, tmp_path).read_text()))
    assert default.pretrain_expert.datarc.teacher_cache is None  # off by default


def test_files_bad_on_reading_are_listed_not_rebuilt_every_run(setup, caplog):
    import numpy as np
    import soundfile as sf

    tmp_path, teacher = setup
    bad = np.full(12000, 0.1, dtype=np.float32)
    bad[100] = np.nan  # passes the header screening, fails when read
    sf.write(str(tmp_path / "audio" / "nan.wav"), bad, 16000, subtype="FLOAT")
    model = model_yaml(tmp_path, teacher)
    first = _expert(tmp_path, model)
    assert len(first.run.cache) == 6
    assert list(first.run.cache.index["unreadable"]) == ["nan.wav"]
    caplog.clear()
    with caplog.at_level("INFO"):
        _expert(tmp_path, model)
    assert ": reused (it holds" in caplog.text and "building" not in caplog.text


def test_other_ranks_wait_for_rank0_and_never_build(setup, monkeypatch):
    from s3prl_distill.config import from_dict
    from s3prl_distill.distill.config import DistillConfig
    from s3prl_distill.pretrain import build as expert_mod
    from s3prl_distill.pretrain.config import DataConfig
    from s3prl_distill.pretrain import teacher_cache as cache_mod

    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    waited = []

    def fake_wait(ready, what, **kw):  # rank 0 finishes its build while rank 1 waits
        assert not ready()
        waited.append(what)
        _expert(tmp_path, model)
        assert ready()

    monkeypatch.setattr(cache_mod, "wait_until", fake_wait)
    real_build = cache_mod.cache_dataset
    builders = []
    monkeypatch.setattr(cache_mod, "cache_dataset",
                        lambda *a, **kw: builders.append(kw) or real_build(*a, **kw))
    torch.manual_seed(0)
    rank1 = expert_mod.build_run(DistillConfig.from_yaml(model), from_dict(DataConfig, _datarc(tmp_path)),
                                 device=torch.device("cpu"), seed=3, rank=1, world_size=2)
    assert len(waited) == 1 and "rank 0" in waited[0]
    assert len(builders) == 1  # the build of the simulated rank 0 only
    assert len(rank1.cache) == 6


def test_runner_bench_times_live_build_and_reuse(setup):
    from s3prl_distill.benchmark.training import format_runner, run_runner_bench

    tmp_path, teacher = setup
    result = run_runner_bench(str(model_yaml(tmp_path, teacher)), steps=2, utterances=4,
                              seconds=(0.5, 1.0), batch_size=2, workdir=str(tmp_path))
    rows = result["rows"]
    assert [r["model"] for r in rows] == ["run_pretrain", "run_pretrain+cache(build)",
                                          "run_pretrain+cache(reuse)"]
    assert len({r["audio_s"] for r in rows}) == 1 and rows[0]["audio_s"] > 0
    assert all(r["train_audio_s_per_s"] > 0 and r["setup_s"] >= 0 for r in rows)
    assert result["cache"]["utterances"] == 4 and result["cache"]["layers"] == 2
    assert "run_pretrain+cache(reuse)" in format_runner(result)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("s3prl_distill_runner_bench_")]


def test_changed_audio_is_noticed_by_index_and_cache(setup, caplog):
    """Issue 14.2: same length, other samples reused stale targets; a new length was never re-read
    (the length index was keyed by path) and the run died at the cache with wrong advice."""
    import numpy as np
    import soundfile as sf

    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    first = _expert(tmp_path, model)
    path = sorted((tmp_path / "audio").rglob("*.wav"))[0]
    utt = os.path.relpath(path, tmp_path / "audio")
    old = first.run.cache.targets(utt)[0]
    samples = sf.info(str(path)).frames
    stat = os.stat(path)
    sf.write(str(path), (0.2 * np.random.default_rng(9).standard_normal(samples)).astype(np.float32), 16000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with caplog.at_level("INFO"):
        second = _expert(tmp_path, model)
    assert f"the file of {utt!r} changed since it was cached" in caplog.text and "building it" in caplog.text
    assert not torch.equal(second.run.cache.targets(utt)[0], old)
    sf.write(str(path), np.zeros(samples + 1600, dtype=np.float32) + 0.1, 16000)  # another length
    caplog.clear()
    with caplog.at_level("INFO"):
        third = _expert(tmp_path, model)
    assert "1 of them changed since indexed" in caplog.text and "building it" in caplog.text
    for batch in third.get_train_dataloader():  # no "cached from N samples but is fed with M"
        third.run.step(third.task, batch)


def test_cache_folder_with_foreign_files_is_refused(setup):
    from s3prl_distill.pretrain.teacher_cache import TeacherCacheError

    tmp_path, teacher = setup
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "index.json").write_text('{"someone": "else"}')
    with pytest.raises(TeacherCacheError, match="did not write .*refusing to overwrite"):
        _expert(tmp_path, model_yaml(tmp_path, teacher))
    assert (tmp_path / "cache" / "index.json").read_text() == '{"someone": "else"}'


def test_sample_rate_other_than_the_teachers_stops_the_run(setup):
    tmp_path, teacher = setup
    with pytest.raises(ConfigError, match=r"pretrain_expert\.datarc: datarc\.sample_rate: 8000 Hz, "
                                          r"but the teacher takes 16000 Hz"):
        _expert(tmp_path, model_yaml(tmp_path, teacher), sample_rate=8000)


def test_dev_batches_use_the_dev_cache_and_give_the_live_loss(setup):
    tmp_path, teacher = setup
    make_audio_dir(tmp_path / "dev", count=3, seconds=(0.5, 1.0), seed=4)
    model = model_yaml(tmp_path, teacher)
    live = _expert(tmp_path, model, teacher_cache=None, dev_audio_dir=str(tmp_path / "dev"))
    cached = _expert(tmp_path, model, dev_audio_dir=str(tmp_path / "dev"), teacher_cache_dtype="float32")
    assert live.run.dev_cache is None and cached.run.dev_cache.folder == str(tmp_path / "cache" / "dev")
    assert sorted(cached.run.dev_cache.index["entries"]) == sorted(cached.run.dev_dataset.ids)
    assert len(cached.run.cache) == 6  # the training cache beside it is intact
    for expert in (live, cached):
        expert.task.train(False)
    pairs = list(zip(live.run.dev_loader, cached.run.dev_loader))
    assert len(pairs) == 1 and pairs[0][0]["ids"] == pairs[0][1]["ids"]
    with torch.no_grad():
        a, _ = live.run.step(live.task, pairs[0][0], dev=True)
        b, _ = cached.run.step(cached.task, pairs[0][1], dev=True)
    assert float(b) == pytest.approx(float(a), rel=1e-5)


def test_int8_cache_loss_drift_is_small(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    live = _expert(tmp_path, model, teacher_cache=None)
    cached = _expert(tmp_path, model, teacher_cache_dtype="int8")
    assert cached.run.cache.dtype == "int8"
    for expert in (live, cached):
        expert.task.train(False)
    for batch_live, batch_cached in zip(live.get_train_dataloader(), cached.get_train_dataloader()):
        with torch.no_grad():
            a, _ = live.run.step(live.task, batch_live)
            b, _ = cached.run.step(cached.task, batch_cached)
        assert float(b) == pytest.approx(float(a), rel=1e-2)
