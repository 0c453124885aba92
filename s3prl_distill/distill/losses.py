"""Layer-wise distillation losses (DistilHuBERT, FitHuBERT), masked to valid frames.

Both losses take one prediction per student head and the teacher hidden state it predicts:

    loss(predictions, targets, mask) -> (total, terms)

    predictions: List[Tensor [B, T, D]]   student head outputs, one per head
    targets:     List[Tensor [B, T, D]]   teacher hidden states, same order and shapes
    mask:        BoolTensor [B, T]        True on valid frames; padded frames never contribute
    total:       Tensor []                the training objective (differentiable)
    terms:       Dict[str, Tensor []]     per-layer parts, e.g. ``l1/layer4``, ``cos/layer4``

Every per-layer term is a mean over the valid frames (and, for distances, over the D
dimensions), so the value does not depend on how much padding a batch holds. (Eq. 1 of the
DistilHuBERT paper writes a sum over t; its released S3PRL code, like us, averages, which only
rescales the loss and so the effective learning rate.)

``include_padded_frames=True`` averages over every frame of the batch instead (the mask is
ignored): what S3PRL's ``DistillerForPretrain.compute_loss`` and the official FitHuBERT
``calculate_loss`` do (``rec_loss.mean()`` over B x N x T x D). Only for reproducing them exactly.

DistilHuBERT (Chang et al., 2022, Eq. 1), per predicted teacher layer l:
    L(l) = mean_{t valid, d} |h_td - h^_td|  +  cos_weight * mean_{t valid} -log sigmoid(cos(h_t, h^_t))
    total = mean_l L(l)   (layer_reduction "mean", default: S3PRL 0.4.18
                           s3prl/pretrain/distiller/pretrain_expert.py compute_loss, which takes
                           rec_loss.mean() over B x N x T x D and sim_loss.mean() over B x N x T)
          = sum_l L(l)    (layer_reduction "sum": the paper's L = L(4) + L(8) + L(12), N x larger)
    (cos_weight = lambda = 1 in the paper)

FitHuBERT (Lee et al., 2022, Eqs. 1-3), with the last head predicting the teacher's last layer:
    total = MSE(last head) + hint_weight * sum_{other heads} MSE(hint)       (hint_weight = 0.1)
    MSE = mean_{t valid, d} (h_td - h^_td)^2
    (the official train.py calculate_loss with distil_random_layer 11: the 11 hint MSEs times
    random_layer_weight 0.1, each a mean over B x T x D, summed with the last layer's MSE)

``target_norm: layer_norm`` (not in either paper; default ``none``) normalises every target frame
over its D dims without affine parameters before the distance. The papers' teachers are post-LN
(HuBERT Base), so their hidden states are already layer-normalised; a pre-LN teacher's (Whisper,
WavLM/HuBERT Large, wav2vec 2.0 Large) intermediate states are the raw residual stream, whose
large constant offsets dominate L1, MSE and cosine alike and let a student lower the loss by
predicting the offset instead of the content.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "masked_mean",
    "l1_per_frame",
    "mse_per_frame",
    "neg_log_sigmoid_cos_per_frame",
    "normalize_target",
    "DistilHuBERTLoss",
    "FitHuBERTLoss",
    "build_loss",
]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [B, T] over the frames where ``mask`` [B, T] is True.

    Returns a scalar; 0 (still attached to the graph) when no frame is valid.
    """
    if values.shape != mask.shape:
        raise ValueError(f"masked_mean: values {tuple(values.shape)} and mask {tuple(mask.shape)} differ")
    weights = mask.to(values.dtype)
    count = weights.sum()
    return (values * weights).sum() / count.clamp_min(1.0)


def l1_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over the feature axis: [B, T, D] x2 -> [B, T]."""
    return (pred - target).abs().mean(dim=-1)


def mse_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the feature axis: [B, T, D] x2 -> [B, T]."""
    return (pred - target).pow(2).mean(dim=-1)


def neg_log_sigmoid_cos_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """``-log sigmoid(cos(pred_t, target_t))`` per frame: [B, T, D] x2 -> [B, T].

    Uses ``softplus(-x) = -log sigmoid(x)`` for numerical stability.
    """
    cos = F.cosine_similarity(pred, target, dim=-1)
    return F.softplus(-cos)


def normalize_target(target: Tensor, mode: str) -> Tensor:
    """``mode`` ``layer_norm``: LayerNorm without affine over the last dim ([B, T, D] -> same);
    ``none``: unchanged. Padded (all-zero) frames stay zero."""
    if mode == "none":
        return target
    if mode == "layer_norm":
        return F.layer_norm(target, target.shape[-1:])
    raise ValueError(f"target_norm must be 'none' or 'layer_norm', got {mode!r}")


def _check_inputs(name: str, predictions: Sequence[Tensor], targets: Sequence[Tensor],
                  mask: Tensor, expected: int) -> None:
    if len(predictions) != expected or len(targets) != expected:
        raise ValueError(
            f"{name}: expected {expected} predictions and targets (one per target layer), got "
            f"{len(predictions)} predictions and {len(targets)} targets"
        )
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor [B, T], got {mask.dtype} {tuple(mask.shape)}")
    for j, (pred, target) in enumerate(zip(predictions, targets)):
        if pred.shape != target.shape:
            raise ValueError(
                f"{name}: head {j} predicts shape {tuple(pred.shape)} but its target has shape "
                f"{tuple(target.shape)} (expected [B, T, D] equal)"
            )
        if pred.dim() != 3 or pred.shape[:2] != mask.shape:
            raise ValueError(
                f"{name}: head {j} prediction {tuple(pred.shape)} does not match mask "
                f"{tuple(mask.shape)} (expected [B, T, D] with mask [B, T])"
            )


class DistilHuBERTLoss(nn.Module):
    """Mean (or sum) over predicted layers of L1 + ``cos_weight`` * (-log sigmoid(cos)).

    Args:
        target_layers: teacher layer predicted by each head, in head order (names the terms).
        cos_weight: lambda of Eq. 1 (1.0 in the paper; 0 gives the "L1 only" ablation).
        target_norm: ``none`` or ``layer_norm`` (see the module docstring).
        layer_reduction: ``mean`` (S3PRL's released code) or ``sum`` (the paper's Eq.) over layers.
        include_padded_frames: average over every frame, padding included (S3PRL's code).

    Example:
        >>> loss = DistilHuBERTLoss([4, 8, 12])
        >>> preds = [torch.zeros(2, 5, 3) for _ in range(3)]
        >>> total, terms = loss(preds, [p + 1 for p in preds], torch.ones(2, 5, dtype=torch.bool))
        >>> sorted(terms)[:3]
        ['cos/layer12', 'cos/layer4', 'cos/layer8']
    """

    def __init__(self, target_layers: Sequence[int], cos_weight: float = 1.0, target_norm: str = "none",
                 layer_reduction: str = "mean", include_padded_frames: bool = False):
        super().__init__()
        normalize_target(torch.zeros(1, 1), target_norm)  # reject a bad mode now
        self.target_norm = target_norm
        if len(target_layers) == 0:
            raise ValueError("DistilHuBERTLoss needs at least one target layer")
        if cos_weight < 0:
            raise ValueError(f"cos_weight must be >= 0, got {cos_weight}")
        if layer_reduction not in ("mean", "sum"):
            raise ValueError(f"layer_reduction must be 'mean' or 'sum', got {layer_reduction!r}")
        self.target_layers: List[int] = [int(k) for k in target_layers]
        self.cos_weight = float(cos_weight)
        self.layer_reduction = layer_reduction
        self.include_padded_frames = bool(include_padded_frames)

    def forward(self, predictions: Sequence[Tensor], targets: Sequence[Tensor],
                mask: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """predictions/targets: List[[B, T, D]]; mask: [B, T] bool -> (total [], terms)."""
        _check_inputs("DistilHuBERTLoss", predictions, targets, mask, len(self.target_layers))
        if self.include_padded_frames:
            mask = torch.ones_like(mask)
        terms: Dict[str, Tensor] = {}
        total = predictions[0].new_zeros(())
        for layer, pred, target in zip(self.target_layers, predictions, targets):
            pred, target = pred.float(), normalize_target(target.float(), self.target_norm)
            l1 = masked_mean(l1_per_frame(pred, target), mask)
            cos = masked_mean(neg_log_sigmoid_cos_per_frame(pred, target), mask)
            layer_loss = l1 + self.cos_weight * cos
            terms[f"l1/layer{layer}"] = l1
            terms[f"cos/layer{layer}"] = cos
            terms[f"loss/layer{layer}"] = layer_loss
            total = total + layer_loss
        if self.layer_reduction == "mean":
            total = total / len(self.target_layers)
        return total, terms


class FitHuBERTLoss(nn.Module):
    """MSE of the last head + ``hint_weight`` * sum of the MSEs of the other heads (hints).

    The "last" head is the last entry of ``target_layers`` (the deepest teacher layer predicted);
    every other head is a hint.

    Args:
        target_layers: teacher layer predicted by each head, in head order.
        hint_weight: lambda of Eq. 3 (0.1 in the paper; 0 gives the "no hints" ablation).
        random_hints: FitHuBERT Table 3 ablation: in each epoch only this many hints, drawn at
            random (seeded by ``seed`` and the epoch, see :meth:`set_epoch`), count; ``None``: all.
            Unselected hints are weighted 0 (their heads stay in the graph, so data-parallel
            training sees every parameter every step); their MSEs are still reported.
        seed: seed of the hint draws.
        target_norm: ``none`` or ``layer_norm`` (see the module docstring).
        include_padded_frames: average over every frame, padding included (the official code).
    """

    def __init__(self, target_layers: Sequence[int], hint_weight: float = 0.1,
                 random_hints: Optional[int] = None, seed: int = 0, target_norm: str = "none",
                 include_padded_frames: bool = False):
        super().__init__()
        self.include_padded_frames = bool(include_padded_frames)
        normalize_target(torch.zeros(1, 1), target_norm)  # reject a bad mode now
        self.target_norm = target_norm
        if len(target_layers) == 0:
            raise ValueError("FitHuBERTLoss needs at least one target layer")
        if hint_weight < 0:
            raise ValueError(f"hint_weight must be >= 0, got {hint_weight}")
        self.target_layers: List[int] = [int(k) for k in target_layers]
        self.hint_weight = float(hint_weight)
        num_hints = len(self.target_layers) - 1
        if random_hints is not None and not 0 <= random_hints <= num_hints:
            raise ValueError(f"random_hints must lie in [0, {num_hints}] (the hint heads), got {random_hints}")
        self.random_hints = random_hints
        self.seed = int(seed)
        self.active_hints: List[int] = list(range(num_hints))  # indices into the hint heads
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the hints of ``epoch`` (only with ``random_hints``); deterministic in (seed, epoch)."""
        if self.random_hints is None:
            return
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + int(epoch))
        perm = torch.randperm(len(self.target_layers) - 1, generator=gen).tolist()
        self.active_hints = sorted(perm[: self.random_hints])
        logger.info("epoch %d: FitHuBERT hints from teacher layers %s", epoch,
                    [self.target_layers[i] for i in self.active_hints])

    def forward(self, predictions: Sequence[Tensor], targets: Sequence[Tensor],
                mask: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """predictions/targets: List[[B, T, D]]; mask: [B, T] bool -> (total [], terms)."""
        _check_inputs("FitHuBERTLoss", predictions, targets, mask, len(self.target_layers))
        if self.include_padded_frames:
            mask = torch.ones_like(mask)
        terms: Dict[str, Tensor] = {}
        mses = []
        for layer, pred, target in zip(self.target_layers, predictions, targets):
            target = normalize_target(target.float(), self.target_norm)
            mse = masked_mean(mse_per_frame(pred.float(), target), mask)
            terms[f"mse/layer{layer}"] = mse
            mses.append(mse)
        feat = mses[-1]
        hint = predictions[0].new_zeros(()).float()
        active = set(self.active_hints)
        for j, mse in enumerate(mses[:-1]):
            hint = hint + (mse if j in active else mse * 0.0)
        terms["feat"] = feat
        terms["hint"] = hint
        return feat + self.hint_weight * hint, terms


def build_loss(cfg, target_layers: Sequence[int], seed: int = 0) -> nn.Module:
    """The loss module for ``cfg`` (:class:`s3prl_distill.distill.config.LossConfig`)."""
    if cfg.type == "distilhubert":
        return DistilHuBERTLoss(target_layers, cos_weight=cfg.cos_weight, target_norm=cfg.target_norm,
                                layer_reduction=cfg.layer_reduction,
                                include_padded_frames=cfg.include_padded_frames)
    if cfg.type == "fithubert":
        return FitHuBERTLoss(target_layers, hint_weight=cfg.hint_weight,
                             random_hints=cfg.random_hints, seed=seed, target_norm=cfg.target_norm,
                             include_padded_frames=cfg.include_padded_frames)
    raise ValueError(f"unknown loss type {cfg.type!r}; expected 'distilhubert' or 'fithubert'")
