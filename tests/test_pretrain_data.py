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


# --- issue 14: symbolic links, changed files, odd names, old indexes -----------------------------

def test_symlink_loop_lists_each_file_once(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a/1.wav", "a/2.wav", "b/3.wav"):
        write(audio / name)
    os.symlink("..", audio / "a" / "up")            # a loop: audio/a/up -> audio
    os.symlink("a", audio / "again")                # the same folder under two names
    os.symlink("1.wav", audio / "a" / "same.wav")   # the same file under two names
    c = cfg(tmp_path, audio_dir=str(audio))
    _, paths = list_source(c)
    assert [os.path.relpath(p, audio) for p in paths] == ["a/1.wav", "a/2.wav", "b/3.wav"]
    ds = DistillDataset(c)
    assert len(ds) == 3 and len(set(ds.ids)) == 3


def test_file_list_repeats_and_links_are_used_once(tmp_path, caplog):
    write(tmp_path / "wavs" / "a.wav")
    os.symlink("a.wav", tmp_path / "wavs" / "link.wav")
    lst = tmp_path / "train.txt"
    lst.write_text("wavs/a.wav\nwavs/a.wav\nwavs/link.wav\n")
    with caplog.at_level(logging.WARNING):
        _, paths = list_source(cfg(tmp_path, file_list=str(lst)))
    assert paths == [str(tmp_path / "wavs" / "a.wav")]
    assert "2 file(s) listed more than once" in caplog.text


def test_length_index_notices_changed_files(tmp_path):
    audio = tmp_path / "audio"
    write(audio / "a.wav", seconds=0.5)
    write(audio / "b.wav", seconds=0.5)
    c = cfg(tmp_path, audio_dir=str(audio))
    before = {os.path.basename(e.path): e for e in build_length_index(c)}
    write(audio / "a.wav", seconds=0.75)              # the same name, another length
    write(audio / "b.wav", seconds=0.5, seed=7)       # the same length, other samples
    os.utime(audio / "b.wav", ns=(before["b.wav"].mtime_ns + 10**9,) * 2)
    after = {os.path.basename(e.path): e for e in build_length_index(c)}
    assert after["a.wav"].num_frames == 12000 != before["a.wav"].num_frames
    assert after["b.wav"].fingerprint != before["b.wav"].fingerprint
    assert after["b.wav"].num_frames == before["b.wav"].num_frames
    ds = DistillDataset(c)
    assert sorted(ds.full_lengths) == [8000, 12000]
    assert dict(zip(ds.ids, ds.fingerprints))["b.wav"] == after["b.wav"].fingerprint


def _odd_names(folder):
    names = ["tab\there.wav", "new\nline.wav", "pct%41.wav", "caf\u00e9.wav"]
    paths = [write(folder / name) for name in names]
    raw = os.path.join(os.fsencode(str(folder)), b"latin1-\xe9t\xe9.wav")  # not UTF-8
    with open(raw, "wb") as handle:
        handle.write((folder / "caf\u00e9.wav").read_bytes())
    broken = os.path.join(os.fsencode(str(folder)), b"broken-\xff\tname.wav")
    with open(broken, "wb") as handle:
        handle.write(b"RIFF not audio")
    return len(paths) + 2


def test_any_file_name_round_trips_through_the_length_index(tmp_path):
    audio = tmp_path / "audio"
    count = _odd_names(audio)
    c = cfg(tmp_path, audio_dir=str(audio))
    first = build_length_index(c)           # used to fail: "surrogates not allowed"
    assert len(first) == count
    second = read_length_index(c.length_index, str(audio))
    assert sorted(second) == sorted(e.path for e in first)  # tabs/newlines did not split lines
    assert {e.path: e for e in first} == second
    ds = DistillDataset(c)
    assert len(ds) == count - 1 and len(ds.bad_files) == 1
    assert all(ds[i]["wav"].numel() == 8000 for i in range(len(ds)))
    assert build_length_index(c) == first   # and a third run reuses it


def test_old_or_damaged_index_is_rebuilt_with_a_log_line(tmp_path, caplog):
    audio = tmp_path / "audio"
    write(audio / "a.wav")
    write(audio / "b.wav")
    c = cfg(tmp_path, audio_dir=str(audio))
    index = tmp_path / "index.tsv"
    index.write_text("# s3prl_distill length index v1\npath\tnum_frames\tsample_rate\tchannels\tstatus\n"
                     "a.wav\t8000\t16000\t1\tok\nx\ty.wav\t1\t16000\t1\tok\n")  # v1 broken by a tab
    with caplog.at_level(logging.WARNING):
        entries = build_length_index(c)
    assert "older length index format" in caplog.text and "rebuilding" in caplog.text
    assert [e.num_frames for e in entries] == [8000, 8000]
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:3] + ["b.wav\tnot-a-number\t1"]) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [e.num_frames for e in build_length_index(c)] == [8000, 8000]
    assert "line 4: damaged" in caplog.text
    index.write_text("my own notes\n")  # not ours: never overwritten
    with pytest.raises(DataError, match="not a length index.*left alone"):
        build_length_index(c)
    assert index.read_text() == "my own notes\n"


def test_sample_rate_must_be_the_teachers(tmp_path):
    c = cfg(tmp_path, audio_dir="x", sample_rate=8000)
    with pytest.raises(ConfigError, match=r"datarc\.sample_rate: 8000 Hz, but the teacher takes 16000 Hz"):
        c.check_teacher_rate(16000)
    cfg(tmp_path, audio_dir="x").check_teacher_rate(16000)


# --- issue 14.9: inputs longer than the teacher's or the memory limit ---------------------------

def _silence(path, seconds, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(seconds * sr), dtype=np.int16), sr, subtype="PCM_16")
    return path


def test_long_files_are_screened_when_listed_not_at_the_step(tmp_path, caplog):
    audio = tmp_path / "audio"
    write(audio / "short.wav", seconds=1.0)
    _silence(audio / "ten_minutes.wav", 600.0)
    with caplog.at_level(logging.WARNING):
        ds = DistillDataset(cfg(tmp_path, audio_dir=str(audio)))  # crop 0: the 60 s default applies
    assert ds.ids == ["short.wav"]
    assert "ten_minutes.wav: 600.00 s fed whole, longer than max_input_seconds (default 60 s" in caplog.text
    with pytest.raises(DataError, match="ten_minutes.wav: 600.00 s fed whole"):
        DistillDataset(cfg(tmp_path, audio_dir=str(audio), bad_files="error"))
    # explicit limits; a crop bounds the input, so no default limit then
    assert len(DistillDataset(cfg(tmp_path, audio_dir=str(audio), max_input_seconds=0))) == 2
    assert len(DistillDataset(cfg(tmp_path, audio_dir=str(audio), crop_seconds=2.0))) == 2
    assert DistillDataset(cfg(tmp_path, audio_dir=str(audio), crop_seconds=0.0), crop_samples=32000).lengths \
        == [16000, 32000]
    with pytest.raises(DataError, match=r"short.wav: 1.00 s fed whole, longer than max_input_seconds=0.5"):
        DistillDataset(cfg(tmp_path, audio_dir=str(audio), max_input_seconds=0.5, max_seconds=100,
                           bad_files="error"))
    # max_seconds leaves long files out deliberately (counted), before any limit
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert DistillDataset(cfg(tmp_path, audio_dir=str(audio), max_seconds=30)).ids == ["short.wav"]
    assert "left out 1 file(s) longer than max_seconds=30" in caplog.text


def test_teacher_input_limit_names_the_file(tmp_path):
    audio = tmp_path / "audio"
    write(audio / "a.wav", seconds=0.5)
    _silence(audio / "whisper_too_long.wav", 31.0)
    with pytest.raises(DataError, match=r"whisper_too_long.wav: 31.00 s fed whole, longer than the "
                                        r"teacher's input limit \(30.00 s\)"):
        DistillDataset(cfg(tmp_path, audio_dir=str(audio), bad_files="error"), max_input_samples=480000)
    ds = DistillDataset(cfg(tmp_path, audio_dir=str(audio)), max_input_samples=480000)
    assert ds.ids == ["a.wav"]
    assert len(DistillDataset(cfg(tmp_path, audio_dir=str(audio), crop_seconds=10.0),
                              max_input_samples=480000)) == 2
    with pytest.raises(ConfigError, match="crop_seconds: 40 is longer than the teacher's input limit"):
        DistillDataset(cfg(tmp_path, audio_dir=str(audio), crop_seconds=40.0), max_input_samples=480000)
    with pytest.raises(ConfigError, match=r"a crop of 500000 samples \(task.sequence_length\)"):
        DistillDataset(cfg(tmp_path, audio_dir=str(audio)), crop_samples=500000, max_input_samples=480000)


# --- issue 12: the dev set ----------------------------------------------------------------------

def test_dev_loader_whole_utterances_fixed_order_split_across_ranks(tmp_path):
    from s3prl_distill.pretrain.dataset import build_dev_loader

    root = tmp_path / "LibriSpeech"
    write(root / "train-clean-100" / "1" / "1" / "1-1-0000.flac", seconds=2.0)
    for i, seconds in enumerate([1.0, 2.0, 0.5, 1.5, 1.25]):
        write(root / "dev-clean" / "2" / "2" / f"2-2-{i:04d}.flac", seconds=seconds, seed=i)
    (root / "dev-clean" / "2" / "2" / "2-2-0009.flac").write_bytes(b"not audio")  # screened as in training
    c = cfg(tmp_path, libri_root=str(root), sets=["train-clean-100"], dev_sets=["dev-clean"],
            crop_seconds=0.5, train_batch_size=2)
    no_dev = cfg(tmp_path, libri_root=str(root), sets=["train-clean-100"])
    assert build_dev_loader(no_dev, min_samples=400) is None
    loader = build_dev_loader(c, min_samples=400)
    dev = loader.dataset
    assert sorted(dev.ids) == [f"dev-clean/2/2/2-2-{i:04d}.flac" for i in range(5)]
    assert dev.bad_files and dev.crop_samples == 0 and dev.lengths == dev.full_lengths
    batches = list(loader)
    assert [b["wav_lengths"].tolist() for b in batches] == [[32000, 24000], [20000, 16000], [8000]]
    assert [b["ids"] for b in batches] == [b["ids"] for b in loader]  # the same every pass
    assert set(batches[0]) == {"wavs", "wav_lengths", "indices", "ids", "skipped"}  # training collate
    shares = [list(build_dev_loader(c, min_samples=400, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 3  # every rank steps through every batch
    assert shares[1][2]["wavs"].shape[0] == 0  # the odd last utterance leaves rank 1 empty
    seen = sorted(i for share in shares for b in share for i in b["ids"])
    assert seen == sorted(dev.ids)
    # the training length index is not replaced by the dev set's
    assert os.path.isfile(tmp_path / "index-dev.tsv")
    assert len(read_length_index(str(tmp_path / "index-dev.tsv"), str(root))) == 6


def test_dev_set_keys(tmp_path):
    write(tmp_path / "train" / "a.wav")
    write(tmp_path / "dev" / "b.wav")
    from s3prl_distill.pretrain.dataset import build_dev_dataset

    c = cfg(tmp_path, audio_dir=str(tmp_path / "train"), dev_audio_dir=str(tmp_path / "dev"))
    assert build_dev_dataset(c).ids == ["b.wav"]
    with pytest.raises(ConfigError, match="dev_sets: LibriSpeech subsets need libri_root"):
        cfg(tmp_path, audio_dir="x", dev_sets=["dev-clean"])
    with pytest.raises(ConfigError, match="at most one dev set"):
        cfg(tmp_path, audio_dir="x", dev_audio_dir="y", dev_file_list="z")


def test_unwritable_length_index_is_not_fatal(tmp_path, caplog):
    write(tmp_path / "audio" / "a.wav")
    (tmp_path / "file").write_text("x")
    c = cfg(tmp_path, audio_dir=str(tmp_path / "audio"), length_index=str(tmp_path / "file" / "index.tsv"))
    with caplog.at_level(logging.WARNING):
        assert len(build_length_index(c)) == 1
    assert "cannot be written" in caplog.text and "continuing without it" in caplog.text
