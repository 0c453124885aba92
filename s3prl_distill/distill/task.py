"""DistillationTask: student + frozen teacher + layer-wise loss -> (loss, records).

One training step of layer-wise distillation:

    wavs [B, S], wav_lengths [B]
      -> teacher (eval, torch.inference_mode, never in the autograd graph)
         hidden_states[k] [B, T_t, D_t] for every k in student.target_layers
         (or the same targets given precomputed, e.g. from a teacher-feature cache)
      -> student (with heads) predictions[j] [B, T_s, D_t], prediction_lengths [B]
      -> align: T = min(T_s, T_t); valid frames = min(student length, teacher length)
      -> loss(predictions, targets, mask [B, T]) -> (total, terms)

The student and teacher may disagree on the frame count by a frame or two (different padding of
their front ends); the task trims both to the shorter one and masks what either calls padding.
A larger disagreement means their frame rates differ, which is a configuration error.

The S3PRL pretrain expert and our runner both train through this one class (wrapped in
DistributedDataParallel by the runner when several processes train).
"""

from __future__ import annotations

import inspect
import logging
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["DistillationTask", "align_to_shorter"]


def align_to_shorter(
    predictions: List[Tensor], pred_lengths: Tensor, targets: List[Tensor], target_lengths: Tensor,
    max_frame_diff: int = 2,
) -> Tuple[List[Tensor], List[Tensor], Tensor]:
    """Trim predictions and targets to a common frame count and build the valid-frame mask.

    Args:
        predictions: J tensors [B, T_s, D]; pred_lengths: [B] valid frames.
        targets: J tensors [B, T_t, D]; target_lengths: [B] valid frames.
        max_frame_diff: largest allowed |student - teacher| valid-frame difference per utterance.

    Returns:
        (predictions [B, T, D] each, targets [B, T, D] each, mask [B, T] bool), T = min(T_s, T_t).

    Raises:
        ValueError: when valid lengths differ by more than ``max_frame_diff`` frames (the student
            and teacher frame rates differ) or the feature sizes differ.
    """
    pred_lengths = pred_lengths.to(torch.long).cpu()
    target_lengths = target_lengths.to(torch.long).cpu()
    diff = (pred_lengths - target_lengths).abs()
    if bool((diff > max_frame_diff).any()):
        i = int(diff.argmax())
        raise ValueError(
            f"student predictions have {int(pred_lengths[i])} valid frames but the teacher has "
            f"{int(target_lengths[i])} for utterance {i} of the batch (allowed difference: "
            f"{max_frame_diff}); the student's prediction rate must equal the teacher's "
            "downsample rate"
        )
    frames = min(min(p.shape[1] for p in predictions), min(t.shape[1] for t in targets))
    valid = torch.minimum(pred_lengths, target_lengths).clamp_max(frames)
    mask = torch.arange(frames)[None, :] < valid[:, None]
    out_p, out_t = [], []
    for j, (pred, target) in enumerate(zip(predictions, targets)):
        if pred.shape[-1] != target.shape[-1]:
            raise ValueError(
                f"head {j} predicts {pred.shape[-1]} dims but its teacher layer has "
                f"{target.shape[-1]}; set the head's output size to the teacher's dim"
            )
        out_p.append(pred[:, :frames])
        out_t.append(target[:, :frames])
    return out_p, out_t, mask.to(predictions[0].device)


class DistillationTask(nn.Module):
    """Distil ``teacher`` into ``student`` with ``loss``.

    Args:
        student: a ``Student`` (``forward(wavs, wav_lengths, with_heads=True) -> StudentOutput``
            with ``predictions`` / ``prediction_lengths``; ``target_layers`` names the teacher
            layer each head predicts).
        teacher: a frozen ``Teacher`` (``forward(wavs, wav_lengths) -> TeacherOutput``).
        loss: ``loss(predictions, targets, mask) -> (total, terms)``.
        max_frame_diff: see :func:`align_to_shorter`.

    ``forward(wavs [B, S], wav_lengths [B], targets=None) -> (loss [], records)``: ``records`` maps every loss
    term (``l1/layer4``, ...) to a detached scalar and adds ``frames`` (valid frames in the batch,
    used to weight data-parallel averages).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: nn.Module,
                 max_frame_diff: int = 2):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.loss = loss
        self.max_frame_diff = int(max_frame_diff)
        self.target_layers: List[int] = [int(k) for k in student.target_layers]
        if not self.target_layers:
            raise ValueError("the student has no prediction heads (target_layers is empty): "
                             "nothing to distil")
        num_layers = int(getattr(teacher, "num_layers", max(self.target_layers)))
        bad = [k for k in self.target_layers if not 0 <= k <= num_layers]
        if bad:
            raise ValueError(
                f"student heads predict teacher layers {self.target_layers}, but the teacher has "
                f"layers 0..{num_layers} only (bad: {bad})"
            )
        try:
            params = inspect.signature(student.forward).parameters
        except (TypeError, ValueError):
            params = {}
        # students that can shape their predictions to the teacher's frame count get it
        self._pass_target_frames = "target_frames" in params
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> "DistillationTask":
        """Train mode for the student only; the teacher always stays in eval mode."""
        self.training = mode
        self.student.train(mode)
        self.loss.train(mode)
        self.teacher.eval()
        return self

    def teacher_targets(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        """Teacher hidden states for ``target_layers``: (J x [B, T_t, D_t], lengths [B]).

        Computed under ``torch.inference_mode``; returned as ordinary tensors (no graph).
        """
        # a Teacher runs under inference mode itself and copies only these layers out of it
        # (calling it inside inference mode would make those copies inference tensors again)
        out = self.teacher(wavs, wav_lengths, layers=self.target_layers)
        targets = list(out.hidden_states)
        lengths = out.lengths
        # inference tensors cannot be saved for backward: copy out of inference mode (teachers
        # following the contract already return ordinary tensors; those are not copied again)
        targets = [t.clone() if t.is_inference() else t for t in targets]
        return targets, lengths.clone() if lengths.is_inference() else lengths

    def _check_targets(self, targets: Tuple[List[Tensor], Tensor], batch: int
                       ) -> Tuple[List[Tensor], Tensor]:
        """Validate given targets: J tensors [B, T, D] and lengths [B] (B = ``batch``)."""
        states, lengths = targets
        states = list(states)
        if len(states) != len(self.target_layers):
            raise ValueError(f"got {len(states)} target tensors for {len(self.target_layers)} "
                             f"target layers {self.target_layers}")
        bad = [tuple(t.shape) for t in states if t.dim() != 3 or t.shape[0] != batch]
        if bad or lengths.shape != (batch,):
            raise ValueError(f"targets must be [B={batch}, T, D] with lengths [B]; got "
                             f"{[tuple(t.shape) for t in states]} and lengths {tuple(lengths.shape)}")
        return states, lengths

    def forward(self, wavs: Tensor, wav_lengths: Tensor,
                targets: Optional[Tuple[List[Tensor], Tensor]] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """wavs [B, S] float 16 kHz, wav_lengths [B] -> (loss [], records {name: scalar}).

        Args:
            targets: precomputed teacher targets ``(J x [B, T_t, D_t], lengths [B])`` in
                ``target_layers`` order, as :meth:`teacher_targets` returns them (e.g. read from a
                teacher-feature cache); the teacher is then not run. ``None``: run the teacher.
        """
        if targets is None:
            targets, target_lengths = self.teacher_targets(wavs, wav_lengths)
        else:
            targets, target_lengths = self._check_targets(targets, wavs.shape[0])
        if self._pass_target_frames:
            out = self.student(wavs, wav_lengths, with_heads=True, target_frames=targets[0].shape[1])
        else:
            out = self.student(wavs, wav_lengths, with_heads=True)
        pred_lengths = out.prediction_lengths if out.prediction_lengths is not None else out.lengths
        if len(out.predictions) != len(self.target_layers):
            raise ValueError(
                f"the student returned {len(out.predictions)} predictions but has "
                f"{len(self.target_layers)} target layers"
            )
        preds, targets, mask = align_to_shorter(
            list(out.predictions), pred_lengths, targets, target_lengths, self.max_frame_diff
        )
        total, terms = self.loss(preds, targets, mask)
        records = {name: value.detach() for name, value in terms.items()}
        records["frames"] = mask.sum().detach().to(torch.float32)
        return total, records
