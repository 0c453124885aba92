"""Whisper's log-mel spectrogram, shared by the Whisper teacher and log-mel students.

``n_fft=400``, hop 160 (10 ms), periodic Hann window, centred with reflect padding, power
spectrum with the last frame dropped, Slaney mel filters from librosa (``n_mels`` 80, or 128 for
large-v3), ``log10(max(x, 1e-10))``, floor at ``max - 8``, ``(x + 4) / 4``. Computed per utterance
on its *unpadded* samples (Whisper pads every input to 30 s; features of unpadded input are what a
student and a teacher on variable-length batches can share).
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["SAMPLE_RATE", "N_FFT", "HOP_LENGTH", "MIN_SAMPLES", "mel_filters", "mel_frames",
           "log_mel_spectrogram", "batch_log_mel"]

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
#: shortest waveform the log-mel accepts (reflect padding needs more than ``N_FFT // 2`` samples)
MIN_SAMPLES = N_FFT // 2 + 1

_FILTERS: Dict[int, Tensor] = {}


def mel_filters(n_mels: int) -> Tensor:
    """Slaney mel filters ``[n_mels, N_FFT // 2 + 1]`` (librosa, as Whisper's ``mel_filters.npz``)."""
    if n_mels not in _FILTERS:
        import librosa

        _FILTERS[n_mels] = torch.from_numpy(
            librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)
        )
    return _FILTERS[n_mels]


def mel_frames(wav_lengths: Tensor) -> Tensor:
    """Log-mel frames of waveforms of ``wav_lengths`` samples: ``S // 160`` (a centred STFT has
    ``S // 160 + 1`` frames, Whisper drops the last)."""
    return torch.div(wav_lengths, HOP_LENGTH, rounding_mode="floor")


def log_mel_spectrogram(wav: Tensor, n_mels: int = 80) -> Tensor:
    """Whisper's log-mel of one unpadded waveform.

    Args:
        wav (Tensor): ``[S]`` float 16 kHz, ``S >= MIN_SAMPLES``.
    Returns:
        Tensor ``[n_mels, S // 160]``.
    """
    if wav.dim() != 1:
        raise ValueError(f"log_mel_spectrogram: expected one waveform [S], got {list(wav.shape)}")
    if wav.shape[0] < MIN_SAMPLES:
        raise ValueError(f"log_mel_spectrogram: need at least {MIN_SAMPLES} samples, got {wav.shape[0]}")
    window = torch.hann_window(N_FFT, device=wav.device)
    stft = torch.stft(wav.float(), N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels).to(wav.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def batch_log_mel(wavs: Tensor, wav_lengths: Tensor, n_mels: int = 80, who: str = "log-mel"
                  ) -> Tuple[Tensor, Tensor]:
    """Log-mel of a padded batch, each utterance on its valid samples only.

    Args:
        wavs (Tensor): ``[B, S]`` float 16 kHz, zero-padded.
        wav_lengths (Tensor): ``[B]`` valid samples, each ``>= MIN_SAMPLES``.
        who: names the caller in the error for a too-short waveform.
    Returns:
        (mel ``[B, n_mels, F]`` zero past each utterance's frames, frames ``[B]`` = ``S_b // 160``).
    """
    from s3prl_distill.models.cnn import exporting

    if exporting():
        return _batch_log_mel_gathered(wavs, wav_lengths, n_mels), mel_frames(wav_lengths)
    frames = mel_frames(wav_lengths)
    mel = wavs.new_zeros(wavs.shape[0], n_mels, int(frames.max()) if len(frames) else 0)
    for b, n in enumerate(wav_lengths.tolist()):
        if n < MIN_SAMPLES:
            raise ValueError(f"{who}: waveform {b} of the batch has {n} samples; need at least {MIN_SAMPLES}")
        mel[b, :, : int(frames[b])] = log_mel_spectrogram(wavs[b, :n], n_mels)
    return mel, frames


def _batch_log_mel_gathered(wavs: Tensor, wav_lengths: Tensor, n_mels: int) -> Tensor:
    """:func:`batch_log_mel` for the whole batch at once, in tensor ops only (the export form).

    Each utterance's reflect-padded frames are gathered from its own valid samples, the
    (windowed) DFT is a product with a fixed cos/sin basis, the log floor uses the maximum over
    that utterance's frames: the same per-utterance function as the loop, to float rounding (the
    DFT by product instead of an FFT), for any batch size and lengths.

    Args:
        wavs (Tensor): ``[B, S]`` float, zero-padded; wav_lengths (Tensor): ``[B]`` (each >= MIN_SAMPLES).
    Returns:
        Tensor ``[B, n_mels, max(S_b) // 160]``, zero past each utterance's frames.
    """
    lengths = wav_lengths.to(torch.long)
    frames = mel_frames(lengths)  # [B]
    steps = torch.arange(frames.max(), device=wavs.device)  # [F]
    taps = torch.arange(N_FFT, device=wavs.device)  # [N]
    # sample index of every frame tap before reflection: centred frames, N_FFT // 2 of padding
    index = steps[:, None] * HOP_LENGTH + taps[None, :] - N_FFT // 2  # [F, N]
    n = lengths[:, None, None]  # [B, 1, 1]
    index = index[None].abs()  # reflect at the start: -j -> j
    index = torch.where(index >= n, 2 * (n - 1) - index, index)  # reflect at the end
    index = torch.minimum(index.clamp(min=0), n - 1)  # frames past the end: masked below
    gathered = torch.gather(wavs, 1, index.flatten(1)).view_as(index).to(wavs.dtype)  # [B, F, N]
    window = torch.hann_window(N_FFT, device=wavs.device, dtype=wavs.dtype)
    bins = torch.arange(N_FFT // 2 + 1, device=wavs.device, dtype=torch.float64)
    phase = 2 * math.pi * torch.outer(taps.to(torch.float64), bins) / N_FFT  # [N, K]
    cos = (torch.cos(phase) * window.double()[:, None]).to(wavs.dtype)
    sin = (torch.sin(phase) * window.double()[:, None]).to(wavs.dtype)
    power = (gathered @ cos) ** 2 + (gathered @ sin) ** 2  # [B, F, K]
    mel = power @ mel_filters(n_mels).to(device=wavs.device, dtype=wavs.dtype).t()  # [B, F, M]
    log_spec = torch.clamp(mel, min=1e-10).log10()
    valid = steps[None, :] < frames[:, None]  # [B, F]
    peak = log_spec.masked_fill(~valid[:, :, None], float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    out = (log_spec + 4.0) / 4.0 * valid[:, :, None].to(wavs.dtype)
    return out.transpose(1, 2)
