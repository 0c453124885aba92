"""On-disk cache of teacher hidden states for multi-epoch distillation.

The teacher is frozen, so its targets for an utterance are the same every epoch (when the
utterance is not randomly cropped differently). Computing them once and reading them back removes
the teacher's forward pass - more than half of a DistilHuBERT step - from every later epoch.

Format (a folder):

* ``.s3prl_distill_teacher_cache``: a marker written first, when the folder is claimed. A folder
  that holds anything else without this marker (or an index of ours) is refused: nothing this
  package did not write is ever overwritten or deleted.
* ``index.json``: ``{"format": "s3prl_distill.teacher_cache", "version": 2, "layers": [4, 8, 12],
  "dim": 768, "dtype": "float16", "rate": 320, "teacher": {...describe(), "weights_sha1"},
  "entries": {id: {"shard": name, "key": tensor name, "frames": T, "samples": S, "source":
  "<size>:<mtime_ns>"}}, "unreadable": {id: {"reason": text, "source": ...}}}``, written last and
  atomically (a build first removes the old index, then the old shards). ``source`` is the audio
  file's size and modification time when it was cached: a changed file is noticed. (Version 1
  indexes, without ``source``, are read but never reused for training: they are rebuilt.)
* ``shard-00000.safetensors`` ...: tensors ``"u<n>"`` of shape ``[len(layers), T, D]`` (the
  teacher's ``hidden_states[k]`` for every cached layer ``k``, valid frames only; int8 adds
  ``"u<n>.scale"`` ``[len(layers), T]`` float32), read lazily through memory mapping.

Size: ``50 frames/s x 3600 s x len(layers) x (D x bytes [+ 4 for int8's scale])``; HuBERT Base
(D = 768) in float16 needs 0.83 GB per hour of audio for DistilHuBERT's 3 layers and 3.3 GB for
FitHuBERT's 12; int8 about half that. float16 targets differ from float32 ones by about 1e-3
relative (``dtype="float32"`` keeps them exact); int8 (per-frame absmax scale) by about 1e-2
(measured drift: ``docs/PRETRAINING.md``).

The pretraining runner uses it when ``pretrain_expert.datarc.teacher_cache`` names a folder
(:class:`~s3prl_distill.pretrain.expert.UpstreamPretrainExpert`): :func:`cache_mismatch` decides
reuse or rebuild, :func:`cache_dataset` builds from the training dataset, and each step passes
``cache.batch_targets(batch["ids"])`` to ``DistillationTask.forward(..., targets=...)``.
Direct use::

    write_teacher_cache(folder, teacher, ids, wavs, layers=student.target_layers)  # once
    cache = TeacherCache(folder)
    targets, lengths = cache.batch_targets(batch_ids)   # J x [B, T, D] float32, [B]
    loss, records = task(wavs, wav_lengths, targets=(targets, lengths))  # teacher not run

Utterances must be cached uncropped and fed uncropped (or the crop must be deterministic and the
same as when cached); :meth:`TeacherCache.check_utterance` verifies the sample count.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "TeacherCache",
    "TeacherCacheError",
    "TeacherCacheWriter",
    "write_teacher_cache",
    "teacher_info",
    "cache_mismatch",
    "invalidate_cache",
    "FORMAT",
    "VERSION",
    "MARKER",
    "claim_folder",
    "prepare_teacher_cache",
    "dev_cache_folder",
    "quantize_int8",
    "dequantize_int8",
    "build_lock",
    "estimate_bytes",
    "check_disk_space",
]

FORMAT = "s3prl_distill.teacher_cache"
VERSION = 2
_READ_VERSIONS = (1, 2)
#: written first into a folder this package uses as a cache: the proof that we own its files
MARKER = ".s3prl_distill_teacher_cache"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "int8": torch.int8}
#: the dev set's targets live in this subfolder of the training cache folder
DEV_SUBFOLDER = "dev"


class TeacherCacheError(UserError):
    """A cache folder is missing, malformed, or does not hold what was asked for."""


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise TeacherCacheError(f"teacher cache dtype must be one of {sorted(_DTYPES)}, got {dtype}")


def quantize_int8(states: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-frame symmetric int8: ``states`` [..., D] -> (q int8 [..., D], scale float32 [...]),
    ``scale = max |x| / 127`` over each frame's D values, ``q = round(x / scale)``."""
    x = states.detach().float()
    scale = x.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: Tensor, scale: Tensor) -> Tensor:
    """``q`` int8 [..., D], ``scale`` [...] -> float32 [..., D]."""
    return q.float() * scale.float().unsqueeze(-1)


_OWN_NAMES = re.compile(r"^(index\.json|shard-\d{5}\.safetensors|\.tmp-index\.json-.*)$")
#: safetensors' save_file writes through ``.tmp`` + 6 characters in the same folder, then renames
_SAFETENSORS_TEMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
#: held (flock) while a process checks and builds a cache folder
LOCK_NAME = ".build.lock"


def _our_index(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "index.json"), "r", encoding="utf-8") as handle:
            return json.load(handle).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def claim_folder(folder: str) -> None:
    """Make ``folder`` a cache folder of ours, or refuse: never overwrite what we did not write.

    A missing or empty folder is created and marked (:data:`MARKER`); a folder with the marker, or
    with a teacher-cache ``index.json`` of this package (caches made before the marker), is ours.

    Raises:
        TeacherCacheError: the path is a file, or the folder holds files this package did not
            write (naming a few).
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise TeacherCacheError(f"teacher_cache {folder}: exists and is not a folder; give a folder")
    os.makedirs(folder, exist_ok=True)
    names = sorted(os.listdir(folder))
    if MARKER not in names:
        dev = os.path.join(folder, DEV_SUBFOLDER)
        foreign = [n for n in names
                   if not (n == DEV_SUBFOLDER and os.path.isfile(os.path.join(dev, MARKER)))]
        if foreign and not (_our_index(folder) and all(_OWN_NAMES.match(n) or n == DEV_SUBFOLDER
                                                       for n in foreign)):
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise TeacherCacheError(
                f"teacher_cache {folder}: the folder holds files this package did not write "
                f"({shown}); refusing to overwrite or delete them: give an empty or new folder "
                "for the teacher cache"
            )
        from s3prl_distill.io import atomic_write_text

        try:
            atomic_write_text(f"{FORMAT}: this folder is a teacher-target cache written by "
                              "s3prl_distill; delete the whole folder to remove it\n",
                              os.path.join(folder, MARKER))
        except OSError:
            if not foreign:  # an empty folder we cannot write to: the build will say why
                raise
            logger.debug("teacher cache %s: read-only; using it as it is", folder)


class TeacherCacheWriter:
    """Streams teacher states into shards; ``index.json`` is written last, atomically.

    Opening a writer claims the folder (:func:`claim_folder`: refused when it holds files we did
    not write), then removes the folder's ``index.json`` and then its old shards, so a build
    killed at any point leaves a folder without an index (never a valid-looking one).

    Args:
        folder: output folder (created).
        layers: teacher layers stored per utterance, in order.
        dtype: storage type (float16 halves the size; int8 with a per-frame scale quarters it).
        shard_bytes: approximate shard file size.
    """

    def __init__(self, folder: str, layers: Sequence[int], dtype: torch.dtype = torch.float16,
                 shard_bytes: int = 256 * 2**20):
        self.folder = os.fspath(folder)
        self.layers = [int(k) for k in layers]
        self.dtype = dtype
        self.dtype_name = _dtype_name(dtype)
        self.shard_bytes = int(shard_bytes)
        self.entries: Dict[str, Dict[str, Any]] = {}
        self.unreadable: Dict[str, Dict[str, Any]] = {}
        self.dim: Optional[int] = None
        self._shard: Dict[str, Tensor] = {}
        self._shard_size, self._shard_no = 0, 0
        claim_folder(self.folder)
        invalidate_cache(self.folder)

    def add(self, utt_id: str, states: Tensor, samples: int, source: Optional[str] = None) -> None:
        """Store one utterance: ``states`` [len(layers), T, D] (valid frames only), computed from
        ``samples`` samples of the file whose fingerprint is ``source`` (``"<size>:<mtime_ns>"``)."""
        if utt_id in self.entries:
            raise TeacherCacheError(f"{self.folder}: utterance ids must be unique ({utt_id!r} twice)")
        key = f"u{len(self.entries):08d}"
        if self.dtype == torch.int8:
            q, scale = quantize_int8(states.detach().to("cpu"))
            tensors = {key: q.contiguous(), key + ".scale": scale.contiguous()}
        else:
            tensors = {key: states.detach().to("cpu", self.dtype).contiguous()}
        stacked = tensors[key]
        self.dim = int(stacked.shape[-1])
        self._shard.update(tensors)
        self._shard_size += sum(t.numel() * t.element_size() for t in tensors.values())
        self.entries[utt_id] = {"shard": self._shard_name(), "key": key, "frames": int(stacked.shape[1]),
                                "samples": int(samples), "source": source}
        if self._shard_size >= self.shard_bytes:
            self._flush()

    def add_output(self, ids: Sequence[str], out, samples: Tensor,
                   sources: Optional[Sequence[Optional[str]]] = None) -> None:
        """Store a teacher batch: ``out`` a ``TeacherOutput`` (hidden_states [B, T, D] each,
        lengths [B]) of the utterances ``ids``, fed with ``samples`` [B] samples each, from files
        with fingerprints ``sources`` [B]."""
        for row, utt_id in enumerate(ids):
            frames = int(out.lengths[row])
            self.add(utt_id, torch.stack([out.hidden_states[k][row, :frames] for k in self.layers]),
                     int(samples[row]), sources[row] if sources is not None else None)

    def skip(self, utt_id: str, reason: str, source: Optional[str] = None) -> None:
        """Record an utterance that could not be read (it is never fed either)."""
        self.unreadable[utt_id] = {"reason": reason, "source": source}

    def _shard_name(self) -> str:
        return f"shard-{self._shard_no:05d}.safetensors"

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if self._shard:
            path = os.path.join(self.folder, self._shard_name())
            try:
                save_file(self._shard, path)
            except Exception as err:  # safetensors: "I/O error: ... (os error 28)"
                text = str(err)
                if "os error 28" in text or "No space left" in text or "os error 122" in text:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from err
                raise
            self._shard_no += 1
            self._shard, self._shard_size = {}, 0

    def finish(self, teacher_info: Mapping[str, Any], rate: int = 320) -> Dict[str, Any]:
        """Write the last shard and then the index (atomically); returns the index."""
        from s3prl_distill.io import atomic_write_text

        self._flush()
        index = {
            "format": FORMAT,
            "version": VERSION,
            "layers": self.layers,
            "dim": self.dim,
            "dtype": self.dtype_name,
            "rate": int(rate),
            "teacher": dict(teacher_info),
            "entries": self.entries,
            "unreadable": self.unreadable,
        }
        atomic_write_text(json.dumps(index, indent=1, default=str), os.path.join(self.folder, "index.json"))
        logger.info("cached teacher layers %s of %d utterances in %s", self.layers, len(self.entries),
                    self.folder)
        return index


def invalidate_cache(folder: str) -> None:
    """Remove ``index.json`` first, then the shards (a half-removed cache never looks valid),
    then the temporary files an interrupted build left (``.tmp-index.json-*``).

    Only for folders of ours (:func:`claim_folder`): it deletes ``index.json``,
    ``shard-NNNNN.safetensors`` and the ``.tmpXXXXXX`` files safetensors writes shards through
    (left behind when a build is killed mid-shard), nothing else.
    """
    index = os.path.join(folder, "index.json")
    if os.path.exists(index):
        os.unlink(index)
    for name in os.listdir(folder):
        if (name.startswith("shard-") and name.endswith(".safetensors")) or _SAFETENSORS_TEMP.match(name):
            os.unlink(os.path.join(folder, name))
    from s3prl_distill.io import remove_stale_temp_files

    removed = remove_stale_temp_files(index)
    if removed:
        logger.info("teacher cache %s: removed %d temporary file(s) of an interrupted build",
                    folder, len(removed))


def teacher_info(teacher: torch.nn.Module) -> Dict[str, Any]:
    """What identifies a teacher's targets: ``describe()`` plus a SHA-1 of its weights.

    The digest covers every state-dict entry (name, dtype, shape, bytes), so a retrained teacher
    saved at the same path is told apart. Values are plain JSON data.
    """
    import hashlib

    describe = getattr(teacher, "describe", None)
    info = dict(describe()) if callable(describe) else {"class": type(teacher).__name__}
    digest = hashlib.sha1()
    for name, value in sorted(teacher.state_dict().items()):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(value.shape)};".encode("utf-8"))
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    info["weights_sha1"] = digest.hexdigest()
    return json.loads(json.dumps(info, default=str))  # as it reads back from index.json


def write_teacher_cache(
    folder: str,
    teacher: torch.nn.Module,
    ids: Sequence[str],
    wavs: Sequence[Tensor],
    layers: Sequence[int],
    batch_size: int = 8,
    dtype: torch.dtype = torch.float16,
    shard_bytes: int = 256 * 2**20,
    sources: Optional[Sequence[Optional[str]]] = None,
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
        dtype: storage type (float16 halves the size; int8: per-frame scale).
        shard_bytes: approximate shard file size.
        sources: per utterance, the fingerprint of its file (``IndexEntry.fingerprint``), or None.

    Returns:
        the index (also written to ``folder/index.json``).

    Raises:
        TeacherCacheError: duplicate ids, mismatched lists, bad layers or shapes, a folder holding
            files this package did not write.
    """
    if len(ids) != len(wavs):
        raise TeacherCacheError(f"{folder}: {len(ids)} ids but {len(wavs)} waveforms")
    if len(set(ids)) != len(ids):
        raise TeacherCacheError(f"{folder}: utterance ids must be unique")
    layers = check_cache_layers(folder, teacher, layers)
    for utt_id, wav in zip(ids, wavs):
        if wav.dim() != 1:
            raise TeacherCacheError(f"{folder}: waveform of {utt_id!r} must be 1-D, got {tuple(wav.shape)}")
    writer = TeacherCacheWriter(folder, layers, dtype, shard_bytes)
    order = sorted(range(len(ids)), key=lambda i: -int(wavs[i].shape[-1]))
    for start in range(0, len(order), max(1, batch_size)):
        chunk = order[start:start + max(1, batch_size)]
        lengths = torch.tensor([int(wavs[i].shape[-1]) for i in chunk], dtype=torch.long)
        batch = torch.zeros(len(chunk), int(lengths.max()))
        for row, i in enumerate(chunk):
            batch[row, : lengths[row]] = wavs[i].float()
        with torch.inference_mode():
            out = teacher(batch, lengths)
        writer.add_output([ids[i] for i in chunk], out, lengths,
                          [sources[i] for i in chunk] if sources is not None else None)
    return writer.finish(teacher_info(teacher), int(getattr(teacher, "downsample_rate", 320)))


def check_cache_layers(folder: str, teacher: torch.nn.Module, layers: Sequence[int]) -> List[int]:
    """``layers`` as ints; raises unless they are non-empty and lie in ``0..teacher.num_layers``."""
    layers = [int(k) for k in layers]
    num_layers = int(getattr(teacher, "num_layers", max(layers) if layers else 0))
    bad = [k for k in layers if not 0 <= k <= num_layers]
    if not layers or bad:
        raise TeacherCacheError(f"{folder}: layers {layers} must lie in 0..{num_layers}")
    return layers


def cache_mismatch(folder: str, info: Mapping[str, Any], layers: Sequence[int],
                   utterances: Mapping[str, int], dtype: torch.dtype = torch.float16,
                   sources: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why ``folder`` cannot serve these targets, or ``None`` when it can.

    Valid means: an index of this format and version whose teacher equals ``info``
    (:func:`teacher_info`), whose layers include ``layers``, stored as ``dtype``, holding every
    utterance id of ``utterances`` (``{id: samples fed}``) with that sample count (or listed as
    unreadable), cached from a file with the fingerprint ``sources[id]`` (when given: its size
    and modification time, so changed audio of the same length is noticed), and whose shards
    all exist.
    """
    try:
        cache = TeacherCache(folder)
    except TeacherCacheError as err:
        return str(err)
    index = cache.index
    if index.get("version") != VERSION:
        return (f"it is an older cache format (version {index.get('version')}) that cannot tell "
                "changed audio files")
    if index.get("teacher") != dict(info):
        return f"it was built with another teacher ({index.get('teacher')} != {dict(info)})"
    missing_layers = [int(k) for k in layers if int(k) not in cache.layers]
    if missing_layers:
        return f"teacher layers {missing_layers} are not cached (cached: {cache.layers})"
    if cache.dtype != _dtype_name(dtype):
        return f"it stores {cache.dtype}, {_dtype_name(dtype)} was asked for"
    unreadable = index.get("unreadable") or {}
    absent = [u for u in utterances if u not in cache._entries and u not in unreadable]
    if absent:
        return f"{len(absent)} of {len(utterances)} utterances are not cached (e.g. {absent[0]!r})"
    for utt_id, samples in utterances.items():
        entry = cache._entries.get(utt_id)
        if entry is not None and int(entry["samples"]) != int(samples):
            return f"{utt_id!r} was cached from {entry['samples']} samples but has {samples} now"
        if sources is not None and utt_id in sources:
            record = entry if entry is not None else unreadable[utt_id]
            if record.get("source") != sources[utt_id]:
                return (f"the file of {utt_id!r} changed since it was cached (size:mtime "
                        f"{record.get('source')} -> {sources[utt_id]})")
    shards = {e["shard"] for e in cache._entries.values()}
    lost = sorted(s for s in shards if not os.path.isfile(os.path.join(cache.folder, s)))
    if lost:
        return f"shard {lost[0]} listed in the index is missing"
    return None


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
        if not isinstance(index, dict) or index.get("format") != FORMAT \
                or index.get("version") not in _READ_VERSIONS:
            got = (f"{index.get('format')!r} version {index.get('version')!r}"
                   if isinstance(index, dict) else type(index).__name__)
            raise TeacherCacheError(
                f"{path}: expected format {FORMAT!r} version {VERSION}, got {got}"
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
                f"with {samples}: its audio file changed while the run was going (restart the run: "
                "the cache notices changed files at start-up and rebuilds), or it is fed cropped "
                "(the cache needs whole utterances: crop_seconds 0)"
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
        picks = self.layers if layers is None else [int(k) for k in layers]
        self.check_layers(picks)
        handle = self._open(entry["shard"])
        key = entry.get("key", utt_id)  # version 1 named tensors by utterance id
        stacked = handle.get_tensor(key)
        if self.dtype == "int8":
            stacked = dequantize_int8(stacked, handle.get_tensor(key + ".scale"))
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
        frame_bytes = self.dim * bytes_per_element + (4 if self.dtype == "int8" else 0)
        frames_per_hour = 3600.0 * 16000.0 / float(self.index.get("rate", 320))
        return {
            "format": f"{FORMAT} v{VERSION} (safetensors shards + index.json)",
            "utterances": len(self),
            "layers": len(self.layers),
            "dim": self.dim,
            "dtype": self.dtype,
            "bytes": size,
            "audio_seconds": round(seconds, 2),
            "bytes_per_audio_hour": int(frames_per_hour * len(self.layers) * frame_bytes),
        }


def cache_dataset(folder: str, teacher: torch.nn.Module, dataset, layers: Sequence[int], *,
                  dtype: torch.dtype = torch.float16, batch_size: int = 8, num_workers: int = 0,
                  device: Optional[torch.device] = None, log_every_s: float = 60.0) -> Dict[str, Any]:
    """Cache the teacher's states for every utterance of a pretraining dataset, as it is fed.

    Args:
        dataset: a :class:`~s3prl_distill.pretrain.dataset.DistillDataset` without random crops
            (``dataset[(i, 0)]`` -> ``{"wav": [S], "id": str, ...}`` or ``None`` when unreadable;
            ``dataset.ids``, ``dataset.lengths``, ``dataset.fingerprints`` when it has them).
        device: where the teacher runs (its current device when ``None``).
        batch_size: utterances per teacher call (sorted by length: little padding).
        log_every_s: seconds between progress lines.

    Returns:
        the index (also written to ``folder/index.json``, last).
    """
    from torch.utils.data import DataLoader

    from s3prl_distill.pretrain.dataset import collate_batch

    layers = check_cache_layers(folder, teacher, layers)
    if device is None:
        device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    order = sorted(range(len(dataset)), key=lambda i: -int(dataset.lengths[i]))
    step = max(1, int(batch_size))
    batches = [[(i, 0) for i in order[s:s + step]] for s in range(0, len(order), step)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_batch,
                        num_workers=num_workers)
    fingerprints = getattr(dataset, "fingerprints", None)
    writer = TeacherCacheWriter(folder, layers, dtype)
    check_disk_space(folder, teacher, dataset.lengths, layers, dtype)
    sr = float(getattr(dataset, "sample_rate", 16000))
    total_s = sum(int(n) for n in dataset.lengths) / sr
    done_s, start, last_log = 0.0, time.monotonic(), time.monotonic()
    for batch in loader:
        if batch["wavs"].shape[0]:
            with torch.inference_mode():
                out = teacher(batch["wavs"].to(device), batch["wav_lengths"].to(device))
            sources = ([fingerprints[int(i)] for i in batch["indices"]]
                       if fingerprints is not None else None)
            writer.add_output(batch["ids"], out, batch["wav_lengths"], sources)
            done_s += float(batch["wav_lengths"].sum()) / sr
        if time.monotonic() - last_log >= log_every_s:
            last_log = time.monotonic()
            _log_progress(len(writer.entries), len(dataset), done_s, total_s, last_log - start)
    for i, utt_id in enumerate(dataset.ids):
        if utt_id not in writer.entries:
            writer.skip(utt_id, "unreadable when cached (bad audio)",
                        fingerprints[i] if fingerprints is not None else None)
    _log_progress(len(writer.entries), len(dataset), done_s, total_s, time.monotonic() - start)
    return writer.finish(teacher_info(teacher), int(getattr(teacher, "downsample_rate", 320)))


def estimate_bytes(lengths: Sequence[int], layers: Sequence[int], dim: int, dtype: torch.dtype,
                   rate: int = 320) -> int:
    """Shard bytes of a cache of utterances of ``lengths`` samples (an upper bound: one frame
    per ``rate`` samples, rounded up)."""
    frames = sum(-(-int(n) // int(rate)) for n in lengths)
    element = torch.tensor([], dtype=dtype).element_size()
    return frames * len(layers) * (int(dim) * element + (4 if dtype == torch.int8 else 0))


def check_disk_space(folder: str, teacher: torch.nn.Module, lengths: Sequence[int],
                     layers: Sequence[int], dtype: torch.dtype) -> None:
    """Raise before a build that cannot fit on the disk of ``folder`` (hours of teacher passes
    would end in a full disk)."""
    dim = getattr(teacher, "dim", None)
    if not dim:
        return
    need = estimate_bytes(lengths, layers, int(dim), dtype, int(getattr(teacher, "downsample_rate", 320)))
    free = shutil.disk_usage(folder).free
    if need > free:
        raise TeacherCacheError(
            f"teacher_cache {folder}: the cache needs about {need / 2**30:.1f} GiB "
            f"({len(layers)} layers x {dim} dims in {_dtype_name(dtype)}) but only "
            f"{free / 2**30:.1f} GiB are free there; free space, give a folder on another disk, "
            "or set teacher_cache_dtype: int8 (half of float16)"
        )


def dev_cache_folder(folder: str) -> str:
    """Where the dev set's targets of the training cache ``folder`` live (``<folder>/dev``; dev
    utterance ids may repeat training ids, e.g. two folders' ``spk1/a.wav``, so they get their own
    index)."""
    return os.path.join(os.fspath(folder), DEV_SUBFOLDER)


def wait_until(ready: Callable[[], bool], what: str, poll_s: float = 1.0,
               log_every_s: float = 300.0) -> None:
    """Poll ``ready()`` until it is true, logging that this process waits for ``what``.

    (A long cache build would outlast a collective barrier's timeout; polling the file system has
    none. If rank 0 dies, ``torchrun`` ends this process.)
    """
    start = last = time.monotonic()
    while not ready():
        if time.monotonic() - last >= log_every_s:
            last = time.monotonic()
            logger.info("waiting for %s (%.0f s)", what, last - start)
        time.sleep(poll_s)


@contextlib.contextmanager
def build_lock(folder: str):
    """Hold an exclusive lock on ``folder`` (``flock`` of :data:`LOCK_NAME`) while checking and
    building it, so that two runs sharing a cache folder (two students of one teacher) never
    build it at once: the second waits, then finds the cache valid and reuses it. A folder where
    the lock file cannot be created (read-only) is used without a lock."""
    import fcntl

    from s3prl_distill.io import file_mode

    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as err:
        logger.debug("teacher cache %s: no build lock (%s)", folder, err)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("teacher cache %s: another process is checking or building it; waiting "
                        "for it (lock %s)", folder, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare_teacher_cache(folder: str, teacher: torch.nn.Module, dataset, layers: Sequence[int], *,
                          dtype: torch.dtype = torch.float16, rank: int = 0,
                          device: Optional[torch.device] = None, batch_size: int = 8,
                          num_workers: int = 0) -> "TeacherCache":
    """Reuse ``folder`` if it holds ``teacher``'s targets of ``layers`` for every utterance of
    ``dataset`` as it is fed now (ids, sample counts, file fingerprints), else build it (rank 0;
    the other processes poll until it is valid). Returns the cache.

    Args:
        dataset: a :class:`~s3prl_distill.pretrain.dataset.DistillDataset` fed whole
            (``ids``, ``full_lengths``, ``fingerprints``).
        device: where the teacher runs while building.

    Raises:
        TeacherCacheError: the folder holds files this package did not write (never overwritten).
    """
    info = teacher_info(teacher)
    wanted = dict(zip(dataset.ids, dataset.full_lengths))
    fingerprints = getattr(dataset, "fingerprints", None)
    sources = dict(zip(dataset.ids, fingerprints)) if fingerprints is not None else None

    def mismatch() -> Optional[str]:
        return cache_mismatch(folder, info, layers, wanted, dtype, sources)

    if rank == 0:
        claim_folder(folder)
        with build_lock(folder):  # another run on the same folder builds first, then we reuse
            reason = mismatch()
            if reason is None:
                logger.info("teacher cache %s: reused (it holds layers %s of this teacher for all "
                            "%d utterances)", folder, list(layers), len(wanted))
            else:
                logger.info("teacher cache %s: building it (%s)", folder, reason)
                if device is not None:
                    teacher.to(device)
                cache_dataset(folder, teacher, dataset, layers, dtype=dtype, batch_size=batch_size,
                              num_workers=num_workers, device=device)
    else:
        wait_until(lambda: mismatch() is None, f"rank 0 to build the teacher cache {folder}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    cache = TeacherCache(folder)
    described = cache.describe()
    logger.info("teacher cache %s: %d utterances, %.1f MiB (%.2f GiB per hour of audio, "
                "%s x %d layers x %d dims)", folder, described["utterances"],
                described["bytes"] / 2**20, described["bytes_per_audio_hour"] / 2**30,
                described["dtype"], described["layers"], described["dim"])
    return cache


def _log_progress(done: int, total: int, done_s: float, total_s: float, elapsed: float) -> None:
    speed = done_s / max(elapsed, 1e-9)
    eta = (total_s - done_s) / speed if speed > 0 else float("nan")
    logger.info("teacher cache: %d/%d utterances, %.2f/%.2f h of audio, %.0f s elapsed, "
                "%.1f audio s/s, ETA %.0f s", done, total, done_s / 3600, total_s / 3600, elapsed,
                speed, eta)
