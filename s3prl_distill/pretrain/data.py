"""Audio sources for pretraining and their length index.

A source lists audio files:

* ``librispeech``: ``<libri_root>/<set>/<speaker>/<chapter>/*.flac`` for each subset in ``sets``
  (``train-clean-100``, ``train-clean-360``, ``train-other-500``, ...);
* ``folder``: every file with an audio extension under ``audio_dir`` (recursively);
* ``file_list``: a text file with one audio path per line (``#`` comments and blank lines
  ignored; relative paths are taken from the list's folder).

The length index records, for every listed file, its header facts (frames, sample rate,
channels) or why its header cannot be read. It is read from the file headers only
(:func:`s3prl_distill.audio.audio_info`), written once (atomically) and reused: a later run
re-lists the source and reads headers only for files the index does not know yet.

Index format (TSV, UTF-8)::

    # s3prl_distill length index v1
    path<TAB>num_frames<TAB>sample_rate<TAB>channels<TAB>status
    train-clean-100/19/198/19-198-0001.flac<TAB>225360<TAB>16000<TAB>1<TAB>ok

``path`` is relative to the source root; ``status`` is ``ok`` or the reason the header failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from s3prl_distill.audio import AudioError, audio_info
from s3prl_distill.io import atomic_write_text
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "IndexEntry",
    "list_source",
    "source_root",
    "build_length_index",
    "read_length_index",
    "default_index_path",
]

INDEX_HEADER = "# s3prl_distill length index v1"
COLUMNS = ("path", "num_frames", "sample_rate", "channels", "status")


class DataError(UserError):
    """A data source or a file in it is unusable; the message names the path."""


@dataclass(frozen=True)
class IndexEntry:
    """Header facts of one audio file; ``status`` is ``"ok"`` or why the header is unusable."""

    path: str  #: absolute path
    num_frames: int
    sample_rate: int
    channels: int
    status: str = "ok"

    def samples_at(self, sample_rate: int) -> int:
        """Length in samples after resampling to ``sample_rate`` (ceil, as the resampler)."""
        if self.sample_rate <= 0:
            return 0
        if self.sample_rate == sample_rate:
            return self.num_frames
        return -(-self.num_frames * sample_rate // self.sample_rate)


def _walk_audio(root: str, extensions: Sequence[str]) -> List[str]:
    exts = tuple(e.lower() for e in extensions)
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(exts) and not name.startswith("."):
                found.append(os.path.join(folder, name))
    return found


def list_source(datarc) -> Tuple[str, List[str]]:
    """List the audio files of ``datarc`` (:class:`~s3prl_distill.pretrain.config.DataConfig`).

    Returns:
        (root, paths): the source root folder and the sorted absolute paths of its files.

    Raises:
        DataError: a missing folder, subset or list file, or a source without audio files.
    """
    kind = datarc.source_kind
    root = source_root(datarc)
    if kind == "librispeech":
        if not os.path.isdir(root):
            raise DataError(f"libri_root {root}: folder not found")
        paths: List[str] = []
        for name in datarc.sets:
            subset = os.path.join(root, name)
            if not os.path.isdir(subset):
                have = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
                raise DataError(
                    f"LibriSpeech subset {name!r} not found at {subset}; subsets under {root}: {have}"
                )
            found = _walk_audio(subset, datarc.extensions)
            if not found:
                raise DataError(f"LibriSpeech subset {subset}: no {datarc.extensions} files")
            paths.extend(found)
    elif kind == "folder":
        if not os.path.isdir(root):
            raise DataError(f"audio_dir {root}: folder not found")
        paths = _walk_audio(root, datarc.extensions)
    else:
        list_path = os.path.abspath(datarc.file_list)
        if not os.path.isfile(list_path):
            raise DataError(f"file_list {list_path}: file not found")
        paths = []
        with open(list_path, "r", encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                path = line.split("\t")[0]
                paths.append(os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path)))
    if not paths:
        raise DataError(f"{kind} source {root}: no audio files found (extensions {datarc.extensions})")
    return root, paths


def source_root(datarc) -> str:
    """The folder that paths of ``datarc``'s source are relative to (absolute): ``libri_root``,
    ``audio_dir``, or the folder of ``file_list``."""
    if datarc.source_kind == "librispeech":
        return os.path.abspath(datarc.libri_root)
    if datarc.source_kind == "folder":
        return os.path.abspath(datarc.audio_dir)
    return os.path.dirname(os.path.abspath(datarc.file_list))


def default_index_path(datarc) -> str:
    """``$XDG_CACHE_HOME/s3prl_distill/lengths-<hash of the source>.tsv``."""
    if datarc.source_kind == "librispeech":
        key = "librispeech:" + os.path.abspath(datarc.libri_root) + ":" + ",".join(datarc.sets)
    elif datarc.source_kind == "folder":
        key = "folder:" + os.path.abspath(datarc.audio_dir)
    else:
        key = "file_list:" + os.path.abspath(datarc.file_list)
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "s3prl_distill", f"lengths-{digest}.tsv")


def read_length_index(index_path: str, root: str) -> Dict[str, IndexEntry]:
    """Read an index file into ``{absolute path: IndexEntry}``.

    Raises:
        DataError: the file is not a length index (naming the path and line).
    """
    entries: Dict[str, IndexEntry] = {}
    with open(index_path, "r", encoding="utf-8") as handle:
        first = handle.readline().rstrip("\n")
        if first != INDEX_HEADER:
            raise DataError(f"{index_path}: not a length index (first line {first!r}, expected "
                            f"{INDEX_HEADER!r}); delete it to rebuild")
        columns = handle.readline().rstrip("\n").split("\t")
        if tuple(columns) != COLUMNS:
            raise DataError(f"{index_path}: line 2: expected columns {COLUMNS}, got {columns}")
        for number, line in enumerate(handle, start=3):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(COLUMNS):
                raise DataError(f"{index_path}: line {number}: expected {len(COLUMNS)} tab-separated "
                                f"fields, got {len(parts)}; delete the index to rebuild")
            rel, frames, rate, channels, status = parts
            try:
                entry = IndexEntry(os.path.normpath(os.path.join(root, rel)), int(frames), int(rate),
                                   int(channels), status)
            except ValueError as err:
                raise DataError(f"{index_path}: line {number}: {err}") from err
            entries[entry.path] = entry
    return entries


def _probe(path: str) -> IndexEntry:
    try:
        info = audio_info(path)
    except AudioError as err:
        return IndexEntry(path, 0, 0, 0, str(err).replace("\t", " ").replace("\n", " "))
    return IndexEntry(path, info.num_frames, info.sample_rate, info.channels, "ok")


def _write_index(index_path: str, root: str, entries: Iterable[IndexEntry]) -> None:
    lines = [INDEX_HEADER, "\t".join(COLUMNS)]
    for e in entries:
        rel = os.path.relpath(e.path, root)
        lines.append(f"{rel}\t{e.num_frames}\t{e.sample_rate}\t{e.channels}\t{e.status}")
    atomic_write_text("\n".join(lines) + "\n", index_path)


def build_length_index(datarc, index_path: Optional[str] = None) -> List[IndexEntry]:
    """List the source and return one :class:`IndexEntry` per file, in listing order.

    Reuses ``index_path`` (default :func:`default_index_path`) and reads headers only of files
    it lacks; rewrites it (atomically) when anything was added or removed.
    """
    root, paths = list_source(datarc)
    index_path = index_path or datarc.length_index or default_index_path(datarc)
    known: Dict[str, IndexEntry] = {}
    if os.path.isfile(index_path):
        known = read_length_index(index_path, root)
    entries, probed = [], 0
    for path in paths:
        entry = known.get(os.path.normpath(path))
        if entry is None:
            entry = _probe(path)
            probed += 1
        entries.append(entry)
    if probed or len(known) != len(entries):
        _write_index(index_path, root, entries)
        logger.info("length index %s: %d files (%d headers read, %d reused)", index_path,
                    len(entries), probed, len(entries) - probed)
    else:
        logger.info("length index %s: reused for %d files", index_path, len(entries))
    return entries
