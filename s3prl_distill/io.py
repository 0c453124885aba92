"""Safe, atomic checkpoint files.

* :func:`atomic_save` writes through a temporary file in the same folder, ``fsync``-s it and
  renames it over the target, so a crash (SIGKILL included) never leaves a truncated file. The
  file gets the permissions of a normal new file (``0666 & ~umask``), not ``mkstemp``'s ``0600``.
  A full disk raises ``OSError(ENOSPC)`` naming the target (torch's own error on a short write is
  ``unexpected pos ...``, with the ``No space left on device`` buried in its chain); the temporary
  file is removed. A temporary file a killed process left behind is named ``.tmp-<name>-*`` and
  is removed by :func:`remove_stale_temp_files`.
* :func:`safe_load` reads with ``torch.load(..., weights_only=True)``: loading a checkpoint never
  executes pickled code. Checkpoints of this package hold only tensors and plain Python data
  (dicts, lists, str, int, float, bool, None). A file that pickles anything else is refused with
  a :class:`LoadError` naming the file and the blocked class.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from typing import Any, List, Optional, Union

import torch

from s3prl_distill.errors import UserError

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_save", "safe_load", "atomic_write_text", "atomic_write_bytes", "LoadError", "remove_stale_temp_files",
           "TEMP_PREFIX", "file_mode"]

#: temporary files of an atomic write are ``<folder>/.tmp-<basename>-<random>``
TEMP_PREFIX = ".tmp-"

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class LoadError(UserError):
    """A file cannot be loaded safely (truncated, not a torch file, or pickles a blocked class)."""


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", "r", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new regular file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def _disk_full(err: BaseException) -> Optional[OSError]:
    """The ENOSPC/EDQUOT OSError in ``err``'s cause/context chain, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return err
        err = err.__cause__ or err.__context__
    return None


def _atomic_replace(path: PathLike, write) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + "-", dir=folder)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        full = _disk_full(err) if isinstance(err, Exception) else None
        if full is not None:
            # the previous file, if any, is unchanged; errors.user_message adds what to do
            raise OSError(full.errno, os.strerror(full.errno), path) from err
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` made atomic (temp file in the same folder + rename).

    Raises:
        OSError: ``errno.ENOSPC``/``EDQUOT`` with ``filename=path`` when the disk is full.
    """
    _atomic_replace(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: PathLike) -> None:
    """Write a text file atomically (UTF-8)."""
    _atomic_replace(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """Write a binary file atomically."""
    _atomic_replace(path, lambda handle: handle.write(data))


def remove_stale_temp_files(path: PathLike, min_age_s: float = 0.0) -> List[str]:
    """Remove the temporary files that interrupted atomic writes of ``path`` left behind.

    Only files named ``.tmp-<basename of path>-*`` (this module's names) are touched, and only
    those older than ``min_age_s`` seconds (pass a margin when another process may be writing
    the same file right now). Returns the removed paths.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = TEMP_PREFIX + os.path.basename(path) + "-"
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not name.startswith(prefix):
            continue
        full = os.path.join(folder, name)
        try:
            if not os.path.isfile(full) or now - os.path.getmtime(full) < min_age_s:
                continue
            os.unlink(full)
            removed.append(full)
        except OSError:
            pass
    return removed


_BLOCKED = re.compile(r"GLOBAL ([\w.]+)")


def safe_load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """Load a checkpoint without executing pickled code.

    Raises:
        FileNotFoundError: naming the path if it does not exist.
        LoadError: (a ``ValueError``) naming the path: it pickles a class outside torch's
            weights-only allow-list (named), or it is truncated / not a torch file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError with long text
        if isinstance(err, (FileNotFoundError, IsADirectoryError)):
            raise
        text = str(err)
        match = _BLOCKED.search(text)
        if match:
            raise LoadError(
                f"{path}: refused to load: it pickles the Python object {match.group(1)}, and "
                "loading pickled objects can run arbitrary code (only tensors and plain data are "
                "loaded). If you trust the file's source, allow that class with "
                f"torch.serialization.add_safe_globals([{match.group(1)}]) before loading"
            ) from err
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise LoadError(
            f"{path}: cannot be loaded: it is truncated or not a torch checkpoint ({first})"
        ) from err
