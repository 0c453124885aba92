"""On-disk cache of teacher hidden states for multi-epoch distillation.

The teacher is frozen, so its targets for an utterance are the same every epoch (when the
utterance is not randomly cropped differently). Computing them once and reading them back removes
the teacher's forward pass - more than half of a DistilHuBERT step - from every later epoch.

Format (a folder):

* ``index.json``: ``{"format": "s3prl_distill.teacher_cache", "version": 1, "layers": [4, 8, 12],
  "dim": 768, "dtype": "float16", "rate": 320, "teacher": {...}, "entries": {id: {"shard": name,
  "frames": T, "samples": S}}}``
* ``shard-00000.safetensors`` ...: tensors ``"<id>"`` of shape ``[len(layers), T, D]`` (the
  teacher's ``hidden_states[k]`` for every cached layer ``k``, valid frames only), read lazily
  through memory mapping.

Size: ``50 frames/s x 3600 s x D x len(layers) x bytes``; HuBERT Base (D = 768) in float16 needs
0.83 GB per hour of audio for DistilHuBERT's 3 layers and 3.3 GB for FitHuBERT's 12. float16
targets differ from float32 ones by about 1e-3 relative (``dtype="float32"`` keeps them exact).

Use (how a data pipeline wires it)::

    write_teacher_cache(folder, teacher, ids, wavs, layers=student.target_layers)  # once
    cache = TeacherCache(folder)
    targets, lengths = cache.batch_targets(batch_ids)   # J x [B, T, D] float32, [B]
    # ... instead of DistillationTask.teacher_targets(wavs, wav_lengths)

Utterances must be cached uncropped and fed uncropped (or the crop must be deterministic and the
same as when cached); :meth:`TeacherCache.check_utterance` verifies the sample count.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["TeacherCache", "TeacherCacheError", "write_teacher_cache", "FORMAT", "VERSION"]

FORMAT = "s3prl_distill.teacher_cache"
VERSION = 1
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class TeacherCacheError(ValueError):
    """A cache folder is missing, malformed, or does not hold what was asked for."""


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise TeacherCacheError(f"teacher cache dtype must be one of {sorted(_DTYPES)}, got {dtype}")


def write_teacher_cache(
    folder: str,
    teacher: torch.nn.Module,
    ids: Sequence[str],
    wavs: Sequence[Tensor],
    layers: Sequence[int],
    batch_size: int = 8,
    dtype: torch.dtype = torch.float16,
    shard_bytes: int = 256 * 2**20,
) -> Dict[str, Any]:
    """Run ``teacher`` over every utterance and store ``hidden_states[k]`` for ``k`` in ``layers``.

    Args:
        folder: output folder (created; an existing cache there is replaced).
        teacher: a frozen :class:`~s3prl_distill.teachers.base.Teacher`
            (``forward(wavs [B, S], wav_lengths [B]) -> TeacherOutput``).
        ids: one unique key per utterance (e.g. its path relative to the corpus root).
        wavs: 1-D float tensors ``[S_i]``, 16 kHz, as the training pipeline will feed them.
        layers: teacher layers to keep (the student's ``target_layers``).
        batch_size: utterances per teacher call (sorted by length to avoid padding).
        dtype: storage type (float16 halves the size).
        shard_bytes: approximate shard file size.

    Returns:
        the index (also written to ``folder/index.json``).

    Raises:
        TeacherCacheError: duplicate ids, mismatched lists, bad layers or shapes.
    """
    from safetensors.torch import save_file

    from s3prl_distill.io import atomic_write_text

    if len(ids) != len(wavs):
        raise TeacherCacheError(f"{folder}: {len(ids)} ids but {len(wavs)} waveforms")
    if len(set(ids)) != len(ids):
        raise TeacherCacheError(f"{folder}: utterance ids must be unique")
    layers = [int(k) for k in layers]
    num_layers = int(getattr(teacher, "num_layers", max(layers)))
    bad = [k for k in layers if not 0 <= k <= num_layers]
    if not layers or bad:
        raise TeacherCacheError(f"{folder}: layers {layers} must lie in 0..{num_layers}")
    dtype_name = _dtype_name(dtype)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith("shard-") and name.endswith(".safetensors"):
            os.unlink(os.path.join(folder, name))
    order = sorted(range(len(ids)), key=lambda i: -int(wavs[i].shape[-1]))
    entries: Dict[str, Dict[str, Any]] = {}
    shard: Dict[str, Tensor] = {}
    shard_size, shard_no, dim = 0, 0, None

    def flush():
        nonlocal shard, shard_size, shard_no
        if shard:
            name = f"shard-{shard_no:05d}.safetensors"
            save_file(shard, os.path.join(folder, name))
            shard_no += 1
            shard, shard_size = {}, 0

    for start in range(0, len(order), max(1, batch_size)):
        chunk = order[start:start + batch_size]
        lengths = torch.tensor([int(wavs[i].shape[-1]) for i in chunk], dtype=torch.long)
        batch = torch.zeros(len(chunk), int(lengths.max()))
        for row, i in enumerate(chunk):
            if wavs[i].dim() != 1:
                raise TeacherCacheError(f"{folder}: waveform of {ids[i]!r} must be 1-D, got {tuple(wavs[i].shape)}")
            batch[row, : lengths[row]] = wavs[i].float()
        with torch.inference_mode():
            out = teacher(batch, lengths)
        for row, i in enumerate(chunk):
            frames = int(out.lengths[row])
            stacked = torch.stack([out.hidden_states[k][row, :frames] for k in layers]).to(dtype)
            dim = int(stacked.shape[-1])
            shard[ids[i]] = stacked.contiguous()
            shard_size += stacked.numel() * stacked.element_size()
            entries[ids[i]] = {"shard": f"shard-{shard_no:05d}.safetensors", "frames": frames,
                               "samples": int(lengths[row])}
            if shard_size >= shard_bytes:
                flush()
    flush()
    describe = getattr(teacher, "describe", None)
    index = {
        "format": FORMAT,
        "version": VERSION,
        "layers": layers,
        "dim": dim,
        "dtype": dtype_name,
        "rate": int(getattr(teacher, "downsample_rate", 320)),
        "teacher": describe() if callable(describe) else {"class": type(teacher).__name__},
        "entries": entries,
    }
    atomic_write_text(json.dumps(index, indent=1, default=str), os.path.join(folder, "index.json"))
    logger.info("cached teacher layers %s of %d utterances in %s", layers, len(entries), folder)
    return index


class TeacherCache:
    """Read access to a cache written by :func:`write_teacher_cache`.

    Raises:
        TeacherCacheError: naming the folder when the index is missing or not this format.
    """

    def __init__(self, folder: str):
        self.folder = os.fspath(folder)
        path = os.path.join(self.folder, "index.json")
        if not os.path.isfile(path):
            raise TeacherCacheError(f"{self.folder}: not a teacher cache (no index.json)")
        try:
            with open(path, "r", encoding="utf-8") as handle:
                index = json.load(handle)
        except (OSError, json.JSONDecodeError) as err:
            raise TeacherCacheError(f"{path}: unreadable index: {err}") from err
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise TeacherCacheError(
                f"{path}: expected format {FORMAT!r} version {VERSION}, got "
                f"{index.get('format')!r} version {index.get('version')!r}"
            )
        self.index = index
        self.layers: List[int] = [int(k) for k in index["layers"]]
        self.dim: int = int(index["dim"] or 0)
        self.dtype: str = index["dtype"]
        self._entries: Dict[str, Dict[str, Any]] = index["entries"]
        self._handles: Dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._entries

    def check_layers(self, layers: Sequence[int]) -> None:
        """Raise unless every layer in ``layers`` is cached."""
        missing = [int(k) for k in layers if int(k) not in self.layers]
        if missing:
            raise TeacherCacheError(f"{self.folder}: layers {missing} are not cached (cached: {self.layers})")

    def check_utterance(self, utt_id: str, samples: int) -> None:
        """Raise unless ``utt_id`` was cached from exactly ``samples`` samples."""
        entry = self._entry(utt_id)
        if int(entry["samples"]) != int(samples):
            raise TeacherCacheError(
                f"{self.folder}: {utt_id!r} was cached from {entry['samples']} samples but is fed "
                f"with {samples}: crop deterministically or cache the cropped audio"
            )

    def _entry(self, utt_id: str) -> Dict[str, Any]:
        try:
            return self._entries[utt_id]
        except KeyError:
            raise TeacherCacheError(f"{self.folder}: utterance {utt_id!r} is not cached") from None

    def _open(self, shard: str):
        from safetensors import safe_open

        if shard not in self._handles:
            path = os.path.join(self.folder, shard)
            if not os.path.isfile(path):
                raise TeacherCacheError(f"{self.folder}: shard {shard} listed in the index is missing")
            self._handles[shard] = safe_open(path, framework="pt", device="cpu")
        return self._handles[shard]

    def targets(self, utt_id: str, layers: Optional[Sequence[int]] = None) -> List[Tensor]:
        """Cached states of one utterance: one ``[T, D]`` float32 tensor per layer."""
        entry = self._entry(utt_id)
        stacked = self._open(entry["shard"]).get_tensor(utt_id)
        picks = self.layers if layers is None else [int(k) for k in layers]
        self.check_layers(picks)
        return [stacked[self.layers.index(k)].float() for k in picks]

    def batch_targets(self, utt_ids: Sequence[str], layers: Optional[Sequence[int]] = None
                      ) -> Tuple[List[Tensor], Tensor]:
        """Targets of a batch, as ``DistillationTask.teacher_targets`` returns them.

        Returns:
            (J tensors ``[B, T_max, D]`` float32 zero-padded, lengths ``[B]`` int64).
        """
        per_utt = [self.targets(u, layers) for u in utt_ids]
        lengths = torch.tensor([p[0].shape[0] for p in per_utt], dtype=torch.long)
        frames = int(lengths.max()) if len(per_utt) else 0
        out = []
        for j in range(len(per_utt[0]) if per_utt else 0):
            batch = torch.zeros(len(per_utt), frames, per_utt[0][j].shape[-1])
            for i, p in enumerate(per_utt):
                batch[i, : p[j].shape[0]] = p[j]
            out.append(batch)
        return out, lengths

    def describe(self) -> Dict[str, Any]:
        """Format, size on disk, audio covered and bytes per hour of audio."""
        size = sum(
            os.path.getsize(os.path.join(self.folder, f))
            for f in os.listdir(self.folder) if f.endswith(".safetensors")
        )
        seconds = sum(int(e["samples"]) for e in self._entries.values()) / 16000.0
        bytes_per_element = torch.tensor([], dtype=_DTYPES[self.dtype]).element_size()
        frames_per_hour = 3600.0 * 16000.0 / float(self.index.get("rate", 320))
        return {
            "format": f"{FORMAT} v{VERSION} (safetensors shards + index.json)",
            "utterances": len(self),
            "layers": len(self.layers),
            "dim": self.dim,
            "dtype": self.dtype,
            "bytes": size,
            "audio_seconds": round(seconds, 2),
            "bytes_per_audio_hour": int(frames_per_hour * self.dim * len(self.layers) * bytes_per_element),
        }
