"""The one place for every audio rule: read, check, down-mix, resample, crop, pad, write.

Everything reads through ``soundfile`` (libsndfile: WAV, FLAC, OGG, ...), never through
torchaudio's I/O (removed in torchaudio >= 2.9). Samples come back as float32 in [-1, 1].

Rules (each one enforced here and nowhere else):

* a file that cannot be opened, holds no samples, holds NaN/Inf, or is shorter than the caller's
  minimum raises :class:`AudioError` naming the path and what was expected;
* multi-channel audio is averaged to mono with a logged warning (``on_multichannel="mix"``), or
  rejected (``"error"``);
* audio at another rate is resampled with ``torchaudio.functional.resample`` with a logged warning
  (``on_resample="warn"``), silently (``"allow"``), or rejected (``"error"``).

Warnings are logged once per distinct situation (e.g. once per source sample rate), not once per
file, so that a large corpus does not flood the log; later occurrences are logged at DEBUG level.

Example:
    >>> wav, sr = read_audio("utt.flac", target_sr=16000)       # doctest: +SKIP
    >>> wavs, lengths = pad_waveforms([wav, wav[:8000]])          # doctest: +SKIP (s3prl_distill.lengths)
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

__all__ = [
    "AudioError",
    "AudioInfo",
    "audio_info",
    "read_samples",
    "read_audio",
    "resample",
    "to_mono",
    "check_samples",
    "crop",
    "write_audio",
    "DEFAULT_SAMPLE_RATE",
]

DEFAULT_SAMPLE_RATE = 16000
_MULTICHANNEL_POLICIES = ("mix", "error")
_RESAMPLE_POLICIES = ("warn", "allow", "error")
_CROP_MODES = ("random", "start", "center")

_warned: Set[Tuple[str, object]] = set()


class AudioError(UserError):
    """An audio file or waveform breaks one of the rules; the message names the file and the rule."""


class AudioInfo(NamedTuple):
    """Header facts of an audio file (read without decoding samples)."""

    num_frames: int  #: samples per channel
    sample_rate: int
    channels: int


def _warn_once(key: Tuple[str, object], message: str, *args) -> None:
    if key in _warned:
        logger.debug(message, *args)
    else:
        _warned.add(key)
        logger.warning(message + " (logged once; further cases at DEBUG level)", *args)


def _sf_path(path: str):
    """The path as soundfile should get it: bytes on POSIX, so that a file name that is not
    valid UTF-8 (read back by Python with surrogate escapes) opens instead of failing with
    ``surrogates not allowed`` (soundfile encodes ``str`` paths strictly)."""
    return path if sys.platform == "win32" else os.fsencode(path)


def _check_path(path: PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: audio file not found")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: expected an audio file, found a directory or special file")
    return path


def audio_info(path: PathLike) -> AudioInfo:
    """Frames, sample rate and channels of ``path`` from the file header only.

    Raises:
        AudioError: the file is missing or not a format soundfile can read.
    """
    path = _check_path(path)
    try:
        info = sf.info(_sf_path(path))
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(
            f"{path}: not a readable audio file (expected WAV/FLAC/OGG readable by soundfile): {err}"
        ) from err
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def to_mono(samples: Tensor, *, where: str = "<waveform>", on_multichannel: str = "mix") -> Tensor:
    """Reduce ``samples`` ([S] or [S, C] channels-last) to one channel [S].

    ``on_multichannel="mix"`` averages the channels (logged warning), ``"error"`` raises.
    """
    if on_multichannel not in _MULTICHANNEL_POLICIES:
        raise ValueError(
            f"on_multichannel must be one of {_MULTICHANNEL_POLICIES}, got {on_multichannel!r}"
        )
    if samples.dim() == 1:
        return samples
    if samples.dim() != 2:
        raise AudioError(f"{where}: expected samples shaped [S] or [S, C], got {tuple(samples.shape)}")
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    if on_multichannel == "error":
        raise AudioError(f"{where}: expected mono audio, found {channels} channels")
    _warn_once(("channels", channels), "%s: %d channels averaged to mono", where, channels)
    return samples.mean(dim=1)


def resample(wav: Tensor, orig_sr: int, target_sr: int) -> Tensor:
    """Resample ``wav`` [..., S] from ``orig_sr`` to ``target_sr`` (band-limited sinc, torchaudio).

    Returns:
        Tensor [..., S'] with ``S' = ceil(S * target_sr / orig_sr)``; ``wav`` itself if the rates match.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return wav
    import s3prl_distill  # noqa: F401  (makes torchaudio importable on CPU-only torch)
    import torchaudio.functional as taf

    return taf.resample(wav, int(orig_sr), int(target_sr))


def check_samples(wav: Tensor, *, where: str = "<waveform>", min_samples: int = 1) -> Tensor:
    """Raise :class:`AudioError` if ``wav`` [S] is shorter than ``min_samples`` or not finite."""
    num = int(wav.shape[-1]) if wav.dim() > 0 else 0
    if num == 0:
        raise AudioError(f"{where}: holds no samples (expected at least {max(min_samples, 1)})")
    if num < min_samples:
        raise AudioError(f"{where}: {num} samples, expected at least {min_samples}")
    if not bool(torch.isfinite(wav).all()):
        bad = int((~torch.isfinite(wav)).sum())
        raise AudioError(f"{where}: holds {bad} NaN/Inf samples; expected finite values")
    return wav


def read_samples(
    source, *, offset: int = 0, num_frames: int = -1, dtype: str = "float32"
) -> Tuple[Tensor, int]:
    """Read frames as the file stores them: every channel, the file's own rate, no checks.

    The one call of soundfile's reader; :func:`read_audio` (mono, resampled, checked) builds on it,
    and so do torchaudio's ``load`` and ``sox_effects`` stand-ins (:mod:`s3prl_distill.compat`).

    Args:
        source: path, or a binary file object.
        offset, num_frames: first frame and frame count (-1: to the end), at the file's rate.
        dtype: ``"float32"`` (in [-1, 1]), ``"float64"``, or ``"int16"``/``"int32"`` (the
            integer scale of that width).

    Returns:
        (samples, sr): Tensor [S, C] of ``dtype``, and the file's sample rate.

    Raises:
        AudioError: the file is missing or not readable by soundfile (the message names it).
    """
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
    if isinstance(source, (str, os.PathLike)):
        source = _check_path(source)
    try:
        opened = _sf_path(source) if isinstance(source, str) else source
        data, sr = sf.read(opened, frames=num_frames, start=offset, dtype=dtype, always_2d=True)
    except Exception as err:
        raise AudioError(
            f"{where}: not a readable audio file (expected WAV/FLAC/OGG readable by soundfile): {err}"
        ) from err
    return torch.from_numpy(np.ascontiguousarray(data)), int(sr)


def read_audio(
    path: PathLike,
    target_sr: Optional[int] = DEFAULT_SAMPLE_RATE,
    *,
    on_multichannel: str = "mix",
    on_resample: str = "warn",
    min_samples: int = 1,
    offset: int = 0,
    num_frames: int = -1,
) -> Tuple[Tensor, int]:
    """Read one audio file as a mono float32 waveform.

    Args:
        path: WAV/FLAC/... file readable by soundfile.
        target_sr: rate to return; ``None`` keeps the file's own rate.
        on_multichannel: ``"mix"`` (average channels, logged warning) or ``"error"``.
        on_resample: ``"warn"`` (resample, logged warning), ``"allow"`` (resample silently) or
            ``"error"`` (raise if the file's rate differs from ``target_sr``).
        min_samples: minimum length, counted at the returned rate, after resampling.
        offset: first frame to read, at the file's rate.
        num_frames: frames to read from ``offset`` at the file's rate (-1: to the end).

    Returns:
        (wav, sr): ``wav`` Tensor [S] float32 in [-1, 1], ``sr`` its sample rate.

    Raises:
        AudioError: unreadable, empty, multi-channel (with ``"error"``), wrong rate (with
            ``"error"``), NaN/Inf, or shorter than ``min_samples``. The message names the path.
    """
    if on_resample not in _RESAMPLE_POLICIES:
        raise ValueError(f"on_resample must be one of {_RESAMPLE_POLICIES}, got {on_resample!r}")
    if offset < 0 or num_frames < -1:
        raise ValueError(f"offset must be >= 0 and num_frames >= -1, got {offset}, {num_frames}")
    path = _check_path(path)
    wav, sr = read_samples(path, offset=offset, num_frames=num_frames)  # [S, C]
    if wav.shape[0] == 0:
        raise AudioError(f"{path}: holds no samples (expected at least {max(min_samples, 1)})")
    wav = to_mono(wav, where=path, on_multichannel=on_multichannel)
    if not bool(torch.isfinite(wav).all()):
        check_samples(wav, where=path)
    if target_sr is not None and sr != target_sr:
        if on_resample == "error":
            raise AudioError(f"{path}: sample rate {sr} Hz, expected {target_sr} Hz")
        if on_resample == "warn":
            _warn_once(("rate", sr, target_sr), "%s: resampled from %d Hz to %d Hz", path, sr,
                       target_sr)
        wav = resample(wav, sr, target_sr)
        sr = target_sr
    check_samples(wav, where=path, min_samples=min_samples)
    return wav.contiguous(), int(sr)


def crop(
    wav: Tensor,
    max_samples: int,
    *,
    mode: str = "random",
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Cut ``wav`` [S] (or [..., S]) to at most ``max_samples`` along the last axis.

    ``mode``: ``"random"`` (uniform start drawn from ``generator``), ``"start"`` or ``"center"``.
    Shorter input is returned unchanged (pad with :func:`s3prl_distill.lengths.pad_waveforms`).
    """
    if mode not in _CROP_MODES:
        raise ValueError(f"crop mode must be one of {_CROP_MODES}, got {mode!r}")
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    length = int(wav.shape[-1])
    if length <= max_samples:
        return wav
    excess = length - max_samples
    if mode == "start":
        start = 0
    elif mode == "center":
        start = excess // 2
    else:
        start = int(torch.randint(0, excess + 1, (1,), generator=generator).item())
    return wav[..., start : start + max_samples]




def write_audio(
    path: PathLike,
    wav: Union[Tensor, np.ndarray],
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    *,
    subtype: Optional[str] = None,
) -> None:
    """Write ``wav`` ([S] mono or [C, S] channels-first) to ``path``; format from the extension.

    ``subtype`` is soundfile's (e.g. ``"PCM_16"``, ``"FLOAT"``); default: the format's default
    (16-bit PCM for WAV and FLAC). Creates the parent folder.

    Raises:
        AudioError: empty or non-finite samples, or an unsupported extension.
    """
    path = os.fspath(path)
    array = wav.detach().cpu().float().numpy() if isinstance(wav, Tensor) else np.asarray(wav)
    if array.ndim not in (1, 2):
        raise AudioError(f"{path}: expected samples shaped [S] or [C, S], got {array.shape}")
    if array.size == 0:
        raise AudioError(f"{path}: refusing to write an empty waveform")
    if not np.isfinite(array).all():
        raise AudioError(f"{path}: refusing to write NaN/Inf samples")
    if array.ndim == 2:
        array = array.T  # soundfile wants [S, C]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        sf.write(_sf_path(path), array, int(sample_rate), subtype=subtype)
    except Exception as err:
        raise AudioError(f"{path}: cannot write audio (format from the extension): {err}") from err

