"""``torchaudio.sox_effects`` without libsox: the effects S3PRL 0.4.18's datasets pass, in PyTorch.

torchaudio >= 2.9 removed ``sox_effects``; S3PRL still calls ``apply_effects_file`` /
``apply_effects_tensor`` in its downstream datasets. :func:`patch` (run by
:func:`s3prl_distill.compat.apply`) installs this module as ``torchaudio.sox_effects`` when
torchaudio lacks it. Files are read by :func:`s3prl_distill.audio.read_samples` (the package's one
audio reader), channels kept.

Supported effects (every effect string S3PRL's sources pass; arguments as in SoX):

==========================================  ===================================================
``["channels", N]``                         average to mono (N=1) / duplicate a mono input
``["rate", R]``                             resample to R Hz (band-limited sinc, torchaudio)
``["gain", dB]``                            scale by 10^(dB/20), clipped to [-1, 1]
``["norm"]`` / ``["norm", dB]``             scale so the peak is at dB dBFS (default 0)
``["reverse"]``                             time-reverse
``["pad", a, b]``                           a seconds of zeros before, b after (``Ns``: samples)
``["trim", start]`` / ``["trim", start, d]``  keep d seconds from start (``Ns``: samples)
``["silence", 1, d, thr[, -1, d2, thr2]]``  SoX ``silence``: drop leading audio until d seconds
                                            above thr (``%`` of full scale or ``d`` dB); with
                                            ``-1 d2 thr2`` also drop every quiet stretch of at
                                            least d2 seconds and the short bursts between them
``["vad", opts...]``                        SoX ``vad`` (torchaudio.functional.vad): trims
                                            leading non-speech; options -t -T -s -g -p -b -N -n
                                            -r -f -m -M -h -l -H -L
==========================================  ===================================================

Any other effect or argument form raises :class:`SoxEffectError` naming it: never a silent
pass-through.

Tensors: ``apply_effects_tensor(tensor [C, S] (channels_first) or [S, C], sample_rate, effects)
-> (Tensor [C', S'], sample_rate')``.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import sys
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["SoxEffectError", "apply_effects_tensor", "apply_effects_file", "effect_names"]

_s3prl_distill_shim = True  # marks this module as s3prl_distill's stand-in (compat.is_shim)


class SoxEffectError(UserError):
    """An effect is not supported by this implementation, or its arguments are malformed."""


def _number(effect: str, value: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SoxEffectError(f"sox effect {effect!r}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SoxEffectError(f"sox effect {effect!r}: {what} must be finite, got {value!r}")
    return number


_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d*\.?\d+)$")


def _samples(effect: str, value: str, sr: int) -> int:
    """SoX time spec -> samples: ``1.5`` seconds, ``[hh:]mm:ss.frac``, or ``1200s`` samples."""
    text = str(value).strip()
    if text.endswith("s") and text[:-1].isdigit():
        return int(text[:-1])
    match = _TIME.match(text)
    if not match:
        raise SoxEffectError(
            f"sox effect {effect!r}: time {value!r} not supported (expected seconds such as 0.5, "
            f"[hh:]mm:ss, or a sample count such as 8000s; '=' / '-' / '@' positions are not "
            f"supported)")
    a, b, secs = match.groups()
    hours, minutes = (int(a), int(b)) if b is not None else (0, int(a) if a else 0)
    seconds = hours * 3600 + minutes * 60 + float(secs)
    return int(seconds * sr + 0.5)  # SoX rounds to the nearest sample


def _arity(effect: str, args: Sequence[str], allowed: Sequence[int]) -> None:
    if len(args) not in allowed:
        raise SoxEffectError(
            f"sox effect {effect!r}: expected {' or '.join(map(str, allowed))} argument(s), "
            f"got {list(args)}")


def _channels(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("channels", args, [1])
    n = int(_number("channels", args[0], "channel count"))
    if n < 1:
        raise SoxEffectError(f"sox effect 'channels': channel count must be >= 1, got {args[0]!r}")
    c = wav.shape[0]
    if n == c:
        return wav, sr
    if n == 1:
        return wav.mean(dim=0, keepdim=True), sr
    if c == 1:
        return wav.expand(n, -1).clone(), sr
    raise SoxEffectError(f"sox effect 'channels': {c} -> {n} channels is not supported "
                         f"(only down-mix to 1 or duplicate a mono input)")


def _rate(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("rate", args, [1])
    if args[0].startswith("-"):
        raise SoxEffectError(f"sox effect 'rate': quality options such as {args[0]!r} are not "
                             f"supported; give only the target rate")
    target = _number("rate", args[0].rstrip("kK"), "rate")
    target = int(round(target * (1000 if args[0][-1:] in "kK" else 1)))
    if target <= 0:
        raise SoxEffectError(f"sox effect 'rate': rate must be positive, got {args[0]!r}")
    from s3prl_distill.audio import resample

    return resample(wav, sr, target), target


def _gain(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("gain", args, [1])
    if args[0].startswith("-") and not re.match(r"^-\d*\.?\d+$", args[0]):
        raise SoxEffectError(f"sox effect 'gain': option {args[0]!r} is not supported; "
                             f"give only a gain in dB")
    db = _number("gain", args[0], "gain (dB)")
    return (wav * 10.0 ** (db / 20.0)).clamp(-1.0, 1.0), sr


def _norm(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("norm", args, [0, 1])
    db = _number("norm", args[0], "level (dB)") if args else 0.0
    peak = wav.abs().max() if wav.numel() else torch.tensor(0.0)
    if float(peak) == 0.0:
        return wav, sr
    return wav * (10.0 ** (db / 20.0) / peak), sr


def _reverse(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("reverse", args, [0])
    return wav.flip(-1), sr


def _pad(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("pad", args, [1, 2])
    before = _samples("pad", args[0], sr)
    after = _samples("pad", args[1], sr) if len(args) == 2 else 0
    return torch.nn.functional.pad(wav, (before, after)), sr


def _trim(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    _arity("trim", args, [1, 2])
    start = _samples("trim", args[0], sr)
    length = wav.shape[-1]
    if start > length:
        logger.warning("sox effect 'trim': start %s is past the end (%d samples)", args[0], length)
    end = length if len(args) == 1 else start + _samples("trim", args[1], sr)
    return wav[..., start:end], sr


def _threshold(value: str) -> float:
    text = str(value)
    if text.endswith("%"):
        return _number("silence", text[:-1], "threshold") / 100.0
    if text.endswith("d"):
        return 10.0 ** (_number("silence", text[:-1], "threshold") / 20.0)
    raise SoxEffectError(f"sox effect 'silence': threshold {value!r} must end in '%' or 'd' (dB)")


def _runs(flags: Tensor) -> List[Tuple[bool, int, int]]:
    """Run-length encoding of a bool vector [S] -> [(value, start, length)]."""
    if flags.numel() == 0:
        return []
    change = torch.nonzero(flags[1:] != flags[:-1]).flatten() + 1
    starts = [0] + change.tolist()
    ends = change.tolist() + [flags.numel()]
    return [(bool(flags[s]), s, e - s) for s, e in zip(starts, ends)]


def _silence(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    """SoX ``silence above_periods duration threshold [below_periods duration threshold]``.

    Loudness at a sample is the RMS over the preceding 20 ms (all channels, zeros before the start,
    as SoX's running window). In trim mode, audio is dropped until ``duration`` consecutive loud
    samples are found (a shorter burst is dropped too); those are kept and copying starts. With
    ``below_periods = -1``, while copying, a quiet stretch of at least ``duration2`` samples is
    dropped entirely and trim mode starts again; shorter quiet stretches are kept.
    """
    if args[:1] == ["-l"]:
        raise SoxEffectError("sox effect 'silence': option '-l' is not supported")
    _arity("silence", args, [3, 6])
    if args[0] != "1":
        raise SoxEffectError(f"sox effect 'silence': above_periods {args[0]!r} not supported "
                             f"(only 1)")
    start_dur = _samples("silence", args[1], sr)
    start_thr = _threshold(args[2])
    restart = len(args) == 6
    if restart:
        if args[3] != "-1":
            raise SoxEffectError(f"sox effect 'silence': below_periods {args[3]!r} not "
                                 f"supported (only -1)")
        stop_dur = _samples("silence", args[4], sr)
        stop_thr = _threshold(args[5])
    window = max(sr // 50, 1)
    power = wav.double().pow(2).mean(dim=0)  # [S]
    cumsum = torch.cat([power.new_zeros(1), power.cumsum(0)])
    idx = torch.arange(power.numel())
    lo = (idx + 1 - window).clamp(min=0)
    rms = ((cumsum[idx + 1] - cumsum[lo]).clamp(min=0) / window).sqrt()
    keep = torch.zeros(power.numel(), dtype=torch.bool)
    copying = False
    if not restart:
        loud_runs = _runs(rms > start_thr)
        for loud, start, length in loud_runs:
            if loud and length >= max(start_dur, 1):
                keep[start:] = True
                break
        return wav[:, keep], sr
    # both thresholds matter: loud for starting, quiet for stopping
    loud_start = rms > start_thr
    quiet_stop = rms <= stop_thr
    pos, total = 0, power.numel()
    while pos < total:
        if not copying:
            seg = loud_start[pos:]
            runs = _runs(seg)
            found = None
            for loud, start, length in runs:
                if loud and length >= max(start_dur, 1):
                    found = pos + start
                    break
            if found is None:
                break
            copying, pos = True, found
        else:
            runs = _runs(quiet_stop[pos:])
            stopped = False
            for quiet, start, length in runs:
                if quiet and length >= max(stop_dur, 1):
                    keep[pos : pos + start] = True
                    pos = pos + start + length
                    stopped = True
                    break
            if not stopped:
                keep[pos:] = True
                pos = total
            copying = False
    return wav[:, keep], sr


_VAD_OPTIONS = {"-t": "trigger_level", "-T": "trigger_time", "-s": "search_time",
                "-g": "allowed_gap", "-p": "pre_trigger_time", "-b": "boot_time",
                "-N": "noise_up_time", "-n": "noise_down_time", "-r": "noise_reduction_amount",
                "-f": "measure_freq", "-m": "measure_duration", "-M": "measure_smooth_time",
                "-h": "hp_filter_freq", "-l": "lp_filter_freq", "-H": "hp_lifter_freq",
                "-L": "lp_lifter_freq"}


def vad_kwargs(args: Sequence[str]) -> Dict[str, float]:
    """SoX ``vad`` options -> keyword arguments of ``torchaudio.functional.vad``."""
    if len(args) % 2:
        raise SoxEffectError(f"sox effect 'vad': options must come in pairs, got {list(args)}")
    kwargs = {}
    for flag, value in zip(args[0::2], args[1::2]):
        if flag not in _VAD_OPTIONS:
            raise SoxEffectError(f"sox effect 'vad': option {flag!r} not supported "
                                 f"(supported: {' '.join(_VAD_OPTIONS)})")
        kwargs[_VAD_OPTIONS[flag]] = _number("vad", value, flag)
    return kwargs


def _vad(wav: Tensor, sr: int, args: List[str]) -> Tuple[Tensor, int]:
    from s3prl_distill.compat.torchaudio_extension import ensure_torchaudio

    ensure_torchaudio()
    import torchaudio.functional as taf

    return taf.vad(wav, sr, **vad_kwargs(args)), sr


_EFFECTS: Dict[str, Callable[[Tensor, int, List[str]], Tuple[Tensor, int]]] = {
    "channels": _channels, "rate": _rate, "gain": _gain, "norm": _norm, "reverse": _reverse,
    "pad": _pad, "trim": _trim, "silence": _silence, "vad": _vad,
}


def effect_names() -> List[str]:
    """Names of the effects this implementation supports."""
    return sorted(_EFFECTS)


def _run_chain(wav: Tensor, sr: int, effects: Sequence[Sequence[str]]) -> Tuple[Tensor, int]:
    for effect in effects:
        if isinstance(effect, str) or not effect:
            raise SoxEffectError(f"each sox effect must be a non-empty list such as ['rate', "
                                 f"'16000'], got {effect!r}")
        name, args = str(effect[0]), [str(a) for a in effect[1:]]
        if name not in _EFFECTS:
            raise SoxEffectError(f"sox effect {name!r} is not supported by s3prl_distill's "
                                 f"soundfile-based sox_effects (supported: {', '.join(effect_names())})")
        wav, sr = _EFFECTS[name](wav, sr, args)
    return wav, sr


def apply_effects_tensor(tensor: Tensor, sample_rate: int, effects: Sequence[Sequence[str]],
                         channels_first: bool = True) -> Tuple[Tensor, int]:
    """Apply a SoX effect chain to ``tensor`` ([C, S] if ``channels_first`` else [S, C]).

    Returns:
        (Tensor [C', S'] (or [S', C']) float32, new sample rate).
    """
    if tensor.dim() != 2:
        raise SoxEffectError(f"apply_effects_tensor expects a 2-D tensor, got {tuple(tensor.shape)}")
    wav = tensor if channels_first else tensor.t()
    if not wav.is_floating_point():
        raise SoxEffectError(f"apply_effects_tensor expects a float tensor, got {wav.dtype}")
    out, sr = _run_chain(wav.float(), int(sample_rate), effects)
    out = out.float().contiguous()
    return (out if channels_first else out.t().contiguous()), int(sr)


def apply_effects_file(path, effects: Sequence[Sequence[str]], normalize: bool = True,
                       channels_first: bool = True, format=None) -> Tuple[Tensor, int]:
    """Read ``path`` (:func:`s3prl_distill.audio.read_samples`) and apply a SoX effect chain.

    ``format`` is accepted for torchaudio's signature; soundfile detects the format itself.

    Returns:
        (Tensor [C', S'] (or [S', C']), sample rate). float32 in [-1, 1] when ``normalize``; else
        int32 on SoX's internal scale (sample * 2^31), as torchaudio did.

    Raises:
        RuntimeError: the file is missing or unreadable (torchaudio's error type; names the file).
    """
    from s3prl_distill.audio import AudioError, read_samples

    try:
        samples, sr = read_samples(os.fspath(path) if isinstance(path, os.PathLike) else path)
    except AudioError as err:
        raise RuntimeError(str(err)) from err
    out, sr = _run_chain(samples.t().contiguous(), sr, effects)  # [C, S]
    out = out.float().contiguous()
    if not normalize:
        out = (out.double() * 2**31).clamp(-2**31, 2**31 - 1).to(torch.int32)
    return (out if channels_first else out.t().contiguous()), int(sr)


def patch(torchaudio_module) -> List[str]:
    """Install this module as ``<torchaudio>.sox_effects`` if torchaudio has none that imports.

    Idempotent. Returns ``["torchaudio.sox_effects"]`` if this call installed it, else ``[]``.
    """
    if hasattr(torchaudio_module, "sox_effects"):
        return []
    name = torchaudio_module.__name__ + ".sox_effects"
    try:
        importlib.import_module(name)
        return []
    except Exception:  # ImportError, or OSError/RuntimeError of a missing libsox
        pass
    ours = sys.modules[__name__]
    sys.modules[name] = ours
    torchaudio_module.sox_effects = ours
    return ["torchaudio.sox_effects"]
