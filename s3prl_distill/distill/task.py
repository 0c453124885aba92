"""DistillationTask: student + frozen teacher + layer-wise loss -> (loss, records).

One training step of layer-wise distillation::

    wavs [B, S], wav_lengths [B]
      -> teacher (eval, torch.inference_mode, outside the student's autocast, never in the graph)
         targets[j] = hidden state of teacher layer target_layers[j]   [B, T_t, D_t]
         (or the same targets given precomputed, e.g. read from the teacher cache)
      -> student (with heads, shaped to the teacher's frame count T_t)
         predictions[j] [B, T_t, D_t], prediction_lengths [B]
      -> mask [B, T_t]: frames valid for both (min of the two lengths)
      -> loss(predictions, targets, mask) -> (total, terms)

The student and teacher may disagree on an utterance's valid frame count by a frame or two
(different padding of their front ends); the mask keeps the frames both call valid. A larger
disagreement means their frame rates differ, a configuration error caught on the first batch.

Both the trainer (wrapped in DistributedDataParallel when several processes train) and the S3PRL
pretrain expert (for S3PRL's own runner) train through this one class.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from s3prl_distill.lengths import valid_mask

logger = logging.getLogger(__name__)

__all__ = ["DistillationTask", "check_frame_rates"]

Targets = Tuple[List[Tensor], Tensor]


def check_frame_rates(pred_lengths: Tensor, target_lengths: Tensor, max_frame_diff: int) -> None:
    """Raise ValueError when an utterance's student and teacher valid frames differ by more than
    ``max_frame_diff`` (their frame rates differ). pred_lengths, target_lengths: [B]."""
    diff = (pred_lengths.long() - target_lengths.long()).abs()
    if bool((diff > max_frame_diff).any()):
        i = int(diff.argmax())
        raise ValueError(
            f"student predictions have {int(pred_lengths[i])} valid frames but the teacher has "
            f"{int(target_lengths[i])} for utterance {i} of the batch (allowed difference: "
            f"{max_frame_diff}); the student's prediction rate must equal the teacher's "
            "downsample rate"
        )


class DistillationTask(nn.Module):
    """Distil ``teacher`` into ``student`` with ``loss``.

    Args:
        student: a ``Student`` (``forward(wavs, wav_lengths, with_heads=True, target_frames=T)
            -> StudentOutput`` with ``predictions`` [B, T, D_t] and ``prediction_lengths``;
            ``target_layers`` names the teacher layer each head predicts).
        teacher: a frozen ``Teacher`` (``forward(wavs, wav_lengths) -> TeacherOutput``).
        loss: ``loss(predictions, targets, mask) -> (total, terms)``.
        max_frame_diff: largest allowed |student - teacher| valid-frame difference.

    ``forward(wavs [B, S], wav_lengths [B], targets=None) -> (loss [], records)``: ``records``
    maps every loss term (``l1/layer4``, ...) to a detached scalar tensor and adds ``frames``
    (valid frames in the batch, used to weight data-parallel and dev-set averages).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: nn.Module,
                 max_frame_diff: int = 2):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.loss = loss
        # a time reduction by k that drops a partial last group (time_reduction_tail: drop)
        # predicts up to k - 1 frames fewer than the teacher has
        k = int(getattr(getattr(student, "config", None), "time_reduction", 1) or 1)
        self.max_frame_diff = max(int(max_frame_diff), k - 1)
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
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()
        self._rates_checked = False

    def train(self, mode: bool = True) -> "DistillationTask":
        """Train mode for the student and the loss; the teacher keeps its own mode rule."""
        self.training = mode
        self.student.train(mode)
        self.loss.train(mode)
        self.teacher.eval()
        return self

    def set_epoch(self, epoch: int) -> None:
        """Tell epoch-dependent parts (e.g. FitHuBERT's random hints) which epoch runs."""
        set_epoch = getattr(self.loss, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def teacher_targets(self, wavs: Tensor, wav_lengths: Tensor) -> Targets:
        """Teacher hidden states of ``target_layers``: (J x [B, T_t, D_t], lengths [B]).

        Computed under ``torch.inference_mode`` and outside any autocast of the caller (the
        teacher's precision is its own); returned as ordinary tensors (no graph).
        """
        # the teacher runs under inference mode itself, in its own precision, and copies only these
        # layers out of it (inside the caller's inference mode they would stay inference tensors)
        with torch.autocast(wavs.device.type, enabled=False):
            out = self.teacher(wavs, wav_lengths, layers=self.target_layers)
        targets = list(out.hidden_states)
        lengths = out.lengths
        # inference tensors cannot be saved for backward: copy out of inference mode (teachers
        # following the contract already return ordinary tensors; those are not copied again)
        targets = [t.clone() if t.is_inference() else t for t in targets]
        return targets, lengths.clone() if lengths.is_inference() else lengths

    def _check_targets(self, targets: Targets, batch: int) -> Targets:
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
                targets: Optional[Targets] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """wavs [B, S] float 16 kHz, wav_lengths [B] -> (loss [], records {name: scalar}).

        Args:
            targets: precomputed teacher targets ``(J x [B, T_t, D_t], lengths [B])`` in
                ``target_layers`` order, as :meth:`teacher_targets` returns them (e.g. read from
                the teacher cache); the teacher is then not run. ``None``: run the teacher.
        """
        if targets is None:
            states, target_lengths = self.teacher_targets(wavs, wav_lengths)
        else:
            states, target_lengths = self._check_targets(targets, wavs.shape[0])
        frames = states[0].shape[1]
        out = self.student(wavs, wav_lengths, with_heads=True, target_frames=frames)
        predictions = list(out.predictions)
        if len(predictions) != len(self.target_layers):
            raise ValueError(f"the student returned {len(predictions)} predictions but has "
                             f"{len(self.target_layers)} target layers")
        for j, (pred, target) in enumerate(zip(predictions, states)):
            if pred.shape[1:] != target.shape[1:]:
                raise ValueError(
                    f"head {j} predicts [T, D] = {list(pred.shape[1:])} but its teacher layer "
                    f"{self.target_layers[j]} has {list(target.shape[1:])}; the head's output size "
                    "must be the teacher's dim and its frames the teacher's")
        pred_lengths = out.prediction_lengths if out.prediction_lengths is not None else out.lengths
        computed = getattr(out, "predicted_frames", None)
        if computed is not None and computed < frames:
            # the student predicts fewer frames than the teacher has (a time reduction dropping
            # a partial last group): the teacher is cut to the predictions, as the official
            # FitHuBERT loss narrows it, so no frame of zero filling enters the loss
            predictions = [p[:, :computed] for p in predictions]
            states = [t[:, :computed] for t in states]
            frames = computed
        if not self._rates_checked:  # a frame-rate mismatch shows on any batch: check the first
            check_frame_rates(pred_lengths, target_lengths, self.max_frame_diff)
            self._rates_checked = True
        mask = valid_mask(torch.minimum(pred_lengths, target_lengths.to(pred_lengths.device)), frames)
        total, terms = self.loss(predictions, states, mask)
        records = {name: value.detach() for name, value in terms.items()}
        records["frames"] = mask.sum().detach().to(torch.float32)
        return total, records
