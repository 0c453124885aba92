"""Safe, atomic checkpoint files.

* :func:`atomic_save` writes through a temporary file in the same folder, ``fsync``-s it and
  renames it over the target, so a crash (SIGKILL included) never leaves a truncated file.
* :func:`safe_load` reads with ``torch.load(..., weights_only=True)``: loading a checkpoint never
  executes pickled code. Checkpoints of this package hold only tensors and plain Python data
  (dicts, lists, str, int, float, bool, None).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Union

import torch

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_save", "safe_load", "atomic_write_text", "atomic_write_bytes"]


def _atomic_replace(path: PathLike, write) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    """``torch.save(obj, path)`` made atomic (temp file in the same folder + rename)."""
    _atomic_replace(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: PathLike) -> None:
    """Write a text file atomically (UTF-8)."""
    _atomic_replace(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """Write a binary file atomically."""
    _atomic_replace(path, lambda handle: handle.write(data))


def safe_load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """Load a checkpoint without executing pickled code.

    Raises:
        FileNotFoundError: naming the path if it does not exist.
        ValueError: naming the path if it holds pickled objects other than tensors and plain data.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError with long text
        if isinstance(err, (FileNotFoundError, IsADirectoryError)):
            raise
        raise ValueError(
            f"{path}: cannot be loaded safely (weights_only=True): it is truncated, not a torch "
            f"checkpoint, or holds pickled Python objects beyond tensors and plain data. "
            f"Original error: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
