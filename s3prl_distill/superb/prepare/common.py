"""What every corpus preparer shares: the error type and the checks that name what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from s3prl_distill.errors import UserError
from s3prl_distill.io import atomic_write_text

__all__ = ["PrepareError", "need_dir", "need_file", "write_lines", "num_frames"]


class PrepareError(UserError):
    """The corpus is not in the expected layout (the message names the file and what was expected)."""


def need_dir(path, what: str) -> Path:
    """``path`` as a Path; :class:`PrepareError` naming ``what`` if it is not a folder."""
    path = Path(path)
    if not path.is_dir():
        raise PrepareError(f"{path}: {what} folder not found")
    return path


def need_file(path, what: str) -> Path:
    """``path`` as a Path; :class:`PrepareError` naming ``what`` if it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found")
    return path


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (one per line) atomically, creating the folder."""
    atomic_write_text("".join(line + "\n" for line in lines), path)


def num_frames(path: Path) -> int:
    """Samples per channel of an audio file, from its header."""
    from s3prl_distill.audio import audio_info

    return audio_info(path).num_frames
