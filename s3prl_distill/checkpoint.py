"""Student checkpoints: save a :class:`~s3prl_distill.models.Student`, load it back (also from
pretraining checkpoints), always through :func:`s3prl_distill.io.atomic_save` / ``safe_load``.

Format (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "s3prl_distill.student", "version": 1,
     "config": to_dict(StudentConfig), "state_dict": {name: Tensor},
     "teacher": {...plain description or {}...}, "training": {...plain summary or {}...}}

Pretraining checkpoints are the same dict plus ``optimizer``, ``scheduler``, ``step``, ``rng``,
``data_state``, ``runner_config``, ``model_config``; :func:`load_student` ignores those extras.
A checkpoint saved while heads were attached keeps them in ``state_dict``; :func:`load_student`
drops them unless the config (or ``keep_heads=True``) keeps them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from s3prl_distill.config import ConfigError, from_dict, to_dict
from s3prl_distill.io import atomic_save, safe_load
from s3prl_distill.state_dict import describe_mismatch
from s3prl_distill.models import Student, StudentConfig, build_student
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

FORMAT = "s3prl_distill.student"
VERSION = 1

__all__ = ["FORMAT", "VERSION", "CheckpointError", "student_checkpoint", "save_student",
           "read_checkpoint", "student_from_checkpoint", "load_student", "student_meta"]

PathLike = Union[str, os.PathLike]


class CheckpointError(UserError):
    """A file is not a student checkpoint of a supported version, or its contents do not match."""


def _plain(value: Any, where: str) -> Any:
    """Check that ``value`` is plain data (dict/list/str/int/float/bool/None/Tensor)."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str/int")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"{where}: {type(value).__name__} is not plain data; checkpoints hold only tensors, dicts, "
        f"lists, str, int, float, bool and None (weights_only loading)"
    )


def student_checkpoint(student: Student, teacher_desc: Optional[Mapping] = None,
                       training: Optional[Mapping] = None,
                       extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The checkpoint dict for ``student`` (what :func:`save_student` writes).

    ``extra`` keys (e.g. ``optimizer``, ``step`` of a pretraining checkpoint) are added at the top
    level and must not overwrite the student keys.
    """
    ckpt: Dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": to_dict(student.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in student.state_dict().items()},
        "teacher": _plain(dict(teacher_desc or {}), "teacher"),
        "training": _plain(dict(training or {}), "training"),
    }
    for key, value in (extra or {}).items():
        if key in ckpt:
            raise ValueError(f"extra key {key!r} would overwrite the student checkpoint's own key")
        ckpt[key] = _plain(value, key)
    return ckpt


def save_student(path: PathLike, student: Student, teacher_desc: Optional[Mapping] = None,
                 training: Optional[Mapping] = None, extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``student`` to ``path`` atomically (see the module docstring for the format)."""
    atomic_save(student_checkpoint(student, teacher_desc, training, extra), path)
    logger.info("saved student checkpoint %s", os.fspath(path))


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load and check the checkpoint dict at ``path`` (safe_load, format and version checked).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a student checkpoint, or an unsupported version; names the file.
    """
    path = os.fspath(path)
    try:
        ckpt = safe_load(path)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = ""
        if isinstance(ckpt, dict) and ("Upstream_Config" in ckpt or "Config" in ckpt):
            hint = " (it looks like an S3PRL checkpoint: use S3PRL's own upstream for it)"
        raise CheckpointError(
            f"{path}: not an s3prl-distill student checkpoint: expected format '{FORMAT}', "
            f"found {found!r}{hint}"
        )
    version = ckpt.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"{path}: student checkpoint version {version!r} is not supported (this package "
            f"reads version {VERSION})"
        )
    for key in ("config", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint key '{key}' is missing or not a dict")
    return ckpt


def student_from_checkpoint(ckpt: Mapping[str, Any], keep_heads: Optional[bool] = None,
                            where: str = "checkpoint") -> Student:
    """Build the student of a checkpoint dict and load its weights (heads per ``keep_heads``).

    Args:
        keep_heads: True keeps the heads, False drops them, None follows ``config.keep_heads``.
    """
    cfg = from_dict(StudentConfig, ckpt["config"], where=f"{where}: config")
    student = build_student(cfg)
    state = dict(ckpt["state_dict"])
    keep = cfg.keep_heads if keep_heads is None else keep_heads
    student.match_state_heads(state)  # saved after drop_heads(): the model lacks those heads too
    _load_state(student, state, where)
    if not keep:
        student.drop_heads(force=True)
    elif keep_heads is None:
        student.drop_heads()  # what the config keeps: every head, or the last one (last_head)
    return student


def _load_state(student: Student, state: Dict[str, torch.Tensor], where: str) -> None:
    problem = describe_mismatch(student.state_dict(), state)
    if problem:
        raise CheckpointError(f"{where}: state_dict does not match its config: {problem}")
    student.load_state_dict(state, strict=True)


def load_student(path: PathLike, keep_heads: Optional[bool] = None,
                 map_location: Union[str, torch.device] = "cpu",
                 loaded: Optional[Mapping[str, Any]] = None) -> Tuple[Student, Dict[str, Any]]:
    """Load a student (or pretraining) checkpoint.

    Args:
        path: the checkpoint file.
        keep_heads: True keeps the heads, False drops them, None (default) follows the config:
            heads are dropped unless ``config.keep_heads``.
        loaded: the dict :func:`read_checkpoint` already returned for ``path`` (not read again).
    Returns:
        (student in eval mode, meta) where meta has ``config`` (plain dict), ``teacher``,
        ``training``, ``version`` and, for pretraining checkpoints, ``step``.
    """
    ckpt = loaded if loaded is not None else read_checkpoint(path)
    student = student_from_checkpoint(ckpt, keep_heads, where=os.fspath(path))
    student.to(map_location).eval()
    return student, student_meta(ckpt)


def student_meta(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The plain description of a checkpoint dict (config, teacher, training, version, step)."""
    meta = {
        "config": ckpt["config"],
        "teacher": ckpt.get("teacher") or {},
        "training": ckpt.get("training") or {},
        "version": ckpt["version"],
    }
    if "step" in ckpt:
        meta["step"] = ckpt["step"]
    return meta
