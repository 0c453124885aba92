"""torchaudio's audio I/O API as S3PRL 0.4.18 calls it, on top of :mod:`s3prl_distill.audio`.

torchaudio >= 2.9 removed ``info``, ``load_wav`` and the backend switches, and its ``load``/``save``
need torchcodec (which fails to load beside a CPU-only torch). :func:`patch` puts stand-ins on
torchaudio where the real API is missing or unusable; where it works, nothing is changed.

* ``torchaudio.load`` reads through :func:`s3prl_distill.audio.read_samples`, the package's one
  audio reader; errors stay ``RuntimeError`` (what S3PRL expects from torchaudio) and name the file;
* ``torchaudio.info`` reads the header through soundfile (no samples decoded);
* ``torchaudio.save`` writes through soundfile with torchaudio's default encodings.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Dict, List, Optional, Tuple

from s3prl_distill.compat._shim import is_shim, mark

logger = logging.getLogger(__name__)

__all__ = ["AudioMetaData", "ta_info", "ta_load", "ta_save", "ta_load_wav", "set_audio_backend",
           "get_audio_backend", "list_audio_backends", "torchcodec_usable", "patch"]

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


def _header(uri):
    """soundfile's header info of a path or file object (rewound afterwards); RuntimeError if unreadable."""
    import soundfile as sf

    source = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    if isinstance(source, str) and not os.path.isfile(source):
        raise RuntimeError(f"{source}: audio file not found")
    try:
        info = sf.info(source)
    except Exception as err:
        raise RuntimeError(f"{_source_name(uri)}: cannot read audio through soundfile: {err}") from err
    if hasattr(source, "seek"):
        source.seek(0)
    return info


@mark
def ta_info(uri, format: Optional[str] = None, buffer_size: int = 4096,
            backend: Optional[str] = None) -> AudioMetaData:
    """``torchaudio.info`` through soundfile (header only)."""
    info = _header(uri)
    encoding, bits, _ = _SUBTYPES.get(info.subtype, ("UNKNOWN", 0, None))
    if info.format == "FLAC":
        encoding = "FLAC"
    return AudioMetaData(int(info.samplerate), int(info.frames), int(info.channels), bits, encoding)


@mark
def ta_load(uri, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
            channels_first: bool = True, format: Optional[str] = None, buffer_size: int = 4096,
            backend: Optional[str] = None) -> Tuple["torch.Tensor", int]:
    """``torchaudio.load`` through :func:`s3prl_distill.audio.read_samples`.

    ``format`` is accepted for torchaudio's signature; soundfile detects the format itself.

    Returns:
        (waveform, sample_rate): [C, S] (``channels_first``) or [S, C]; float32 in [-1, 1] when
        ``normalize``, else the file's integer type (int16 for 16-bit, int32 for 24/32-bit PCM;
        float files stay float32), as torchaudio's sox/soundfile backends did.
    """
    import torch

    from s3prl_distill.audio import AudioError, read_samples

    source = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    dtype, subtype = "float32", None
    if not normalize:
        subtype = _header(source).subtype
        dtype = _SUBTYPES.get(subtype, (None, None, None))[2] or "float32"
    try:
        wav, sr = read_samples(source, offset=frame_offset, num_frames=num_frames, dtype=dtype)
    except AudioError as err:  # torchaudio raised RuntimeError; S3PRL's code expects that
        raise RuntimeError(str(err)) from err
    if not normalize and subtype == "PCM_U8":  # unsigned 8-bit comes back as uint8, as before
        wav = (wav.to(torch.int32) // 256 + 128).to(torch.uint8)
    return (wav.t().contiguous() if channels_first else wav), int(sr)


_SAVE_ENCODINGS = {
    ("PCM_S", 8): "PCM_S8", ("PCM_S", 16): "PCM_16", ("PCM_S", 24): "PCM_24",
    ("PCM_S", 32): "PCM_32", ("PCM_U", 8): "PCM_U8", ("PCM_F", 32): "FLOAT",
    ("PCM_F", 64): "DOUBLE", ("ULAW", 8): "ULAW", ("ALAW", 8): "ALAW",
}


@mark
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


@mark
def ta_load_wav(uri, frame_offset: int = 0, num_frames: int = -1, channels_first: bool = True,
                **_ignored) -> Tuple["torch.Tensor", int]:
    """torchaudio 0.x ``load_wav``: float32 samples on the 16-bit integer scale ([-32768, 32767])."""
    wav, sr = ta_load(uri, frame_offset, num_frames, True, channels_first)
    return wav * 32768.0, sr


@mark
def set_audio_backend(backend: Optional[str]) -> None:
    """Old torchaudio backend switch: every name maps to soundfile here (logged at DEBUG)."""
    if backend is not None and backend not in _KNOWN_BACKENDS:
        raise RuntimeError(f"torchaudio.set_audio_backend: unknown backend {backend!r}; "
                           f"expected one of {_KNOWN_BACKENDS} or None")
    logger.debug("torchaudio.set_audio_backend(%r): audio I/O goes through soundfile", backend)
    _AUDIO_BACKEND["name"] = backend


@mark
def get_audio_backend() -> Optional[str]:
    """The name last given to :func:`set_audio_backend` (``"soundfile"`` by default)."""
    return _AUDIO_BACKEND["name"]


@mark
def list_audio_backends() -> List[str]:
    return ["soundfile"]


def patch(torchaudio_module) -> List[str]:
    """Put the I/O and backend stand-ins on ``torchaudio_module`` where needed; idempotent.

    Returns:
        Names installed by this call, e.g. ``["torchaudio.load", "torchaudio.save", ...]``.
    """
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
    return applied
