"""Make S3PRL 0.4.18 import and run on current torch / torchaudio / numpy / huggingface_hub.

Every shim here is applied at most once, is idempotent, and is a no-op where the real API exists.

This module starts with the one shim the whole package needs at import time:
:func:`ensure_torchaudio` makes ``import torchaudio`` work when its compiled extension cannot be
loaded (the PyPI torchaudio >= 2.9 links CUDA libraries that a CPU-only torch lacks). Its
pure-Python parts (``models``, ``compliance.kaldi``, ``functional.resample``, transforms) keep
working; only ops that need the extension are unavailable.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

_TORCHAUDIO_STUBBED = False


def _extension_stub() -> types.ModuleType:
    """A stand-in for ``torchaudio._extension`` that reports the extension as unavailable."""
    stub = types.ModuleType("torchaudio._extension")

    def _fail(*_args, **_kwargs):
        raise RuntimeError(
            "this torchaudio operation needs torchaudio's compiled extension, which cannot be "
            "loaded beside this torch build (s3prl_distill.compat stubbed it)"
        )

    def fail_if_no_align(func):
        def wrapped(*args, **kwargs):
            _fail()

        return wrapped

    stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
    stub._IS_ALIGN_AVAILABLE = False
    stub.fail_if_no_align = fail_if_no_align
    stub._check_cuda_version = lambda: None
    stub._load_lib = lambda lib: False
    stub._init_dll_path = lambda: None
    stub.__all__ = ["_check_cuda_version", "_IS_TORCHAUDIO_EXT_AVAILABLE"]
    return stub


def ensure_torchaudio() -> bool:
    """Import torchaudio, stubbing its compiled extension if it cannot be loaded.

    Returns:
        ``True`` if the real extension loaded (nothing was changed), ``False`` if it was stubbed.
    """
    global _TORCHAUDIO_STUBBED
    if "torchaudio" in sys.modules and hasattr(sys.modules["torchaudio"], "models"):
        return not _TORCHAUDIO_STUBBED
    try:
        importlib.import_module("torchaudio")
        return True
    except OSError as err:
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio._extension"] = _extension_stub()
        importlib.import_module("torchaudio")
        _TORCHAUDIO_STUBBED = True
        logger.debug("torchaudio's compiled extension could not be loaded (%s); stubbed it", err)
        return False


def torchaudio_extension_stubbed() -> bool:
    """Whether :func:`ensure_torchaudio` had to stub torchaudio's compiled extension."""
    return _TORCHAUDIO_STUBBED


# --------------------------------------------------------------------------------------------
# apply(): every shim S3PRL 0.4.18 needs on current torch / torchaudio / numpy / huggingface_hub
# --------------------------------------------------------------------------------------------

_APPLIED: List[str] = []
_APPLY_DONE = False
_SHIM_FLAG = "_s3prl_distill_shim"


def _mark(func):
    setattr(func, _SHIM_FLAG, True)
    return func


def is_shim(obj) -> bool:
    """Whether ``obj`` is one of this module's stand-ins (not the library's own API)."""
    return bool(getattr(obj, _SHIM_FLAG, False))


def apply() -> List[str]:
    """Install every shim that is needed here; idempotent; a no-op where the real API exists.

    Returns:
        Names of the shims installed (by this call or an earlier one), e.g. ``["torchaudio.load",
        "torchaudio.sox_effects", "huggingface_hub.HfFolder", "torch.safe_globals"]``.
    """
    global _APPLY_DONE
    if _APPLY_DONE:
        return list(_APPLIED)
    ensure_torchaudio()
    import torchaudio

    for name in patch_torchaudio(torchaudio):
        _APPLIED.append(name)
    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover - s3prl depends on it
        huggingface_hub = None
    if huggingface_hub is not None:
        _APPLIED.extend(patch_huggingface_hub(huggingface_hub))
    import numpy

    _APPLIED.extend(patch_numpy(numpy))
    _APPLIED.extend(allow_s3prl_checkpoints())
    _APPLY_DONE = True
    if _APPLIED:
        logger.debug("s3prl_distill.compat applied: %s", ", ".join(_APPLIED))
    return list(_APPLIED)


# ----------------------------------------- torchaudio I/O -----------------------------------

_AUDIO_BACKEND: Dict[str, Optional[str]] = {"name": "soundfile"}
_KNOWN_BACKENDS = ("soundfile", "sox_io", "sox", "ffmpeg")


def torchcodec_usable() -> bool:
    """Whether torchaudio's own ``load``/``save`` (through torchcodec, torchaudio >= 2.9) can work."""
    try:
        importlib.import_module("torchcodec")
        importlib.import_module("torchcodec.decoders")
        importlib.import_module("torchcodec.encoders")
    except Exception:  # ImportError, OSError (missing CUDA/FFmpeg libraries), RuntimeError
        return False
    return True


def _needs_io_shim(torchaudio_module) -> bool:
    load = getattr(torchaudio_module, "load", None)
    if load is None or is_shim(load):
        return load is None
    uses_torchcodec = hasattr(torchaudio_module, "load_with_torchcodec")
    return uses_torchcodec and not torchcodec_usable()


class AudioMetaData:
    """What ``torchaudio.info`` returned before torchaudio 2.9 (sox_io/soundfile backends)."""

    def __init__(self, sample_rate: int, num_frames: int, num_channels: int,
                 bits_per_sample: int, encoding: str):
        self.sample_rate = sample_rate
        self.num_frames = num_frames
        self.num_channels = num_channels
        self.bits_per_sample = bits_per_sample
        self.encoding = encoding

    def __repr__(self) -> str:
        return (f"AudioMetaData(sample_rate={self.sample_rate}, num_frames={self.num_frames}, "
                f"num_channels={self.num_channels}, bits_per_sample={self.bits_per_sample}, "
                f"encoding={self.encoding})")


# soundfile subtype -> (torchaudio encoding, bits per sample, integer dtype for normalize=False)
_SUBTYPES = {
    "PCM_S8": ("PCM_S", 8, "int16"),
    "PCM_U8": ("PCM_U", 8, "int16"),
    "PCM_16": ("PCM_S", 16, "int16"),
    "PCM_24": ("PCM_S", 24, "int32"),
    "PCM_32": ("PCM_S", 32, "int32"),
    "FLOAT": ("PCM_F", 32, None),
    "DOUBLE": ("PCM_F", 64, None),
    "ULAW": ("ULAW", 8, None),
    "ALAW": ("ALAW", 8, None),
}


def _source_name(uri) -> str:
    return os.fspath(uri) if isinstance(uri, (str, os.PathLike)) else repr(uri)


def _sf_open_error(uri, err: Exception) -> RuntimeError:
    return RuntimeError(f"{_source_name(uri)}: cannot read audio through soundfile: {err}")


@_mark
def ta_info(uri, format: Optional[str] = None, buffer_size: int = 4096,
            backend: Optional[str] = None) -> AudioMetaData:
    """``torchaudio.info`` through soundfile (header only)."""
    import soundfile as sf

    if isinstance(uri, (str, os.PathLike)) and not os.path.isfile(uri):
        raise RuntimeError(f"{_source_name(uri)}: audio file not found")
    try:
        info = sf.info(uri if not isinstance(uri, os.PathLike) else os.fspath(uri))
    except Exception as err:
        raise _sf_open_error(uri, err) from err
    encoding, bits, _ = _SUBTYPES.get(info.subtype, ("UNKNOWN", 0, None))
    if info.format == "FLAC":
        encoding = "FLAC"
    return AudioMetaData(int(info.samplerate), int(info.frames), int(info.channels), bits, encoding)


@_mark
def ta_load(uri, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
            channels_first: bool = True, format: Optional[str] = None, buffer_size: int = 4096,
            backend: Optional[str] = None) -> Tuple["torch.Tensor", int]:
    """``torchaudio.load`` through soundfile.

    Returns:
        (waveform, sample_rate): [C, S] (``channels_first``) or [S, C]; float32 in [-1, 1] when
        ``normalize``, else the file's integer type (int16 for 16-bit, int32 for 24/32-bit PCM;
        float files stay float32), as torchaudio's sox/soundfile backends did.
    """
    import soundfile as sf
    import torch

    source = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    if isinstance(source, str) and not os.path.isfile(source):
        raise RuntimeError(f"{source}: audio file not found")
    dtype, subtype = "float32", None
    if not normalize:
        try:
            subtype = sf.info(source).subtype
            if hasattr(source, "seek"):
                source.seek(0)
        except Exception as err:
            raise _sf_open_error(uri, err) from err
        dtype = _SUBTYPES.get(subtype, (None, None, None))[2] or "float32"
    try:
        data, sr = sf.read(source, frames=num_frames, start=frame_offset, dtype=dtype,
                           always_2d=True, format=format)
    except Exception as err:
        raise _sf_open_error(uri, err) from err
    wav = torch.from_numpy(data.copy())  # [S, C]
    if not normalize and subtype == "PCM_U8":  # unsigned 8-bit comes back as uint8, as before
        wav = (wav.to(torch.int32) // 256 + 128).to(torch.uint8)
    return (wav.t().contiguous() if channels_first else wav), int(sr)


_SAVE_ENCODINGS = {
    ("PCM_S", 8): "PCM_S8", ("PCM_S", 16): "PCM_16", ("PCM_S", 24): "PCM_24",
    ("PCM_S", 32): "PCM_32", ("PCM_U", 8): "PCM_U8", ("PCM_F", 32): "FLOAT",
    ("PCM_F", 64): "DOUBLE", ("ULAW", 8): "ULAW", ("ALAW", 8): "ALAW",
}


@_mark
def ta_save(uri, src, sample_rate: int, channels_first: bool = True,
            format: Optional[str] = None, encoding: Optional[str] = None,
            bits_per_sample: Optional[int] = None, buffer_size: int = 4096,
            backend: Optional[str] = None, compression=None) -> None:
    """``torchaudio.save`` through soundfile.

    ``src`` is [C, S] (``channels_first``) or [S, C]. Without ``encoding``/``bits_per_sample`` a
    WAV takes the tensor's type (float32 -> 32-bit float, int16 -> 16-bit, int32 -> 32-bit PCM)
    and FLAC 24-bit (float input) or 16-bit (int16 input), as torchaudio's sox backend did.
    """
    import soundfile as sf
    import torch

    if src.dim() != 2:
        raise ValueError(f"torchaudio.save expects a 2-D tensor ([C, S]), got shape {tuple(src.shape)}")
    data = (src.t() if channels_first else src).detach().cpu()
    target = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    fmt = format
    if fmt is None and isinstance(target, str):
        fmt = os.path.splitext(target)[1].lstrip(".")
    fmt = (fmt or "wav").upper()
    if encoding is not None or bits_per_sample is not None:
        if encoding is None:  # torchaudio's rule: float stays float at 32/64 bits
            floaty = data.is_floating_point() and bits_per_sample in (32, 64)
            enc = "PCM_F" if floaty else ("PCM_U" if bits_per_sample == 8 else "PCM_S")
        else:
            enc = encoding.upper()
        bits = bits_per_sample or {"PCM_F": 32, "ULAW": 8, "ALAW": 8, "PCM_U": 8}.get(enc, 16)
        if (enc, bits) not in _SAVE_ENCODINGS:
            raise ValueError(
                f"torchaudio.save: unsupported encoding/bits_per_sample {encoding!r}/{bits_per_sample!r}; "
                f"supported: {sorted(_SAVE_ENCODINGS)}")
        subtype = _SAVE_ENCODINGS[(enc, bits)]
    elif data.dtype == torch.int16:
        subtype = "PCM_16"
    elif data.dtype == torch.int32:
        subtype = "PCM_32" if fmt != "FLAC" else "PCM_24"
    elif data.dtype == torch.uint8:
        subtype = "PCM_U8"
        data = (data.to(torch.int16) - 128) * 256  # soundfile scales int16 to 8 bits
    else:
        subtype = "FLOAT" if fmt == "WAV" else ("PCM_24" if fmt == "FLAC" else None)
    array = data.numpy() if not data.is_floating_point() else data.float().numpy()
    if isinstance(target, str):
        folder = os.path.dirname(os.path.abspath(target))
        os.makedirs(folder, exist_ok=True)
    try:
        sf.write(target, array, int(sample_rate), subtype=subtype, format=fmt)
    except Exception as err:
        raise RuntimeError(f"{_source_name(uri)}: cannot write audio through soundfile: {err}") from err


@_mark
def ta_load_wav(uri, frame_offset: int = 0, num_frames: int = -1, channels_first: bool = True,
                **_ignored) -> Tuple["torch.Tensor", int]:
    """torchaudio 0.x ``load_wav``: float32 samples on the 16-bit integer scale ([-32768, 32767])."""
    wav, sr = ta_load(uri, frame_offset, num_frames, True, channels_first)
    return wav * 32768.0, sr


@_mark
def set_audio_backend(backend: Optional[str]) -> None:
    """Old torchaudio backend switch: every name maps to soundfile here (logged at DEBUG)."""
    if backend is not None and backend not in _KNOWN_BACKENDS:
        raise RuntimeError(f"torchaudio.set_audio_backend: unknown backend {backend!r}; "
                           f"expected one of {_KNOWN_BACKENDS} or None")
    logger.debug("torchaudio.set_audio_backend(%r): audio I/O goes through soundfile", backend)
    _AUDIO_BACKEND["name"] = backend


@_mark
def get_audio_backend() -> Optional[str]:
    """The name last given to :func:`set_audio_backend` (``"soundfile"`` by default)."""
    return _AUDIO_BACKEND["name"]


@_mark
def list_audio_backends() -> List[str]:
    return ["soundfile"]


def patch_torchaudio(torchaudio_module) -> List[str]:
    """Put the I/O, backend and sox-effects stand-ins on ``torchaudio_module`` where needed."""
    applied = []
    if _needs_io_shim(torchaudio_module):
        torchaudio_module.load = ta_load
        torchaudio_module.save = ta_save
        applied += ["torchaudio.load", "torchaudio.save"]
    for name, func in (("info", ta_info), ("load_wav", ta_load_wav),
                       ("set_audio_backend", set_audio_backend),
                       ("get_audio_backend", get_audio_backend),
                       ("list_audio_backends", list_audio_backends)):
        if not hasattr(torchaudio_module, name):
            setattr(torchaudio_module, name, func)
            applied.append(f"torchaudio.{name}")
    if not hasattr(torchaudio_module, "sox_effects"):
        try:
            importlib.import_module(torchaudio_module.__name__ + ".sox_effects")
        except Exception:
            from s3prl_distill import sox_effects as ours

            sys.modules[torchaudio_module.__name__ + ".sox_effects"] = ours
            torchaudio_module.sox_effects = ours
            applied.append("torchaudio.sox_effects")
    return applied


# ------------------------------------------- huggingface_hub --------------------------------


class HfFolder:
    """Stand-in for ``huggingface_hub.HfFolder`` (removed in huggingface_hub 1.0)."""

    @staticmethod
    def get_token() -> Optional[str]:
        import huggingface_hub

        return huggingface_hub.get_token()

    @staticmethod
    def save_token(token: str) -> None:
        from huggingface_hub import constants

        path = constants.HF_TOKEN_PATH
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(token)

    @staticmethod
    def delete_token() -> None:
        from huggingface_hub import constants

        if os.path.exists(constants.HF_TOKEN_PATH):
            os.unlink(constants.HF_TOKEN_PATH)


setattr(HfFolder, _SHIM_FLAG, True)


class Repository:
    """Stand-in for ``huggingface_hub.Repository`` (removed in huggingface_hub 1.0).

    Importing it works (S3PRL imports it at module level); using it raises, because S3PRL uses it
    only to push experiments to the hub, which needs the git-based API that no longer exists.
    """

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "huggingface_hub.Repository was removed in huggingface_hub 1.0; S3PRL's "
            "--push_to_hf_hub needs it. Install huggingface_hub<1.0 to push experiments.")


setattr(Repository, _SHIM_FLAG, True)


def patch_huggingface_hub(hub_module) -> List[str]:
    """Add ``HfFolder`` / ``Repository`` to ``hub_module`` if they are missing."""
    applied = []
    for name, obj in (("HfFolder", HfFolder), ("Repository", Repository)):
        try:
            getattr(hub_module, name)
        except (AttributeError, ImportError):
            setattr(hub_module, name, obj)
            applied.append(f"huggingface_hub.{name}")
    return applied


# ----------------------------------------------- numpy --------------------------------------

# aliases removed in numpy 1.24/2.0 that S3PRL 0.4.18 still uses (np.int in wav2vec2/wavlm
# masking, np.complex in utility/audio.py); only these, only when missing
_NUMPY_ALIASES = {"int": int, "complex": complex}


def patch_numpy(numpy_module) -> List[str]:
    applied = []
    for name, obj in _NUMPY_ALIASES.items():
        try:
            getattr(numpy_module, name)
        except AttributeError:
            setattr(numpy_module, name, obj)
            applied.append(f"numpy.{name}")
    return applied


# ------------------------------------- weights_only checkpoints -----------------------------

# What S3PRL's runners pickle into their checkpoints beyond tensors and plain data:
# "Args" (argparse.Namespace) and, in optimizer param_groups of BertAdam/Lamb, a "schedule"
# object from S3PRL's optimizers module (imported as `optimizers` by run_pretrain and as
# `s3prl.optimizers` by run_downstream).
_S3PRL_SCHEDULES = ("ConstantLR", "WarmupCosineSchedule", "WarmupCosineWithHardRestartsSchedule",
                    "WarmupCosineWithWarmupRestartsSchedule", "WarmupConstantSchedule",
                    "WarmupLinearSchedule")


def s3prl_safe_globals() -> List[Tuple[object, str]]:
    """(object, pickled name) pairs S3PRL's own checkpoints need under ``weights_only=True``."""
    import argparse

    pairs: List[Tuple[object, str]] = [(argparse.Namespace, "argparse.Namespace")]
    try:
        optimizers = importlib.import_module("s3prl.optimizers")
    except Exception as err:  # pragma: no cover - s3prl is a dependency
        logger.warning("s3prl.optimizers not importable (%s); its schedules stay disallowed", err)
        return pairs
    for name in _S3PRL_SCHEDULES:
        cls = getattr(optimizers, name, None)
        if cls is not None:
            pairs.append((cls, f"s3prl.optimizers.{name}"))
            pairs.append((cls, f"optimizers.{name}"))
    return pairs


def allow_s3prl_checkpoints() -> List[str]:
    """Allow exactly :func:`s3prl_safe_globals` in ``weights_only`` loading (never disables it)."""
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4 loads with weights_only=False by default
        return []
    known = {name for _, name in _safe_global_names(torch)}
    pairs = [pair for pair in s3prl_safe_globals() if pair[1] not in known]
    if not pairs:
        return []
    add(pairs)
    return ["torch.safe_globals"]


def _safe_global_names(torch_module) -> List[Tuple[object, str]]:
    out = []
    for item in torch_module.serialization.get_safe_globals():
        if isinstance(item, tuple):
            out.append(item)
        else:
            out.append((item, f"{item.__module__}.{item.__qualname__}"))
    return out
