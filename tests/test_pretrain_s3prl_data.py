"""S3PRL's distiller ``datarc`` (issue 11): its length tables, ``max_timestep`` and its batches.

The reference for the batches is S3PRL's own installed ``s3prl.pretrain.bucket_dataset.WaveDataset``
(the wheel ships it; it only reads the length tables at construction), fed the same generated
tables: our ``bucketing: s3prl`` must give exactly its batches (ties included).
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import soundfile as sf

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.data import DataError, list_source, read_length_tables
from s3prl_distill.pretrain.dataset import DistillDataset, build_train_loader
from s3prl_distill.pretrain.samplers import S3PRLBatchSampler, s3prl_batches, s3prl_sort_order

SETS = ["train-clean-100", "train-clean-360", "train-other-500"]


def _write_table(path, rows):
    """A length table as S3PRL's preprocess/generate_len_for_bucket.py writes it (pandas to_csv:
    an unnamed index column, then file_path, length, label)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["", "file_path", "length", "label"])
        for i, (rel, length) in enumerate(rows):
            out.writerow([i, rel, length, ""])


def _tables(folder, rng, per_set=(40, 25, 33), choices=(30000, 50000, 99999, 100000, 120000, 150000)):
    tables = {}
    for name, count in zip(SETS, per_set):
        rows = [(f"{name}/{i % 3}/{i % 5}/{i % 3}-{i % 5}-{i:04d}.flac", int(rng.choice(choices)))
                for i in range(count)]
        if name != SETS[1]:  # S3PRL writes them longest first; one table in another order
            rows.sort(key=lambda r: -r[1])
        _write_table(folder / f"{name}.csv", rows)
        tables[name] = rows
    return tables


def _datarc(tmp_path, **kw):
    data = {"num_workers": 0, "train_batch_size": 6, "max_timestep": 0,
            "libri_root": str(tmp_path / "LibriSpeech"), "file_path": str(tmp_path / "len_for_bucket"),
            "sets": list(SETS), "length_index": str(tmp_path / "lengths.tsv")}
    data.update(kw)
    return from_dict(DataConfig, data, where="config_runner.yaml: pretrain_expert.datarc")


def _reference(folder, sets, bucket_size, max_timestep, sequence_length):
    from s3prl.pretrain.bucket_dataset import WaveDataset

    ref = WaveDataset({"sequence_length": sequence_length}, bucket_size, str(folder), sets,
                      max_timestep=max_timestep)
    return [list(batch) for batch in ref.X]


def test_sort_order_is_pandas_sort_values_descending():
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    for n, high in [(5, 3), (40, 4), (3000, 50), (3000, 10**6)]:
        lengths = rng.integers(0, high, n)
        ref = pandas.DataFrame({"length": lengths}).sort_values(by=["length"], ascending=False).index
        assert s3prl_sort_order(lengths).tolist() == ref.tolist()
    ties = rng.integers(0, 50, 3000)
    stable = np.argsort(-ties, kind="stable")
    assert s3prl_sort_order(ties).tolist() != stable.tolist()  # ties: a stable sort would differ


@pytest.mark.parametrize("bucket_size,max_timestep,sequence_length", [
    (6, 0, 0), (6, 100000, 0), (5, -50000, 0), (7, 0, 250000), (24, 0, 0), (2, 120000, 0), (1, 0, 0),
])
def test_batches_equal_s3prl_bucket_dataset(tmp_path, bucket_size, max_timestep, sequence_length):
    folder = tmp_path / "len_for_bucket"
    _tables(folder, np.random.default_rng(bucket_size))
    datarc = _datarc(tmp_path, train_batch_size=bucket_size, max_timestep=max_timestep)
    root = os.path.abspath(datarc.libri_root)
    table = read_length_tables(datarc)
    lengths = [n for _, n in table]
    keep = [(max_timestep <= 0 or n < max_timestep) and (max_timestep >= 0 or n > -max_timestep)
            for n in lengths]
    ours = [[os.path.relpath(table[r][0], root) for r in batch]
            for batch in s3prl_batches(lengths, bucket_size, sequence_length > 0, keep)]
    assert ours == _reference(folder, SETS, bucket_size, max_timestep, sequence_length)


def _corpus(tmp_path, rows_per_set):
    """LibriSpeech-like silent FLACs and their S3PRL length tables."""
    root = tmp_path / "LibriSpeech"
    for name, rows in rows_per_set.items():
        for rel, length in rows:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), np.zeros(length, dtype=np.int16), 16000, format="FLAC")
        _write_table(tmp_path / "len_for_bucket" / f"{name}.csv", rows)


def test_dataset_and_sampler_reproduce_s3prl_batches(tmp_path):
    rng = np.random.default_rng(3)
    rows = {name: [(f"{name}/1/2/1-2-{i:04d}.flac", int(rng.choice([8000, 16000, 100000, 110000])))
                   for i in range(count)] for name, count in zip(SETS[:2], (13, 10))}
    _corpus(tmp_path, rows)
    datarc = _datarc(tmp_path, sets=SETS[:2], bucketing="s3prl", max_timestep=-8000)
    dataset = DistillDataset(datarc, seed=0)
    assert dataset.crop_samples == 0 and len(dataset) == sum(1 for r in rows.values() for _, n in r if n > 8000)
    loader = build_train_loader(dataset, datarc, seed=5)
    sampler = loader.batch_sampler
    assert isinstance(sampler, S3PRLBatchSampler)
    reference = _reference(tmp_path / "len_for_bucket", SETS[:2], 6, -8000, 0)
    assert any(len(b) == 3 for b in reference)  # a halved batch of long utterances is covered
    epoch0 = [[dataset.ids[i] for i, _ in b] for b in sampler]
    assert sorted(epoch0) == sorted(reference) and len(sampler) == len(reference)
    sampler.set_epoch(1)
    epoch1 = [[dataset.ids[i] for i, _ in b] for b in sampler]
    assert sorted(epoch1) == sorted(reference) and epoch1 != epoch0  # same batches, new order
    batch = next(iter(loader))
    assert batch["wavs"].shape[0] == len(batch["ids"]) and batch["ids"] in reference
    # a crop (S3PRL's task.sequence_length, in samples) turns the halving off, as in S3PRL
    cropped = DistillDataset(datarc, crop_samples=50000)
    assert max(cropped.lengths) == 50000
    sampler = build_train_loader(cropped, datarc, seed=5).batch_sampler
    assert sorted([cropped.ids[i] for i, _ in b] for b in sampler) == \
        sorted(_reference(tmp_path / "len_for_bucket", SETS[:2], 6, -8000, 50000))
    # two processes: each takes an interleaved share of every S3PRL batch
    shares = [S3PRLBatchSampler(dataset.table_lengths, dataset.rows, 6, cropped=False, seed=5,
                                num_replicas=2, rank=r) for r in (0, 1)]
    for a, b, whole in zip(*shares, S3PRLBatchSampler(dataset.table_lengths, dataset.rows, 6,
                                                      cropped=False, seed=5)):
        assert sorted(i for i, _ in a + b) == sorted(i for i, _ in whole)


def test_s3prl_runner_datarc_is_accepted_unchanged(tmp_path):
    """The datarc of S3PRL's pretrain/distiller/config_runner.yaml, with only its paths changed."""
    datarc = from_dict(DataConfig, {"num_workers": 24, "train_batch_size": 24, "max_timestep": 0,
                                    "libri_root": "/data/LibriSpeech/", "file_path": "/data/len_for_bucket",
                                    "sets": ["train-clean-100", "train-clean-360", "train-other-500"]})
    assert datarc.source_kind == "s3prl_csv" and datarc.max_timestep == 0
    with pytest.raises(ConfigError, match="file_path: S3PRL's length tables list paths relative to libri_root"):
        from_dict(DataConfig, {"file_path": "/x", "audio_dir": "/y"})


def test_table_errors_name_the_table(tmp_path):
    rows = {SETS[0]: [(f"{SETS[0]}/1/1/1-1-0000.flac", 16000), (f"{SETS[0]}/1/1/1-1-0001.flac", 8000)]}
    _corpus(tmp_path, rows)
    with pytest.raises(DataError, match=r"length table .*train-clean-360.csv not found .*\['train-clean-100'\]"):
        list_source(_datarc(tmp_path, sets=SETS[:2]))
    bad = tmp_path / "len_for_bucket" / f"{SETS[0]}.csv"
    bad.write_text("path,len\na,1\n")
    with pytest.raises(DataError, match="expected S3PRL's columns 'file_path' and 'length'"):
        list_source(_datarc(tmp_path, sets=SETS[:1]))
    bad.write_text(",file_path,length,label\n0,a.flac,many,\n")
    with pytest.raises(DataError, match="train-clean-100.csv: line 2: expected a file path and an integer"):
        list_source(_datarc(tmp_path, sets=SETS[:1]))


def test_stale_table_is_a_bad_file(tmp_path):
    rows = {SETS[0]: [(f"{SETS[0]}/1/1/1-1-0000.flac", 16000), (f"{SETS[0]}/1/1/1-1-0001.flac", 8000)]}
    _corpus(tmp_path, rows)
    sf.write(str(tmp_path / "LibriSpeech" / rows[SETS[0]][1][0]), np.zeros(9000, dtype=np.int16), 16000,
             format="FLAC")  # the file changed after the table was made
    with pytest.raises(DataError, match=r"1-1-0001.flac: the length table says 8000 samples, the file "
                                        r"has 9000: the table is stale"):
        DistillDataset(_datarc(tmp_path, sets=SETS[:1], bad_files="error"))
    assert DistillDataset(_datarc(tmp_path, sets=SETS[:1])).ids == [rows[SETS[0]][0][0]]


@pytest.mark.slow
def test_run_with_s3prl_datarc_resumes_bit_identically(tmp_path):
    """S3PRL's datarc keys + bucketing: s3prl + a dev set through our runner; kill-free resume."""
    import torch

    from distill_fixtures import make_teacher, model_yaml, runner_config
    from s3prl_distill.checkpoint import read_checkpoint
    from s3prl_distill.pretrain.trainer import list_checkpoints
    from s3prl_distill.run_pretrain import parse_args, run

    rng = np.random.default_rng(1)
    rows = {"train-clean-100": [(f"train-clean-100/1/1/1-1-{i:04d}.flac", int(rng.integers(6000, 20000)))
                                for i in range(10)],
            "dev-clean": [(f"dev-clean/2/2/2-2-{i:04d}.flac", int(rng.integers(6000, 20000))) for i in range(3)]}
    for name, table in rows.items():
        root = tmp_path / "LibriSpeech"
        for rel, length in table:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(root / rel), (0.1 * rng.standard_normal(length)).astype(np.float32), 16000)
        _write_table(tmp_path / "len_for_bucket" / f"{name}.csv", table)
    teacher = make_teacher(tmp_path / "teacher.pt")
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path, total_steps=4, save_step=2, batch_size=3, crop_seconds=0.0,
                           extra_datarc={"audio_dir": None, "libri_root": str(tmp_path / "LibriSpeech"),
                                         "file_path": str(tmp_path / "len_for_bucket"),
                                         "sets": ["train-clean-100"], "max_timestep": 0,
                                         "bucketing": "s3prl", "dev_sets": ["dev-clean"]})

    def args(expdir):
        return parse_args(["-u", "distiller", "-g", str(model), "-c", str(runner), "-p",
                           str(tmp_path / expdir), "--device", "cpu", "--seed", "7"])

    full = run(args("full"))
    run(args("part"))
    for step, path in list_checkpoints(str(tmp_path / "part")):
        if step != 2:
            os.remove(path)
    resumed = run(args("part"))
    a, b = read_checkpoint(full)["state_dict"], read_checkpoint(resumed)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_s3prl_schema_gets_s3prl_batches_unless_told_otherwise(tmp_path):
    """S3PRL's own config_runner.yaml has no bucketing key: its datarc (file_path length tables)
    gets S3PRL's batches; our sources keep length bucketing; an explicit value always wins."""
    s3prl = _datarc(tmp_path)
    assert s3prl.bucketing is None and s3prl.batching == "s3prl"
    assert _datarc(tmp_path, bucketing=True).batching is True
    ours = from_dict(DataConfig, {"audio_dir": str(tmp_path)})
    assert ours.batching is True
