"""Audio sources for pretraining and their length index.

A source lists audio files:

* ``librispeech``: ``<libri_root>/<set>/<speaker>/<chapter>/*.flac`` for each subset in ``sets``
  (``train-clean-100``, ``train-clean-360``, ``train-other-500``, ...);
* ``s3prl_csv``: S3PRL's length tables (``libri_root`` + ``file_path``): the rows of
  ``<file_path>/<set>.csv`` for each subset in ``sets``, as S3PRL's
  ``preprocess/generate_len_for_bucket.py`` writes them (columns ``file_path``, relative to
  ``libri_root``, and ``length``, samples at the file's rate; an unnamed index column first);
* ``folder``: every file with an audio extension under ``audio_dir`` (recursively);
* ``file_list``: a text file with one audio path per line (``#`` comments and blank lines
  ignored; relative paths are taken from the list's folder).

Every file is listed once, by its real path: a folder reached twice through symbolic links
(a link loop included) is walked once, and a file reached twice is kept at its first path.

The length index records, for every listed file, its header facts (frames, sample rate,
channels) or why its header cannot be read, with the file's size and modification time. It is
read from the file headers only (:func:`s3prl_distill.audio.audio_info`), written once
(atomically) and reused: a later run re-lists the source, ``stat``-s every file, and reads
headers only for files the index does not know yet or whose size or modification time changed
(a ``stat`` costs microseconds; hashing the audio would read the whole corpus every run).

Index format (TSV, UTF-8, fields percent-escaped so that any file name - tabs, newlines,
bytes that are not UTF-8 - round-trips)::

    # s3prl_distill length index v2
    path<TAB>num_frames<TAB>sample_rate<TAB>channels<TAB>size<TAB>mtime_ns<TAB>status
    train-clean-100/19/198/19-198-0001.flac<TAB>225360<TAB>16000<TAB>1<TAB>314159<TAB>17000...<TAB>ok

``path`` is relative to the source root; ``status`` is ``ok`` or the reason the header failed.
An index of an older version is rebuilt (logged); a file that is not a length index is refused,
never overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from s3prl_distill.audio import AudioError, audio_info
from s3prl_distill.errors import UserError
from s3prl_distill.io import atomic_write_text, remove_stale_temp_files
from s3prl_distill.paths import cache_dir

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "IndexEntry",
    "list_source",
    "read_length_tables",
    "source_root",
    "build_length_index",
    "read_length_index",
    "default_index_path",
]

INDEX_HEADER = "# s3prl_distill length index v2"
_OLD_HEADERS = ("# s3prl_distill length index v1",)
COLUMNS = ("path", "num_frames", "sample_rate", "channels", "size", "mtime_ns", "status")
#: printable ASCII except "%" stays as is; everything else (tabs, newlines, non-ASCII bytes) is %XX
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")


class DataError(UserError):
    """A data source or a file in it is unusable; the message names the path."""


@dataclass(frozen=True)
class IndexEntry:
    """Header facts of one audio file; ``status`` is ``"ok"`` or why the header is unusable.

    ``size`` and ``mtime_ns`` are the file's ``stat`` when its header was read (-1: unknown).
    """

    path: str  #: absolute path
    num_frames: int
    sample_rate: int
    channels: int
    status: str = "ok"
    size: int = -1
    mtime_ns: int = -1

    def samples_at(self, sample_rate: int) -> int:
        """Length in samples after resampling to ``sample_rate`` (ceil, as the resampler)."""
        if self.sample_rate <= 0:
            return 0
        if self.sample_rate == sample_rate:
            return self.num_frames
        return -(-self.num_frames * sample_rate // self.sample_rate)

    @property
    def fingerprint(self) -> str:
        """``"<size>:<mtime_ns>"``: changes when the file is rewritten (what caches compare)."""
        return f"{self.size}:{self.mtime_ns}"


def _escape(text: str) -> str:
    return urllib.parse.quote_from_bytes(os.fsencode(text), safe=_SAFE)


def _unescape(text: str) -> str:
    if "%" not in text:  # escaped fields are ASCII: nothing to undo
        return text
    return os.fsdecode(urllib.parse.unquote_to_bytes(text))


def _walk_audio(root: str, extensions: Sequence[str], seen: Set[str]) -> Tuple[List[str], int]:
    """Audio files under ``root`` (files of a folder sorted by name, then its sorted subfolders),
    each real file once (``seen``: real paths already listed, updated). Symbolic links are
    followed; a folder reached again through one (a loop, or two links) is not walked again.

    Returns:
        (paths, number of files reached a second time).
    """
    exts = tuple(e.lower() for e in extensions)
    found: List[str] = []
    walked: Set[str] = set()
    again = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in walked:
            continue
        walked.add(real)
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except OSError as err:
            logger.warning("cannot list %s: %s", folder, err)
            continue
        files, dirs = [], []
        for item in items:
            try:
                is_dir = item.is_dir()  # follows a link; no system call for plain entries
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(item)
        for item in sorted(files, key=lambda e: e.name):
            name = item.name
            if not name.lower().endswith(exts) or name.startswith("."):
                continue
            key = os.path.realpath(item.path) if item.is_symlink() else os.path.join(real, name)
            if key in seen:
                again += 1
                continue
            seen.add(key)
            found.append(os.path.join(folder, name))
        stack.extend(d.path for d in sorted(dirs, key=lambda e: e.name, reverse=True))
    return found, again


def _real_path(path: str, folders: Dict[str, str]) -> str:
    """``os.path.realpath(path)``, with the real path of its folder cached in ``folders``
    (``realpath`` costs ~30 us a file; a link test ~4 us)."""
    folder, name = os.path.split(path)
    real = folders.get(folder)
    if real is None:
        real = folders[folder] = os.path.realpath(folder)
    return os.path.realpath(path) if os.path.islink(path) else os.path.join(real, name)


def read_length_tables(datarc) -> List[Tuple[str, int]]:
    """The rows of S3PRL's length tables ``<file_path>/<set>.csv`` for ``datarc.sets``, in
    S3PRL's order (the tables concatenated as listed): ``[(absolute path, length)]``.

    Raises:
        DataError: a missing table, a table without the ``file_path``/``length`` columns, or a
            length that is not an integer (naming the table and line).
    """
    folder = os.path.abspath(datarc.file_path)
    root = os.path.abspath(datarc.libri_root)
    if not os.path.isdir(folder):
        raise DataError(f"file_path {folder}: folder not found (S3PRL's length tables, made by "
                        "its preprocess/generate_len_for_bucket.py)")
    rows: List[Tuple[str, int]] = []
    for name in datarc.sets:
        table = os.path.join(folder, name + ".csv")
        if not os.path.isfile(table):
            have = sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".csv"))
            raise DataError(f"length table {table} not found (sets: {name!r}); tables in "
                            f"{folder}: {have}")
        with open(table, "r", encoding="utf-8", errors="surrogateescape", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None) or []
            if "file_path" not in header or "length" not in header:
                raise DataError(f"{table}: expected S3PRL's columns 'file_path' and 'length' in the "
                                f"first line, got {header}")
            path_col, len_col = header.index("file_path"), header.index("length")
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    rel, length = row[path_col], int(float(row[len_col]))
                except (IndexError, ValueError) as err:
                    raise DataError(f"{table}: line {number}: expected a file path and an integer "
                                    f"length, got {row} ({err})") from None
                rows.append((os.path.normpath(os.path.join(root, rel)), length))
    return rows


def list_source(datarc) -> Tuple[str, List[str]]:
    """List the audio files of ``datarc`` (:class:`~s3prl_distill.pretrain.config.DataConfig`).

    Returns:
        (root, paths): the source root folder and the absolute paths of its files, each real file
        once (walks: sorted; tables and lists: in their order).

    Raises:
        DataError: a missing folder, subset, table or list file, or a source without audio files.
    """
    kind = datarc.source_kind
    root = source_root(datarc)
    seen: Set[str] = set()
    again = 0
    if kind in ("librispeech", "s3prl_csv") and not os.path.isdir(root):
        raise DataError(f"libri_root {root}: folder not found")
    if kind == "librispeech":
        paths: List[str] = []
        for name in datarc.sets:
            subset = os.path.join(root, name)
            if not os.path.isdir(subset):
                have = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
                raise DataError(
                    f"LibriSpeech subset {name!r} not found at {subset}; subsets under {root}: {have}"
                )
            found, twice = _walk_audio(subset, datarc.extensions, seen)
            again += twice
            if not found and not twice:
                raise DataError(f"LibriSpeech subset {subset}: no {datarc.extensions} files")
            paths.extend(found)
    elif kind == "folder":
        if not os.path.isdir(root):
            raise DataError(f"audio_dir {root}: folder not found")
        paths, again = _walk_audio(root, datarc.extensions, seen)
    else:
        if kind == "s3prl_csv":
            listed = [path for path, _ in read_length_tables(datarc)]
        else:
            list_path = os.path.abspath(datarc.file_list)
            if not os.path.isfile(list_path):
                raise DataError(f"file_list {list_path}: file not found")
            listed = []
            with open(list_path, "r", encoding="utf-8", errors="surrogateescape") as handle:
                for line in handle:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    path = line.split("\t")[0]
                    listed.append(os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path)))
        paths = []
        folders: Dict[str, str] = {}
        for path in listed:
            key = _real_path(path, folders)
            if key in seen:
                again += 1
                continue
            seen.add(key)
            paths.append(path)
    if again:
        logger.warning("%s source %s: %d file(s) listed more than once (the same file through "
                       "symbolic links or a repeated line) are used once", kind, root, again)
    if not paths:
        raise DataError(f"{kind} source {root}: no audio files found (extensions {datarc.extensions})")
    return root, paths


def source_root(datarc) -> str:
    """The folder that paths of ``datarc``'s source are relative to (absolute): ``libri_root``,
    ``audio_dir``, or the folder of ``file_list``."""
    if datarc.source_kind in ("librispeech", "s3prl_csv"):
        return os.path.abspath(datarc.libri_root)
    if datarc.source_kind == "folder":
        return os.path.abspath(datarc.audio_dir)
    return os.path.dirname(os.path.abspath(datarc.file_list))


def default_index_path(datarc) -> str:
    """``$XDG_CACHE_HOME/s3prl_distill/lengths-<hash of the source>.tsv``."""
    kind = datarc.source_kind
    if kind == "librispeech":
        key = "librispeech:" + os.path.abspath(datarc.libri_root) + ":" + ",".join(datarc.sets)
    elif kind == "s3prl_csv":
        key = ("s3prl_csv:" + os.path.abspath(datarc.libri_root) + ":"
               + os.path.abspath(datarc.file_path) + ":" + ",".join(datarc.sets))
    elif kind == "folder":
        key = "folder:" + os.path.abspath(datarc.audio_dir)
    else:
        key = "file_list:" + os.path.abspath(datarc.file_list)
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(cache_dir(), f"lengths-{digest}.tsv")


class _OldIndex(Exception):
    """An index this package wrote in an older format, or damaged: rebuild it."""


def read_length_index(index_path: str, root: str) -> Dict[str, IndexEntry]:
    """Read an index file into ``{absolute path: IndexEntry}``.

    Raises:
        DataError: the file is not a length index (naming the path); an index of an older
            version or with a damaged line also raises it (:func:`build_length_index` rebuilds
            those instead).
    """
    try:
        return _read_index(index_path, root)
    except _OldIndex as err:
        raise DataError(f"{index_path}: {err}") from None


def _read_index(index_path: str, root: str) -> Dict[str, IndexEntry]:
    entries: Dict[str, IndexEntry] = {}
    with open(index_path, "rb") as handle:
        first = handle.readline().decode("utf-8", "replace").rstrip("\n")
        if first in _OLD_HEADERS:
            raise _OldIndex(f"an older length index format ({first[2:]}) without file sizes and "
                            "times")
        if first != INDEX_HEADER:
            raise DataError(f"{index_path}: not a length index (first line {first[:80]!r}, expected "
                            f"{INDEX_HEADER!r}); it is left alone: give another length_index, or "
                            "delete the file if it is an old index")
        columns = handle.readline().decode("utf-8", "replace").rstrip("\n").split("\t")
        if tuple(columns) != COLUMNS:
            raise _OldIndex(f"line 2: expected columns {COLUMNS}, got {columns}")
        for number, raw in enumerate(handle, start=3):
            try:
                parts = raw.decode("ascii").rstrip("\n").split("\t")
                rel, frames, rate, channels, size, mtime, status = parts
                entry = IndexEntry(os.path.normpath(os.path.join(root, _unescape(rel))), int(frames),
                                   int(rate), int(channels), _unescape(status), int(size), int(mtime))
            except ValueError as err:
                raise _OldIndex(f"line {number}: damaged ({err})") from None
            entries[entry.path] = entry
    return entries


def _stat(path: str) -> Tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return int(st.st_size), int(st.st_mtime_ns)


def _probe(path: str) -> IndexEntry:
    size, mtime = _stat(path)
    try:
        info = audio_info(path)
    except AudioError as err:
        return IndexEntry(path, 0, 0, 0, str(err), size, mtime)
    return IndexEntry(path, info.num_frames, info.sample_rate, info.channels, "ok", size, mtime)


def _write_index(index_path: str, root: str, entries: Iterable[IndexEntry]) -> None:
    lines = [INDEX_HEADER, "\t".join(COLUMNS)]
    for e in entries:
        rel = _escape(os.path.relpath(e.path, root))
        lines.append(f"{rel}\t{e.num_frames}\t{e.sample_rate}\t{e.channels}\t{e.size}\t{e.mtime_ns}"
                     f"\t{_escape(e.status)}")
    atomic_write_text("\n".join(lines) + "\n", index_path)


def build_length_index(datarc, index_path: Optional[str] = None,
                       listing: Optional[Tuple[str, List[str]]] = None) -> List[IndexEntry]:
    """List the source and return one :class:`IndexEntry` per file, in listing order.

    Reuses ``index_path`` (default ``datarc.length_index`` or :func:`default_index_path`):
    a file whose size and modification time equal the index's is not opened; headers are read
    for new and changed files only. Rewrites the index (atomically) when anything was added,
    removed or changed. ``listing``: the result of :func:`list_source`, when already known.
    """
    root, paths = listing or list_source(datarc)
    index_path = index_path or datarc.length_index or default_index_path(datarc)
    known: Dict[str, IndexEntry] = {}
    if os.path.isfile(index_path):
        try:
            known = _read_index(index_path, root)
        except _OldIndex as err:
            logger.warning("length index %s: %s; rebuilding it (file headers are read again)",
                           index_path, err)
    entries, probed, changed = [], 0, 0
    for path in paths:
        entry = known.get(os.path.normpath(path))
        if entry is not None and _stat(path) != (entry.size, entry.mtime_ns):
            entry, changed = None, changed + 1
        if entry is None:
            entry = _probe(path)
            probed += 1
        entries.append(entry)
    if probed or len(known) != len(entries):
        remove_stale_temp_files(index_path, min_age_s=3600.0)
        try:
            _write_index(index_path, root, entries)
        except OSError as err:  # read-only cache folder, full disk: the index only saves time
            logger.warning("length index %s: cannot be written (%s); continuing without it (the "
                           "next run reads the headers again; set datarc.length_index to a "
                           "writable file)", index_path, err)
            return entries
        logger.info("length index %s: %d files (%d headers read, %d of them changed since indexed; "
                    "%d reused)", index_path, len(entries), probed, changed, len(entries) - probed)
    else:
        logger.info("length index %s: reused for %d files", index_path, len(entries))
    return entries
