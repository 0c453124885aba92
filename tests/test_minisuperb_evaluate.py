"""Proxy evaluator: learns easy separable tasks, picks the informative layer, PER, caching and
valid-length handling of feature extraction."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.minisuperb.evaluate import (
    ProbeConfig, TaskData, evaluate_upstream, extract_features, phone_error_rate, standardize,
    train_probe)
from s3prl_distill.minisuperb.upstreams import FbankUpstream


def _pooled_task(n_per_split=(60, 20, 20), classes=4, dim=8, seed=0):
    """Layer 1 carries the class (a class mean + noise), layers 0 and 2 are pure noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=gen) * 3
    splits, feats = {}, {}
    for name, n in zip(("train", "dev", "test"), n_per_split):
        labels = torch.arange(n) % classes
        x = torch.randn(n, 3, dim, generator=gen)
        x[:, 1] += means[labels]
        splits[name] = [(f"{name}{i}", int(lab)) for i, lab in enumerate(labels)]
        feats[name] = x
    return TaskData("ks", splits, [classes]), feats


def test_utterance_probe_learns_and_weights_the_informative_layer():
    data, feats = _pooled_task()
    result = train_probe(data, feats, ProbeConfig(epochs=30, lr=1e-2, batch_size=16), seed=0)
    assert result["metric"] == "acc" and result["test"] >= 95.0
    weights = result["layer_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-3
    assert weights[1] > weights[0] and weights[1] > weights[2]


def test_probe_ignores_per_dimension_offset_and_scale():
    """A large constant offset and per-dimension scales (what a distilled layer can carry) leave
    the probe's result unchanged: features are standardised with train statistics first."""
    data, feats = _pooled_task()
    cfg = ProbeConfig(epochs=30, lr=1e-2, batch_size=16)
    gen = torch.Generator().manual_seed(3)
    offset = 50.0 + 100.0 * torch.rand(3, 8, generator=gen)
    scale = torch.exp(3.0 * torch.randn(3, 8, generator=gen))
    warped = {k: v * scale + offset for k, v in feats.items()}
    plain, moved = train_probe(data, feats, cfg, seed=0), train_probe(data, warped, cfg, seed=0)
    assert moved["test"] == plain["test"] >= 95.0
    assert np.allclose(moved["layer_weights"], plain["layer_weights"], atol=1e-3)


def test_standardize_pooled_and_frames():
    gen = torch.Generator().manual_seed(0)
    pooled = {"train": 5 + 2 * torch.randn(50, 2, 3, generator=gen), "test": torch.zeros(4, 2, 3)}
    pooled["train"][:, 1, 2] = 7.0  # a constant dimension maps to 0
    out = standardize(pooled)
    assert torch.allclose(out["train"].mean(0), torch.zeros(2, 3), atol=1e-5)
    std = out["train"].std(0, unbiased=False)
    assert torch.allclose(std[0], torch.ones(3), atol=1e-4) and float(std[1, 2]) == 0.0
    assert torch.allclose(out["test"][:, 0], ((0 - pooled["train"][:, 0].mean(0)) / pooled["train"][:, 0].std(0, unbiased=False)).expand(4, 3), atol=1e-4)
    frames = {"train": [3 + torch.randn(2, t, 4, generator=gen).half() for t in (5, 9, 30)],
              "dev": [torch.zeros(2, 3, 4).half()]}
    out = standardize(frames)
    cat = torch.cat([x.float() for x in out["train"]], 1)
    assert out["train"][1].dtype == torch.float16 and out["train"][1].shape == (2, 9, 4)
    assert cat.mean(1).abs().max() < 1e-2 and (cat.std(1, unbiased=False) - 1).abs().max() < 1e-2


def test_utterance_probe_is_at_chance_on_shuffled_labels():
    data, feats = _pooled_task(n_per_split=(80, 40, 200))
    rng = np.random.default_rng(0)
    test = data.splits["test"]
    data.splits["test"] = [(r, int(rng.integers(0, 4))) for r, _ in test]
    result = train_probe(data, feats, ProbeConfig(epochs=20, lr=1e-2, batch_size=16), seed=0)
    assert result["test"] < 50.0  # 4 classes: chance is 25 %


def test_ic_probe_needs_every_slot_right():
    gen = torch.Generator().manual_seed(1)
    n, dim = 90, 6
    slots = [3, 2, 2]
    labels = torch.stack([torch.arange(n) % 3, (torch.arange(n) // 3) % 2,
                          (torch.arange(n) // 6) % 2], 1)
    basis = torch.randn(sum(slots), dim, generator=gen) * 3
    offsets = [0, 3, 5]
    x = torch.randn(n, 1, dim, generator=gen) * 0.3
    for s in range(3):
        x[:, 0] += basis[labels[:, s] + offsets[s]]
    splits = {k: [(f"{k}{i}", labels[i].tolist()) for i in range(n)] for k in ("train", "dev", "test")}
    data = TaskData("ic", splits, slots)
    feats = {k: x for k in splits}
    result = train_probe(data, feats, ProbeConfig(epochs=60, lr=1e-2, batch_size=16), seed=0)
    assert result["test"] >= 90.0


def test_ctc_probe_recognises_token_sequences():
    gen = torch.Generator().manual_seed(0)
    vocab, dim = 6, 12
    emb = torch.randn(vocab, dim, generator=gen) * 3
    splits, feats = {}, {}
    for name, n in (("train", 60), ("dev", 10), ("test", 10)):
        items, fs = [], []
        for i in range(n):
            tokens = torch.randint(1, vocab, (int(torch.randint(3, 7, (1,), generator=gen)),),
                                   generator=gen).tolist()
            frames = []
            for t in tokens:  # each token 3 frames, a noise frame in between (like a blank)
                frames += [emb[t]] * 3 + [torch.zeros(dim)]
            x = torch.stack(frames) + 0.1 * torch.randn(len(frames), dim, generator=gen)
            fs.append(torch.stack([torch.randn_like(x), x]).to(torch.float16))  # [L=2, T, D]
            items.append((f"{name}{i}", tokens))
        splits[name], feats[name] = items, fs
    data = TaskData("pr", splits, [vocab])
    result = train_probe(data, feats, ProbeConfig(epochs=40, lr=2e-2, batch_size=8), seed=0)
    assert result["metric"] == "per" and result["test"] < 10.0
    assert result["layer_weights"][1] > result["layer_weights"][0]


def test_phone_error_rate():
    assert phone_error_rate([[1, 2, 3]], [[1, 2, 3]]) == 0.0
    assert phone_error_rate([[1, 3]], [[1, 2, 3]]) == pytest.approx(1 / 3)
    assert phone_error_rate([[4, 1, 2, 3, 5]], [[1, 2, 3]]) == pytest.approx(2 / 3)


class _MeanUpstream:
    """Frames of 160 samples; hidden states = [frame means, frame means squared]."""

    name = "mean"
    num_params = 0
    downsample_rate = 160
    fingerprint = "mean-v1"

    def __call__(self, wavs, lengths):
        t = wavs.shape[1] // 160
        frames = wavs[:, : t * 160].reshape(len(wavs), t, 160)
        h = frames.mean(-1, keepdim=True).repeat(1, 1, 2)
        return [h, h ** 2], lengths // 160


def _write(tmp_path, seconds, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"{seed}.wav"
    sf.write(path, (0.3 * rng.standard_normal(int(16000 * seconds)) + 0.1 * seed).astype("float32"), 16000)
    return str(path)


def test_extract_features_uses_valid_frames_only(tmp_path):
    short, long = _write(tmp_path, 0.5, 1), _write(tmp_path, 2.0, 2)
    alone = extract_features(_MeanUpstream(), [short], pooled=True)[0]
    batched = extract_features(_MeanUpstream(), [short, long], pooled=True, max_batch_seconds=10)
    assert alone.shape == (2, 2)
    torch.testing.assert_close(batched[0], alone)  # padding of the batch never leaks in
    frames = extract_features(_MeanUpstream(), [short, long], pooled=False)
    assert frames[0].shape == (2, 50, 2) and frames[1].shape == (2, 200, 2)
    assert frames[0].dtype == torch.float16


def test_fbank_upstream_shapes_and_cmvn():
    wavs = torch.randn(2, 16000)
    states, lengths = FbankUpstream()(wavs, torch.tensor([16000, 8000]))
    assert len(states) == 1 and states[0].shape[0] == 2 and states[0].shape[2] == 240
    assert lengths.tolist() == [98, 48]
    assert torch.all(states[0][1, 48:] == 0)
    # per-utterance CMVN: zero mean over the valid frames (what makes pooled FBANK useless)
    torch.testing.assert_close(states[0][1, :48].mean(0), torch.zeros(240), atol=1e-4, rtol=0)
    raw, _ = FbankUpstream(cmvn=False)(wavs, torch.tensor([16000, 8000]))
    assert raw[0][1, :48].mean(0).abs().max() > 1.0


def test_evaluate_upstream_caches_features(tmp_path):
    refs = {name: [(_write(tmp_path, 0.3 + 0.1 * (i % 3), 10 * k + i), i % 2) for i in range(6)]
            for k, name in enumerate(("train", "dev", "test"))}
    data = TaskData("ks", refs, [2])
    cache = tmp_path / "cache"
    first = evaluate_upstream(_MeanUpstream(), {"ks": data}, cache_dir=cache,
                              probes={"ks": ProbeConfig(epochs=2)})
    assert (cache / "mean.ks.pt").is_file()
    again = evaluate_upstream(_MeanUpstream(), {"ks": data}, cache_dir=cache,
                              probes={"ks": ProbeConfig(epochs=2)})
    assert again["ks"]["test"] == first["ks"]["test"]  # same cached features, same seed
    calls = []

    class Changed(_MeanUpstream):
        fingerprint = "mean-v2"  # other weights: the cache must not be used

        def __call__(self, wavs, lengths):
            calls.append(len(wavs))
            return super().__call__(wavs, lengths)

    evaluate_upstream(Changed(), {"ks": data}, cache_dir=cache, probes={"ks": ProbeConfig(epochs=2)})
    assert calls
    assert set(first["ks"]) >= {"metric", "dev", "test", "layer_weights", "extract_s", "probe_s"}
