"""Frozen teachers: one adapter per source, all returning their layer outputs with lengths.

>>> from s3prl_distill.teachers import TeacherConfig, build_teacher
>>> teacher = build_teacher(TeacherConfig(source="fairseq", path="hubert_base_ls960.pt"))  # doctest: +SKIP
>>> out = teacher(wavs, wav_lengths)          # out.hidden_states: 13 x [B, T, 768]  # doctest: +SKIP
>>> out = teacher(wavs, wav_lengths, layers=[4, 8, 12])   # only those 3 states  # doctest: +SKIP

See :mod:`s3prl_distill.teachers.config` for the sources and
:mod:`s3prl_distill.teachers.base` for the layer convention.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Union

from s3prl_distill.config import from_dict
from s3prl_distill.teachers.base import Teacher, TeacherError, TeacherOutput
from s3prl_distill.teachers.config import TeacherConfig

__all__ = ["Teacher", "TeacherOutput", "TeacherConfig", "TeacherError", "build_teacher"]


def build_teacher(cfg: Union[TeacherConfig, Mapping[str, Any]]) -> Teacher:
    """Load the frozen teacher described by ``cfg`` (a :class:`TeacherConfig` or its plain dict).

    Raises:
        ConfigError: a bad config value (naming the key).
        TeacherError: a missing/unreadable file or weights that do not fit (naming the path).
    """
    if not isinstance(cfg, TeacherConfig):
        cfg = from_dict(TeacherConfig, cfg, where="teacher")
    if cfg.path is not None:
        cfg = dataclasses.replace(cfg, path=os.path.expanduser(cfg.path))
    teacher = _load(cfg)
    padding = cfg.padding or ("s3prl" if cfg.source == "s3prl" else "masked")
    return teacher.configure(precision=cfg.precision, eval_mode=cfg.eval_mode, fast_path=cfg.fast_path,
                             padding=padding)


def _load(cfg: TeacherConfig) -> Teacher:
    """The adapter of ``cfg.source``, loaded (settings not yet applied)."""
    if cfg.source == "torchaudio":
        from s3prl_distill.teachers.wav2vec2 import load_torchaudio_teacher

        return load_torchaudio_teacher(cfg)
    if cfg.source == "fairseq":
        from s3prl_distill.teachers.fairseq import load_fairseq_teacher

        return load_fairseq_teacher(cfg)
    if cfg.source == "huggingface":
        from s3prl_distill.teachers.huggingface import load_huggingface_teacher

        return load_huggingface_teacher(cfg)
    if cfg.source == "s3prl":
        from s3prl_distill.teachers.s3prl_hub import load_s3prl_teacher

        return load_s3prl_teacher(cfg)
    if cfg.source in ("whisper_ct2", "whisper_pt"):
        from s3prl_distill.teachers.whisper import load_whisper_teacher

        return load_whisper_teacher(cfg)
    raise TeacherError(f"teacher.source: unknown source {cfg.source!r}")  # unreachable: Literal-checked
