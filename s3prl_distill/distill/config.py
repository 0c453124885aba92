"""Configs of a distillation setup: the sections of a model YAML (``upstream_configs/*.yaml``).

```yaml
student: {...}   # s3prl_distill.models.config.StudentConfig   (owned by models/)
teacher: {...}   # s3prl_distill.teachers.config.TeacherConfig (owned by teachers/; optional)
loss:            # LossConfig (here)
  type: distilhubert      # distilhubert | fithubert
  cos_weight: 1.0         # DistilHuBERT lambda (Eq. 1)
  hint_weight: 0.1        # FitHuBERT lambda (Eq. 3)
  random_hints: null      # FitHuBERT Table 3: only N random hints per epoch (null: all)
  layer_reduction: mean   # DistilHuBERT: mean over the predicted layers (S3PRL) | sum (paper Eq.)
  include_padded_frames: false   # true: average over padding too (S3PRL / official FitHuBERT)
init:            # InitConfig (s3prl_distill.models.config, re-exported here)
  from_teacher: true      # copy the teacher's CNN + first num_layers transformer layers
  num_layers: 2
  copy_encoder_layer_norm: false  # S3PRL does not copy encoder.layer_norm
crop_samples: null        # optional: S3PRL's task.sequence_length (see DistillConfig)
```

:meth:`DistillConfig.from_yaml` parses the whole file, each section with its owner's dataclass,
strictly (:func:`s3prl_distill.config.from_dict`): errors name the file and the key.

S3PRL's own model config schema (``pretrain/distiller/config_model.yaml``: ``distiller:``,
``teacher:``, ``task:``, ``audio:``) is accepted too and translated
(:mod:`s3prl_distill.distill.s3prl_schema`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional, Union

from s3prl_distill.config import ConfigError, from_dict, load_yaml, to_dict
# the init: section is owned by the student models (one definition, re-exported here)
from s3prl_distill.models.config import InitConfig

__all__ = ["LossConfig", "InitConfig", "DistillConfig", "SECTIONS"]

#: top-level keys of a model YAML (``crop_samples`` is a value, not a section)
SECTIONS = ("student", "teacher", "loss", "init", "crop_samples")


@dataclass
class LossConfig:
    """Which layer-wise loss to train with and its weights.

    ``distilhubert``: mean (``layer_reduction: mean``, S3PRL's released code, default) or sum
    (``sum``, the paper's Eq. 1 and Fig. 1: N times larger, which changes what a gradient-clipping
    threshold means) over heads of L1 + cos_weight * -log sigmoid(cos).
    ``fithubert``: MSE(last head) + hint_weight * sum MSE(other heads) (``layer_reduction`` unused).
    ``target_norm``: ``layer_norm`` normalises each teacher target frame (no affine) before the
    distance, for pre-LN teachers whose intermediate states carry large offsets (Whisper);
    ``none`` (default) is the papers' setting.
    ``include_padded_frames``: ``false`` (default, ours) averages over valid frames only; ``true``
    over every frame of the padded batch, as S3PRL's DistilHuBERT and the official FitHuBERT
    losses do (their value then depends on the batch's padding).
    """

    type: Literal["distilhubert", "fithubert"] = "distilhubert"
    cos_weight: float = 1.0
    hint_weight: float = 0.1
    random_hints: Optional[int] = None
    target_norm: Literal["none", "layer_norm"] = "none"
    layer_reduction: Literal["mean", "sum"] = "mean"
    include_padded_frames: bool = False

    def validate(self) -> None:
        if self.random_hints is not None:
            if self.type != "fithubert":
                raise ConfigError("random_hints: only used with type fithubert")
            if self.random_hints < 0:
                raise ConfigError(f"random_hints: expected an integer >= 0, got {self.random_hints}")
        if self.cos_weight < 0:
            raise ConfigError(f"cos_weight: expected a number >= 0, got {self.cos_weight}")
        if self.hint_weight < 0:
            raise ConfigError(f"hint_weight: expected a number >= 0, got {self.hint_weight}")


def _student_config_cls():
    from s3prl_distill.models.config import StudentConfig

    return StudentConfig


def _teacher_config_cls():
    from s3prl_distill.teachers.config import TeacherConfig

    return TeacherConfig


@dataclass
class DistillConfig:
    """The parsed model YAML.

    Attributes:
        student: ``StudentConfig``.
        teacher: ``TeacherConfig`` or ``None`` (a YAML used only as an upstream needs none).
        loss: :class:`LossConfig`.
        init: :class:`InitConfig`.
        crop_samples: the training crop the model config asks for (S3PRL's
            ``task.sequence_length``): ``None`` = it says nothing (the runner's ``datarc``
            decides); ``0`` = whole utterances; ``n > 0`` = a random ``n``-sample segment of every
            longer utterance, shorter ones whole (S3PRL ``pretrain/bucket_dataset.py``
            ``WaveDataset._sample``). The data side reads it.
        source: where it came from (file path or description), for messages.
        schema: ``ours`` or ``s3prl`` (S3PRL's ``distiller/teacher/task/audio`` schema, translated).
    """

    student: Any
    teacher: Optional[Any] = None
    loss: LossConfig = field(default_factory=LossConfig)
    init: InitConfig = field(default_factory=InitConfig)
    crop_samples: Optional[int] = None
    source: str = "<config>"
    schema: Literal["ours", "s3prl"] = "ours"

    @classmethod
    def from_data(cls, data: Mapping[str, Any], where: str = "<config>") -> "DistillConfig":
        """Parse plain data (a loaded model YAML) strictly; errors start with ``where``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {list(SECTIONS)}, got {data!r}")
        from s3prl_distill.distill import s3prl_schema

        if s3prl_schema.is_s3prl_schema(data):
            return s3prl_schema.distill_config_from_s3prl(data, where=where)
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown top-level key(s) {unknown}; allowed keys: {list(SECTIONS)}"
            )
        if "student" not in data:
            raise ConfigError(f"{where}: missing top-level key 'student'")
        student = from_dict(_student_config_cls(), data["student"], where=f"{where}: student")
        teacher = None
        if data.get("teacher") is not None:
            teacher = from_dict(_teacher_config_cls(), data["teacher"], where=f"{where}: teacher")
        loss = from_dict(LossConfig, data.get("loss"), where=f"{where}: loss")
        init = from_dict(InitConfig, data.get("init"), where=f"{where}: init")
        if init.from_teacher and teacher is None:
            raise ConfigError(f"{where}: init.from_teacher is true but there is no 'teacher' section")
        crop = data.get("crop_samples")
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 0):
            raise ConfigError(f"{where}: crop_samples: expected null or an integer >= 0, got {crop!r}")
        return cls(student=student, teacher=teacher, loss=loss, init=init, crop_samples=crop,
                   source=where)

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike]) -> "DistillConfig":
        """Parse the model YAML at ``path`` (see the module docstring)."""
        return cls.from_data(load_yaml(path), where=os.fspath(path))

    def to_data(self) -> Dict[str, Any]:
        """Plain data (YAML/checkpoint-safe) that :meth:`from_data` parses back."""
        data: Dict[str, Any] = {"student": to_dict(self.student)}
        if self.teacher is not None:
            data["teacher"] = to_dict(self.teacher)
        data["loss"] = to_dict(self.loss)
        data["init"] = to_dict(self.init)
        if self.crop_samples is not None:
            data["crop_samples"] = int(self.crop_samples)
        return data

    def require_teacher(self) -> Any:
        """The teacher config, or a :class:`ConfigError` naming the file if it has none."""
        if self.teacher is None:
            raise ConfigError(
                f"{self.source}: distillation needs a 'teacher' section (source, path, arch)"
            )
        return self.teacher
