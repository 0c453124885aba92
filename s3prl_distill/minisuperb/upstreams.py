"""Frozen feature extractors the proxy evaluator probes, all with one call shape.

An upstream here is a callable ``(wavs [B, S] float32 16 kHz, wav_lengths [B]) ->
(hidden_states: List[Tensor [B, T, D]], lengths [B])`` with attributes ``name``,
``num_params``, ``downsample_rate`` and ``fingerprint`` (what the feature cache is keyed on). Adapters:

* :class:`TeacherUpstream` - a :class:`s3prl_distill.teachers.Teacher` (all L+1 hidden states),
* :class:`StudentUpstream` - a :class:`s3prl_distill.models.Student` (its exposed hidden states,
  heads not run),
* :class:`FbankUpstream` - 80-bin Kaldi log-mel filterbank, 10 ms hop, per-utterance mean/variance
  normalised (SUPERB's FBANK baseline; one hidden state).
"""

from __future__ import annotations

import hashlib
from typing import List, Tuple

import torch
from torch import Tensor, nn

__all__ = ["TeacherUpstream", "StudentUpstream", "FbankUpstream", "count_params",
           "weights_fingerprint"]


def count_params(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _fingerprint_parts(value) -> List[bytes]:
    """Bytes identifying one state-dict value: a tensor (quantised ones by their integers and
    scales), or the tensors inside a tuple/list (packed quantised weights), or its repr."""
    if torch.is_tensor(value):
        value = value.detach().cpu()
        parts = [str(tuple(value.shape)).encode(), str(value.dtype).encode()]
        if value.is_quantized:
            if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                parts.append(f"{value.q_scale()}/{value.q_zero_point()}".encode())
            else:
                parts.append(value.q_per_channel_scales().numpy().tobytes())
            value = value.int_repr()
        parts.append(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return parts
    if isinstance(value, (tuple, list)):
        return [part for item in value for part in _fingerprint_parts(item)]
    return [repr(value).encode()]


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-1 of ``module``'s state dict (names, shapes, dtypes and values; int8-quantised
    modules included)."""
    digest = hashlib.sha1()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        for part in _fingerprint_parts(value):
            digest.update(part)
    return digest.hexdigest()


class TeacherUpstream:
    """Adapter for a frozen :class:`~s3prl_distill.teachers.Teacher`."""

    def __init__(self, teacher, name: str = "teacher"):
        self.model = teacher.eval()
        self.name = name
        self.num_params = count_params(teacher)
        self.downsample_rate = int(teacher.downsample_rate)
        self.fingerprint = weights_fingerprint(teacher)

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
        self.fingerprint = weights_fingerprint(student)

    @torch.inference_mode()
    def __call__(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        out = self.model(wavs, wav_lengths, with_heads=False)
        return list(out.hidden_states), out.lengths


class FbankUpstream:
    """SUPERB's FBANK baseline (S3PRL ``fbank`` / ``fbank_no_cmvn``): 80-bin Kaldi log-mel
    filterbank (25 ms window, 10 ms hop) + deltas and delta-deltas (window 5) = 240 dims,
    mean/variance normalised per utterance when ``cmvn`` (S3PRL's ``fbank``).

    With per-utterance CMVN every mean-pooled feature is zero, so the utterance-level tasks are at
    chance, as SUPERB reports for FBANK (SID 8.5e-4 %); ``cmvn=False`` is S3PRL's
    ``fbank_no_cmvn``, the stronger baseline for those tasks.
    """

    num_params = 0
    downsample_rate = 160

    def __init__(self, cmvn: bool = True, num_mel_bins: int = 80, delta_order: int = 2):
        self.cmvn = cmvn
        self.num_mel_bins = num_mel_bins
        self.delta_order = delta_order
        self.name = "FBANK" if cmvn else "FBANK (no CMVN)"
        self.dim = num_mel_bins * (delta_order + 1)
        self.fingerprint = f"fbank-{num_mel_bins}-d{delta_order}-cmvn{int(cmvn)}"

    def features(self, wav: Tensor) -> Tensor:
        """wav [S] -> [T, dim]."""
        import s3prl_distill  # noqa: F401  (torchaudio importable)
        import torchaudio.functional as taf
        from torchaudio.compliance import kaldi

        fb = kaldi.fbank(wav.unsqueeze(0) * 32768, num_mel_bins=self.num_mel_bins,
                         frame_length=25.0, frame_shift=10.0, sample_frequency=16000, dither=0.0)
        feats = [fb]
        for _ in range(self.delta_order):
            feats.append(taf.compute_deltas(feats[-1].t(), win_length=5).t())
        fb = torch.cat(feats, dim=-1)
        if self.cmvn:
            fb = (fb - fb.mean(0)) / (fb.std(0) + 1e-10)
        return fb

    @torch.inference_mode()
    def __call__(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        feats = [self.features(wav[:length]) for wav, length in zip(wavs, wav_lengths.tolist())]
        lengths = [f.shape[0] for f in feats]
        out = wavs.new_zeros(len(feats), max(lengths), self.dim)
        for i, fb in enumerate(feats):
            out[i, : fb.shape[0]] = fb
        return [out], torch.tensor(lengths, dtype=torch.long)
