"""Fast proxy evaluator following SUPERB's protocol on the mini-SUPERB corpus.

The upstream is frozen; its hidden states are computed once and cached. The downstream learns a
softmax-weighted sum of ALL hidden states (S3PRL's featurizer, ``normalize: False``) and the
task's light model:

* KS / IC / SID: weighted sum -> linear projector -> mean pooling over valid frames -> linear
  classifier (IC: one softmax per slot, correct only if every slot is). Every step before the
  pooling is linear, so pooling each hidden state first is exact: the cache holds ``[N, L, D]``.
* PR: weighted sum -> linear -> CTC over SUPERB's phone tokens; greedy decoding; phone error rate.
  The cache holds each utterance's ``[L, T, D]`` (float16).

Mean-pooled features (KS, IC, SID) are standardised per layer and dimension with the training
split's mean and standard deviation before the probe (a fixed affine map per dimension, so the
weighted sum + linear model can represent exactly the same functions). Without it a short probe
measures conditioning rather than content: pooling averages the frame-to-frame content down while
a constant offset (large in distilled students and in a pre-LN teacher's residual stream) stays,
and swamps the utterance-to-utterance differences. Every upstream (teacher, students, FBANK) goes
through the same map; the learned layer weights then compare layers on one scale (as
DistilHuBERT's Fig. 3 normalises them by each layer's norm). Frame features (PR) are left as they
are: there the content varies frame to frame and standardising measured worse for every upstream.

Model selection on dev (every epoch), the test score of the best dev epoch is reported together
with the layer weights of that epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.audio import read_audio
from s3prl_distill.lengths import pad_waveforms
from s3prl_distill.io import atomic_save, safe_load
from s3prl_distill.minisuperb import layouts
from s3prl_distill.minisuperb.phones import PHONE_VOCAB

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "ProbeConfig", "TaskData", "load_task", "extract_features", "standardize", "train_probe",
           "evaluate_upstream", "phone_error_rate"]

TASKS = ("ks", "ic", "sid", "pr")
METRIC = {"ks": "acc", "ic": "acc", "sid": "acc", "pr": "per"}
SEGMENT = 16000


@dataclass
class ProbeConfig:
    """Downstream training of one task."""

    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 32
    projector_dim: int = 256
    weight_decay: float = 0.0
    max_batch_seconds: float = 60.0   # audio per batch when extracting features


DEFAULT_PROBES: Dict[str, ProbeConfig] = {
    "ks": ProbeConfig(epochs=40, lr=2e-3),
    "ic": ProbeConfig(epochs=60, lr=2e-3),
    "sid": ProbeConfig(epochs=80, lr=2e-3, batch_size=16),
    "pr": ProbeConfig(epochs=40, lr=2e-2, batch_size=8),
}


@dataclass
class TaskData:
    """One task's items: ``splits[name] = [(audio ref, label index or [token ids])]``."""

    task: str
    splits: Dict[str, List[Tuple[str, object]]]
    num_classes: List[int]            # per output slot (IC: 3 slots; PR: tokens + blank)
    class_names: List[List[str]] = field(default_factory=list)


def load_task(root, task: str) -> TaskData:
    """Read ``task`` (ks | ic | sid | pr) of the corpus at ``root`` into label indices."""
    from s3prl_distill.minisuperb.generate import KS_CLASSES

    root = Path(root)
    if task == "ks":
        return TaskData(task, layouts.read_ks(root, KS_CLASSES), [len(KS_CLASSES)], [KS_CLASSES])
    if task == "ic":
        raw = layouts.read_ic(root)
        slots = []
        for s in range(3):  # value vocabulary from train, as S3PRL's IC expert builds it
            slots.append(sorted({lab[s] for _, lab in raw["train"]}))
        splits = {}
        for name, items in raw.items():
            out = []
            for path, lab in items:
                for s in range(3):
                    if lab[s] not in slots[s]:
                        raise layouts.LayoutError(
                            f"IC {name}: slot value {lab[s]!r} of {path} never occurs in train")
                out.append((path, [slots[s].index(lab[s]) for s in range(3)]))
            splits[name] = out
        return TaskData(task, splits, [len(s) for s in slots], slots)
    if task == "sid":
        raw = layouts.read_sid(root)
        speakers = sorted({lab for _, lab in raw["train"]})
        index = {s: i for i, s in enumerate(speakers)}
        splits = {n: [(p, index[lab]) for p, lab in items] for n, items in raw.items()}
        return TaskData(task, splits, [len(speakers)], [[f"id{10001 + s}" for s in speakers]])
    if task == "pr":
        raw = layouts.read_pr(root)
        vocab = {tok: i + 1 for i, tok in enumerate(PHONE_VOCAB)}  # 0 = CTC blank
        splits = {n: [(p, [vocab[t] for t in toks]) for p, toks in items]
                  for n, items in raw.items()}
        return TaskData(task, splits, [len(PHONE_VOCAB) + 1], [["<blank>"] + list(PHONE_VOCAB)])
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _read(ref: str) -> Tensor:
    """Audio [S] of an item: a file, or ``file#k`` = the k-th 1 s slice of a file."""
    if "#" in ref:
        path, k = ref.rsplit("#", 1)
        wav, _ = read_audio(path, offset=int(k) * SEGMENT, num_frames=SEGMENT)
        return wav
    wav, _ = read_audio(ref)
    return wav


def extract_features(upstream, refs: Sequence[str], pooled: bool,
                     max_batch_seconds: float = 60.0) -> List[Tensor]:
    """Run the frozen ``upstream`` over ``refs`` once.

    Returns:
        pooled: one Tensor [L, D] per item (mean over valid frames of each hidden state);
        else: one Tensor [L, T_i, D] float16 per item (valid frames only).
    """
    wavs = [_read(r) for r in refs]
    order = sorted(range(len(wavs)), key=lambda i: wavs[i].shape[0])
    out: List[Optional[Tensor]] = [None] * len(wavs)
    start = 0
    while start < len(order):
        end = start + 1
        longest = wavs[order[start]].shape[0]
        while end < len(order):
            longest = max(longest, wavs[order[end]].shape[0])
            if longest * (end - start + 1) > max_batch_seconds * 16000:
                break
            end += 1
        idx = order[start:end]
        batch, lengths = pad_waveforms([wavs[i] for i in idx])
        states, frames = upstream(batch, lengths)
        stacked = torch.stack([h.float() for h in states], dim=1)  # [B, L, T, D]
        for b, i in enumerate(idx):
            valid = stacked[b, :, : max(int(frames[b]), 1)]
            out[i] = valid.mean(dim=1) if pooled else valid.to(torch.float16).clone()
        start = end
    return out  # type: ignore[return-value]


class _WeightedSum(nn.Module):
    """Softmax-weighted sum of L hidden states: [..., L, D] -> [..., D]."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("l,...ld->...d", F.softmax(self.weights, dim=-1), x)

    def normalized(self) -> List[float]:
        return [round(float(w), 4) for w in F.softmax(self.weights.detach(), dim=-1)]


class _UtteranceProbe(nn.Module):
    """Pooled features [B, L, D] -> logits [B, sum(num_classes)]."""

    def __init__(self, num_layers: int, dim: int, num_classes: List[int], projector_dim: int):
        super().__init__()
        self.featurizer = _WeightedSum(num_layers)
        self.projector = nn.Linear(dim, projector_dim)
        self.classifier = nn.Linear(projector_dim, sum(num_classes))
        self.num_classes = num_classes

    def forward(self, pooled: Tensor) -> Tensor:
        return self.classifier(self.projector(self.featurizer(pooled)))

    def loss_and_correct(self, pooled: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """labels [B, slots] -> (mean loss, [B] bool: every slot right)."""
        logits = self(pooled).split(self.num_classes, dim=-1)
        loss = sum(F.cross_entropy(lg, labels[:, s]) for s, lg in enumerate(logits))
        correct = torch.stack([lg.argmax(-1) == labels[:, s] for s, lg in enumerate(logits)], 1)
        return loss, correct.all(dim=1)


class _CTCProbe(nn.Module):
    """Frame features [B, L, T, D] -> log-probs [B, T, V+1] (blank = 0)."""

    def __init__(self, num_layers: int, dim: int, vocab: int):
        super().__init__()
        self.featurizer = _WeightedSum(num_layers)
        self.output = nn.Linear(dim, vocab)

    def forward(self, feats: Tensor) -> Tensor:
        return self.output(self.featurizer(feats.transpose(1, 2))).log_softmax(-1)


def _edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def phone_error_rate(hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> float:
    """Sum of edit distances / sum of reference lengths."""
    errors = sum(_edit_distance(h, r) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r) for r in refs))


def _pad_frames(items: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """[L, T_i, D] items -> ([B, L, T_max, D] float32, lengths [B])."""
    lengths = torch.tensor([x.shape[1] for x in items])
    out = torch.zeros(len(items), items[0].shape[0], int(lengths.max()), items[0].shape[2])
    for i, x in enumerate(items):
        out[i, :, : x.shape[1]] = x.float()
    return out, lengths


def _greedy(logp: Tensor, lengths: Tensor) -> List[List[int]]:
    best = logp.argmax(-1)
    hyps = []
    for row, n in zip(best, lengths.tolist()):
        seq, last = [], 0
        for t in row[:n].tolist():
            if t != last and t != 0:
                seq.append(t)
            last = t
        hyps.append(seq)
    return hyps


def _train_utterance(feats: Dict[str, Tensor], labels: Dict[str, Tensor], num_classes,
                     cfg: ProbeConfig, gen: torch.Generator):
    num_layers, dim = feats["train"].shape[1:]
    probe = _UtteranceProbe(num_layers, dim, num_classes, cfg.projector_dim)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = (-1.0, None, [])
    n = feats["train"].shape[0]

    def score(split):
        with torch.no_grad():
            _, ok = probe.loss_and_correct(feats[split], labels[split])
        return float(ok.float().mean())

    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            loss, _ = probe.loss_and_correct(feats["train"][idx], labels["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        dev = score("dev")
        if dev > best[0]:
            best = (dev, copy.deepcopy(probe.state_dict()), probe.featurizer.normalized())
    probe.load_state_dict(best[1])
    return {"dev": best[0], "test": score("test"), "layer_weights": best[2]}


def _fixed_batches(items: List[Tensor], batch_size: int) -> List[Tuple[Tensor, Tensor, List[int]]]:
    """Length-sorted batches padded once: ``[(x [B, L, T, D] float32, lengths [B], item indices)]``.

    Padding and casting the float16 cache every epoch cost more than the probe itself.
    """
    order = sorted(range(len(items)), key=lambda i: items[i].shape[1])
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [(*_pad_frames([items[i] for i in chunk]), chunk) for chunk in chunks]


def _train_ctc(feats: Dict[str, List[Tensor]], labels: Dict[str, List[List[int]]], vocab: int,
               cfg: ProbeConfig, gen: torch.Generator):
    num_layers, _, dim = feats["train"][0].shape
    probe = _CTCProbe(num_layers, dim, vocab)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    best = (math.inf, None, [])
    train = _fixed_batches(feats["train"], cfg.batch_size)  # bucketed; batch order shuffled
    scored = {split: _fixed_batches(feats[split], 32) for split in ("dev", "test")}

    def per(split):
        hyps: List[List[int]] = [[] for _ in feats[split]]
        with torch.no_grad():
            for x, lengths, idx in scored[split]:
                for i, hyp in zip(idx, _greedy(probe(x), lengths)):
                    hyps[i] = hyp
        return phone_error_rate(hyps, labels[split])

    for _ in range(cfg.epochs):
        for b in torch.randperm(len(train), generator=gen).tolist():
            x, lengths, idx = train[b]
            targets = [torch.tensor(labels["train"][i]) for i in idx]
            logp = probe(x).transpose(0, 1)  # [T, B, V]
            loss = ctc(logp, torch.cat(targets), lengths,
                       torch.tensor([len(t) for t in targets]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        dev = per("dev")
        if dev < best[0]:
            best = (dev, copy.deepcopy(probe.state_dict()), probe.featurizer.normalized())
    probe.load_state_dict(best[1])
    return {"dev": best[0], "test": per("test"), "layer_weights": best[2]}


def _cached_features(upstream, data: TaskData, cache_dir: Optional[Path], cfg: ProbeConfig):
    pooled = data.task != "pr"
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in upstream.name)
    path = cache_dir / f"{safe_name}.{data.task}.pt" if cache_dir else None
    if path is not None and path.exists():
        blob = safe_load(path)
        if (blob.get("refs") == {k: [r for r, _ in v] for k, v in data.splits.items()}
                and blob.get("fingerprint") == getattr(upstream, "fingerprint", None)):
            logger.info("%s/%s: features from cache %s", upstream.name, data.task, path)
            return blob["features"], blob["seconds"]
    started = time.time()
    feats = {}
    for split, items in data.splits.items():
        feats[split] = extract_features(upstream, [r for r, _ in items], pooled,
                                        cfg.max_batch_seconds)
        if pooled:
            feats[split] = torch.stack(feats[split])
    seconds = time.time() - started
    if path is not None:
        atomic_save({"refs": {k: [r for r, _ in v] for k, v in data.splits.items()},
                     "fingerprint": getattr(upstream, "fingerprint", None),
                     "features": feats, "seconds": seconds}, path)
    return feats, seconds


def standardize(feats: Dict[str, object]) -> Dict[str, object]:
    """Standardise every split with the train split's per-(layer, dim) mean and std.

    Args:
        feats: ``{split: [N, L, D] Tensor}`` (pooled) or ``{split: [[L, T_i, D] Tensor]}`` (frames).
    Returns:
        the same layout, float32 (pooled) or float16 (frames); constant dimensions map to 0.
    """
    train = feats["train"]
    if torch.is_tensor(train):
        mean, std = train.double().mean(0), train.double().std(0, unbiased=False)
    else:
        total = sum(int(x.shape[1]) for x in train)
        acc = sum(x.double().sum(1) for x in train)
        acc2 = sum((x.double() ** 2).sum(1) for x in train)
        mean = acc / total
        std = (acc2 / total - mean ** 2).clamp_min(0.0).sqrt()
    scale = torch.where(std > 1e-8, 1.0 / std.clamp_min(1e-8), torch.zeros_like(std))
    if torch.is_tensor(train):
        return {k: ((v.double() - mean) * scale).float() for k, v in feats.items()}
    mean_f, scale_f = mean[:, None, :].float(), scale[:, None, :].float()
    return {k: [((x.float() - mean_f) * scale_f).to(torch.float16) for x in v] for k, v in feats.items()}


def train_probe(data: TaskData, feats, cfg: ProbeConfig, seed: int = 0) -> Dict[str, object]:
    """Train the task's downstream on cached ``feats`` (see :func:`extract_features`).

    Returns:
        ``{"metric": "acc"|"per", "dev": float, "test": float, "layer_weights": [L floats]}``
        (scores in percent).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if data.task == "pr":
        labels = {k: [lab for _, lab in v] for k, v in data.splits.items()}
        result = _train_ctc(feats, labels, data.num_classes[0], cfg, gen)
    else:
        labels = {k: torch.tensor([lab if isinstance(lab, list) else [lab] for _, lab in v])
                  for k, v in data.splits.items()}
        result = _train_utterance(standardize(feats), labels, data.num_classes, cfg, gen)
    result = {"metric": METRIC[data.task], "dev": round(100 * result["dev"], 2),
              "test": round(100 * result["test"], 2), "layer_weights": result["layer_weights"]}
    return result


def evaluate_upstream(upstream, tasks: Dict[str, TaskData], cache_dir=None, seed: int = 0,
                      probes: Optional[Dict[str, ProbeConfig]] = None) -> Dict[str, dict]:
    """Evaluate one frozen upstream on every task: ``{task: result of train_probe + timings}``."""
    probes = {**DEFAULT_PROBES, **(probes or {})}
    cache_dir = Path(cache_dir) if cache_dir else None
    if cache_dir:
        cache_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for task, data in tasks.items():
        feats, seconds = _cached_features(upstream, data, cache_dir, probes[task])
        t0 = time.time()
        result = train_probe(data, feats, probes[task], seed)
        result["extract_s"] = round(seconds, 1)
        result["probe_s"] = round(time.time() - t0, 1)
        logger.info("%s %s: test %s %.2f (dev %.2f), layer weights %s", upstream.name,
                    task.upper(), result["metric"], result["test"], result["dev"],
                    result["layer_weights"])
        results[task] = result
    return results
