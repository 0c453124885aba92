"""Pretraining data: sources, length index reuse, bad-file policy, resampling, crops, samplers."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.pretrain import data as data_mod
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.data import DataError, build_length_index, list_source, read_length_index
from s3prl_distill.pretrain.dataset import DistillDataset, collate_batch
from s3prl_distill.pretrain.samplers import BucketBatchSampler


def write(path, seconds=0.5, sr=16000, channels=1, value=None, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    data = (0.1 * rng.standard_normal((n, channels))).astype(np.float32)
    if value is not None:
        data[n // 2] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data if channels > 1 else data[:, 0], sr, subtype="FLOAT" if value is not None else None)
    return path


def cfg(tmp_path, **kw):
    kw.setdefault("length_index", str(tmp_path / "index.tsv"))
    return from_dict(DataConfig, kw, where="runner.yaml: pretrain_expert.datarc")


def test_exactly_one_source_required(tmp_path):
    with pytest.raises(ConfigError, match="exactly one data source"):
        cfg(tmp_path)
    with pytest.raises(ConfigError, match="exactly one data source"):
        cfg(tmp_path, audio_dir="a", file_list="b")


def test_librispeech_layout(tmp_path):
    root = tmp_path / "LibriSpeech"
    write(root / "train-clean-100" / "19" / "198" / "19-198-0001.flac")
    write(root / "train-clean-100" / "19" / "198" / "19-198-0002.flac")
    write(root / "train-other-500" / "20" / "1" / "20-1-0001.flac")
    write(root / "dev-clean" / "1" / "1" / "1-1-0001.flac")
    c = cfg(tmp_path, libri_root=str(root), sets=["train-clean-100", "train-other-500"])
    _, paths = list_source(c)
    assert [os.path.basename(p) for p in paths] == ["19-198-0001.flac", "19-198-0002.flac", "20-1-0001.flac"]
    with pytest.raises(DataError, match="train-clean-360.*not found.*dev-clean"):
        list_source(cfg(tmp_path, libri_root=str(root), sets=["train-clean-360"]))


def test_file_list_relative_paths_and_comments(tmp_path):
    write(tmp_path / "wavs" / "a.wav")
    write(tmp_path / "wavs" / "b.wav")
    lst = tmp_path / "lists" / "train.txt"
    lst.parent.mkdir()
    lst.write_text(f"# training files\n../wavs/a.wav\n\n{tmp_path / 'wavs' / 'b.wav'}\n")
    _, paths = list_source(cfg(tmp_path, file_list=str(lst)))
    assert paths == [str(tmp_path / "wavs" / "a.wav"), str(tmp_path / "wavs" / "b.wav")]


def test_length_index_written_once_and_reused(tmp_path, monkeypatch):
    for i in range(3):
        write(tmp_path / "audio" / f"{i}.wav", seconds=0.5 + i * 0.25)
    c = cfg(tmp_path, audio_dir=str(tmp_path / "audio"))
    calls = []
    real = data_mod.audio_info
    monkeypatch.setattr(data_mod, "audio_info", lambda p: calls.append(p) or real(p))
    entries = build_length_index(c)
    assert [e.num_frames for e in entries] == [8000, 12000, 16000]
    assert len(calls) == 3
    mtime = os.path.getmtime(c.length_index)
    build_length_index(c)
    assert len(calls) == 3 and os.path.getmtime(c.length_index) == mtime  # reused, not rewritten
    write(tmp_path / "audio" / "3.wav")
    entries = build_length_index(c)
    assert len(calls) == 4 and len(entries) == 4  # only the new file's header was read
    assert len(read_length_index(c.length_index, str(tmp_path / "audio"))) == 4
    (tmp_path / "index.tsv").write_text("garbage\n")
    with pytest.raises(DataError, match="not a length index"):
        build_length_index(c)


def _bad_corpus(tmp_path):
    audio = tmp_path / "audio"
    write(audio / "good1.wav", seconds=1.0)
    write(audio / "good2.wav", seconds=0.6, seed=1)
    (audio / "broken.wav").write_bytes(b"RIFF not really audio")
    write(audio / "short.wav", seconds=0.01)                  # 160 samples < 400 receptive field
    write(audio / "stereo.wav", channels=2)
    write(audio / "nan.wav", value=float("nan"))              # only visible when read
    return audio


def test_bad_files_skipped_with_count(tmp_path, caplog):
    audio = _bad_corpus(tmp_path)
    c = cfg(tmp_path, audio_dir=str(audio), bad_files="skip")
    with caplog.at_level(logging.WARNING):
        ds = DistillDataset(c, min_samples=400)
    assert "skipping 3 bad audio file(s) of 6" in caplog.text
    for name in ("broken.wav", "short.wav", "stereo.wav"):
        assert name in caplog.text
    assert sorted(os.path.basename(p) for p in ds.paths) == ["good1.wav", "good2.wav", "nan.wav"]
    nan_index = [os.path.basename(p) for p in ds.paths].index("nan.wav")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        item = ds[nan_index]
    assert item is None and "nan.wav" in caplog.text and ds.skipped_on_read == 1
    batch = collate_batch([ds[0], item, ds[1] if nan_index != 1 else ds[2]])
    assert batch["skipped"] == 1 and batch["wavs"].shape[0] == 2
    good = [i for i in range(3) if i != nan_index][:2]
    assert batch["ids"] == [ds.ids[i] for i in good] == [os.path.basename(ds.paths[i]) for i in good]


def test_utterance_ids_are_paths_relative_to_the_source_root(tmp_path):
    root = tmp_path / "Libri"
    write(root / "train-clean-100" / "19" / "198" / "19-198-0001.flac")
    ds = DistillDataset(cfg(tmp_path, libri_root=str(root), sets=["train-clean-100"]), min_samples=400)
    assert ds.ids == [os.path.join("train-clean-100", "19", "198", "19-198-0001.flac")]
    assert ds[0]["id"] == ds.ids[0] and ds.full_lengths == [8000]
    write(tmp_path / "lists" / "a.wav")
    (tmp_path / "lists" / "train.txt").write_text("a.wav\n")
    ds = DistillDataset(cfg(tmp_path, file_list=str(tmp_path / "lists" / "train.txt"),
                            length_index=str(tmp_path / "i2.tsv"), crop_seconds=0.25), min_samples=400)
    assert ds.ids == ["a.wav"] and ds.lengths == [4000] and ds.full_lengths == [8000]


def test_bad_files_error_names_every_file(tmp_path):
    audio = _bad_corpus(tmp_path)
    with pytest.raises(DataError) as err:
        DistillDataset(cfg(tmp_path, audio_dir=str(audio), bad_files="error"), min_samples=400)
    text = str(err.value)
    assert "3 bad audio file(s)" in text
    assert "broken.wav" in text and "short.wav" in text and "2 channels, expected mono" in text
    # the NaN file is found on reading
    c = cfg(tmp_path, audio_dir=str(audio), bad_files="error", on_multichannel="mix",
            length_index=str(tmp_path / "i2.tsv"), min_seconds=0.1)
    (audio / "broken.wav").unlink()
    (audio / "short.wav").unlink()
    ds = DistillDataset(c, min_samples=400)
    with pytest.raises(DataError, match="nan.wav.*NaN"):
        ds[[os.path.basename(p) for p in ds.paths].index("nan.wav")]


def test_resampling_warns_or_is_bad(tmp_path, caplog):
    audio = tmp_path / "audio"
    write(audio / "a.wav", seconds=0.5, sr=8000)
    write(audio / "b.wav", seconds=0.5)
    with caplog.at_level(logging.WARNING):
        ds = DistillDataset(cfg(tmp_path, audio_dir=str(audio)), min_samples=400)
        wav = ds[0]["wav"]
    assert wav.shape[0] == 8000 and "resampled from 8000 Hz to 16000 Hz" in caplog.text
    assert ds.lengths == [8000, 8000]
    with pytest.raises(DataError, match="a.wav: sample rate 8000 Hz, expected 16000 Hz"):
        DistillDataset(cfg(tmp_path, audio_dir=str(audio), on_resample="error", bad_files="error"))


def test_random_crops_are_reproducible_per_epoch(tmp_path):
    write(tmp_path / "audio" / "long.wav", seconds=2.0)
    ds = DistillDataset(cfg(tmp_path, audio_dir=str(tmp_path / "audio"), crop_seconds=0.5), seed=3)
    a, b, c = ds[(0, 0)]["wav"], ds[(0, 0)]["wav"], ds[(0, 1)]["wav"]
    assert a.shape[0] == 8000 and ds.lengths == [8000]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bucket_sampler_buckets_and_is_deterministic():
    lengths = [100, 900, 120, 880, 110, 870, 130, 860]
    s = BucketBatchSampler(lengths, 2, seed=1)
    batches = [[i for i, _ in b] for b in s]
    assert len(batches) == len(s) == 4
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:  # similar lengths share a batch
        assert abs(lengths[b[0]] - lengths[b[1]]) <= 30
    assert [[i for i, _ in b] for b in s] == batches  # same epoch, same order
    s.set_epoch(1)
    epoch1 = list(s)
    assert all(e == 1 for b in epoch1 for _, e in b)
    assert [[i for i, _ in b] for b in epoch1] != batches  # a new order each epoch
    assert list(s) == epoch1  # the epoch stays until changed


def test_bucket_sampler_resume_and_ranks():
    lengths = list(range(100, 120))
    full = BucketBatchSampler(lengths, 4, seed=5)
    full.start(2)
    epoch2 = list(full)
    resumed = BucketBatchSampler(lengths, 4, seed=5)
    resumed.start(2, batches_done=3)
    assert list(resumed) == epoch2[3:]
    # two ranks: each takes half of every global batch, together exactly the global batch
    r0 = BucketBatchSampler(lengths, 4, seed=5, num_replicas=2, rank=0)
    r1 = BucketBatchSampler(lengths, 4, seed=5, num_replicas=2, rank=1)
    for g, a, b in zip(full.global_batches(0), r0, r1):
        assert len(a) == len(b) == 2
        assert sorted(i for i, _ in a + b) == sorted(g)
    with pytest.raises(ValueError, match="smaller than the 3 processes"):
        BucketBatchSampler(lengths, 2, num_replicas=3)


def test_sampler_drops_batch_too_small_for_ranks():
    s = BucketBatchSampler([1, 2, 3, 4, 5], 4, num_replicas=2, rank=0)
    assert len(s) == len(list(s)) == 1  # the 1-item rest cannot feed 2 ranks
    s = BucketBatchSampler([1, 2, 3, 4, 5, 6], 4, drop_last=True)
    assert len(s) == len(list(s)) == 1
