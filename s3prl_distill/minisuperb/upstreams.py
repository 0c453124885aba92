"""Frozen feature extractors the proxy evaluator probes, all with one call shape.

An upstream here is a callable ``(wavs [B, S] float32 16 kHz, wav_lengths [B]) ->
(hidden_states: List[Tensor [B, T, D]], lengths [B])`` with attributes ``name``,
``num_params`` and ``downsample_rate``. Adapters:

* :class:`TeacherUpstream` - a :class:`s3prl_distill.teachers.Teacher` (all L+1 hidden states),
* :class:`StudentUpstream` - a :class:`s3prl_distill.models.Student` (its exposed hidden states,
  heads not run),
* :class:`FbankUpstream` - 80-bin Kaldi log-mel filterbank, 10 ms hop, per-utterance mean/variance
  normalised (SUPERB's FBANK baseline; one hidden state).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn

__all__ = ["TeacherUpstream", "StudentUpstream", "FbankUpstream", "count_params"]


def count_params(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


class TeacherUpstream:
    """Adapter for a frozen :class:`~s3prl_distill.teachers.Teacher`."""

    def __init__(self, teacher, name: str = "teacher"):
        self.model = teacher.eval()
        self.name = name
        self.num_params = count_params(teacher)
        self.downsample_rate = int(teacher.downsample_rate)

    @torch.inference_mode()
    def __call__(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        out = self.model(wavs, wav_lengths)
        return list(out.hidden_states), out.lengths


class StudentUpstream:
    """Adapter for a trained :class:`~s3prl_distill.models.Student` (heads not run)."""

    def __init__(self, student, name: str = "student"):
        self.model = student.eval()
        self.name = name
        self.num_params = count_params(student)
        self.downsample_rate = int(student.downsample_rate)

    @torch.inference_mode()
    def __call__(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        out = self.model(wavs, wav_lengths, with_heads=False)
        return list(out.hidden_states), out.lengths


class FbankUpstream:
    """80-bin log-mel filterbank (25 ms window, 10 ms hop), per-utterance CMVN."""

    name = "FBANK"
    num_params = 0
    downsample_rate = 160

    def __init__(self, num_mel_bins: int = 80):
        self.num_mel_bins = num_mel_bins

    @torch.inference_mode()
    def __call__(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        import s3prl_distill  # noqa: F401  (torchaudio importable)
        from torchaudio.compliance import kaldi

        feats, lengths = [], []
        for wav, length in zip(wavs, wav_lengths.tolist()):
            fb = kaldi.fbank(wav[:length].unsqueeze(0) * 32768, num_mel_bins=self.num_mel_bins,
                             sample_frequency=16000, dither=0.0)
            fb = (fb - fb.mean(0)) / (fb.std(0) + 1e-5)
            feats.append(fb)
            lengths.append(fb.shape[0])
        out = wavs.new_zeros(len(feats), max(lengths), self.num_mel_bins)
        for i, fb in enumerate(feats):
            out[i, : fb.shape[0]] = fb
        return [out], torch.tensor(lengths, dtype=torch.long)
