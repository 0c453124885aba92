"""``bucketing: fithubert``: the official FitHuBERT batches (FIDELITY gap 3).

References: the official ``utils/dataset.py`` ``LibriDataset`` construction (github
glory20h/FitHuBERT at 36d999c: S3PRL's length tables concatenated, ``sort_values(by=["length"],
ascending=False)``, consecutive buckets of ``batch_size``, a last bucket kept only if it holds more
than one utterance, never halved), written out below from that description with pandas; and
torch's own ``DistributedSampler`` (what Lightning wraps the bucket loader in, shuffle on,
``set_epoch`` each epoch), imported, for how buckets are dealt to the GPUs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.dataset import DistillDataset, build_train_loader
from s3prl_distill.pretrain.samplers import FitHuBERTBatchSampler, S3PRLBatchSampler

from test_pretrain_s3prl_data import SETS, _corpus, _datarc


def _official_buckets(lengths, batch_size):
    """The official LibriDataset's bucket list, as row indices of the concatenated table."""
    pandas = pytest.importorskip("pandas")
    order = pandas.DataFrame({"length": lengths}).sort_values(by=["length"], ascending=False).index
    buckets, chunk = [], []
    for row in order.tolist():
        chunk.append(row)
        if len(chunk) == batch_size:
            buckets.append(chunk)
            chunk = []
    if len(chunk) > 1:
        buckets.append(chunk)
    return buckets


@pytest.mark.parametrize("n,per_gpu", [(40, 3), (41, 3), (43, 3), (9, 1), (30, 4)])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_buckets_and_their_dealing_equal_the_official_code(n, per_gpu, world):
    rng = np.random.default_rng(n + world)
    lengths = rng.choice([30000, 99999, 100000, 150000, 200000], n).tolist()  # ties and long ones
    rows = list(range(n))
    official = _official_buckets(lengths, per_gpu)
    for rank in range(world):
        ours = FitHuBERTBatchSampler(lengths, rows, per_gpu * world, seed=7, num_replicas=world, rank=rank)
        assert sorted(map(sorted, ours.buckets)) == sorted(map(sorted, official))
        assert [list(b) for b in ours.buckets] == official  # the same order: bucket i is bucket i
        deal = DistributedSampler(range(len(official)), num_replicas=world, rank=rank, shuffle=True, seed=7)
        for epoch in (0, 1, 5):
            deal.set_epoch(epoch)
            ours.set_epoch(epoch)
            got = [[i for i, e in batch] for batch in ours]
            assert got == [official[b] for b in deal], (rank, epoch)
            assert len(ours) == len(deal)


def test_long_buckets_are_never_halved_where_s3prl_halves_them():
    lengths = [200000] * 12 + [50000] * 6
    rows = list(range(len(lengths)))
    fit = FitHuBERTBatchSampler(lengths, rows, 6, seed=0)
    s3prl = S3PRLBatchSampler(lengths, rows, 6, cropped=False, seed=0)
    assert sorted(len(b) for b in fit.global_batches(0)) == [6, 6, 6]
    assert sorted(len(b) for b in s3prl.global_batches(0)) == [3, 3, 3, 3, 6]


def test_resume_mid_epoch_continues_the_same_buckets():
    lengths = list(range(1000, 1000 + 50 * 37, 37))
    sampler = FitHuBERTBatchSampler(lengths, list(range(len(lengths))), 6, seed=3, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    whole = [[i for i, _ in b] for b in sampler]
    sampler.start(4, 3)
    assert [[i for i, _ in b] for b in sampler] == whole[3:]
    assert all(e == 4 for b in (sampler.start(4, 0) or sampler) for _, e in b)


def test_the_loader_and_a_batch_size_the_processes_cannot_share(tmp_path):
    rng = np.random.default_rng(3)
    rows = {name: [(f"{name}/1/2/1-2-{i:04d}.flac", int(rng.choice([8000, 16000, 100000, 110000])))
                   for i in range(count)] for name, count in zip(SETS[:2], (13, 10))}
    _corpus(tmp_path, rows)
    datarc = _datarc(tmp_path, sets=SETS[:2], bucketing="fithubert", train_batch_size=6)
    dataset = DistillDataset(datarc, seed=0)
    loader = build_train_loader(dataset, datarc, seed=5, world_size=2, rank=0)
    assert isinstance(loader.batch_sampler, FitHuBERTBatchSampler)
    batch = next(iter(loader))
    assert batch["wavs"].shape[0] in (2, 3)  # one whole bucket of 3 (or the last one of 2)
    odd = _datarc(tmp_path, sets=SETS[:2], bucketing="fithubert", train_batch_size=5)
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        build_train_loader(DistillDataset(odd, seed=0), odd, seed=5, world_size=2, rank=0)
    with pytest.raises(ConfigError, match="bucketing"):
        from_dict(DataConfig, {"audio_dir": str(tmp_path), "bucketing": "fitHuBERT"}, where="x.yaml")
