"""Configs of a distillation setup: the sections of a model YAML (``upstream_configs/*.yaml``).

```yaml
student: {...}   # s3prl_distill.models.config.StudentConfig   (owned by models/)
teacher: {...}   # s3prl_distill.teachers.config.TeacherConfig (owned by teachers/; optional)
loss:            # LossConfig (here)
  type: distilhubert      # distilhubert | fithubert
  cos_weight: 1.0         # DistilHuBERT lambda (Eq. 1)
  hint_weight: 0.1        # FitHuBERT lambda (Eq. 3)
  random_hints: null      # FitHuBERT Table 3: only N random hints per epoch (null: all)
init:            # InitConfig (s3prl_distill.models.config, re-exported here)
  from_teacher: true      # copy the teacher's CNN + first num_layers transformer layers
  num_layers: 2
```

:meth:`DistillConfig.from_yaml` parses the whole file, each section with its owner's dataclass,
strictly (:func:`s3prl_distill.config.from_dict`): errors name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional, Union

from s3prl_distill.config import ConfigError, from_dict, load_yaml, to_dict
# the init: section is owned by the student models (one definition, re-exported here)
from s3prl_distill.models.config import InitConfig

__all__ = ["LossConfig", "InitConfig", "DistillConfig", "SECTIONS"]

#: top-level keys of a model YAML
SECTIONS = ("student", "teacher", "loss", "init")


@dataclass
class LossConfig:
    """Which layer-wise loss to train with and its weights.

    ``distilhubert``: sum over heads of L1 + cos_weight * -log sigmoid(cos).
    ``fithubert``: MSE(last head) + hint_weight * sum MSE(other heads).
    ``target_norm``: ``layer_norm`` normalises each teacher target frame (no affine) before the
    distance, for pre-LN teachers whose intermediate states carry large offsets (Whisper);
    ``none`` (default) is the papers' setting.
    """

    type: Literal["distilhubert", "fithubert"] = "distilhubert"
    cos_weight: float = 1.0
    hint_weight: float = 0.1
    random_hints: Optional[int] = None
    target_norm: Literal["none", "layer_norm"] = "none"

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
        source: where it came from (file path or description), for messages.
    """

    student: Any
    teacher: Optional[Any] = None
    loss: LossConfig = field(default_factory=LossConfig)
    init: InitConfig = field(default_factory=InitConfig)
    source: str = "<config>"

    @classmethod
    def from_data(cls, data: Mapping[str, Any], where: str = "<config>") -> "DistillConfig":
        """Parse plain data (a loaded model YAML) strictly; errors start with ``where``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {list(SECTIONS)}, got {data!r}")
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
        return cls(student=student, teacher=teacher, loss=loss, init=init, source=where)

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
        return data

    def require_teacher(self) -> Any:
        """The teacher config, or a :class:`ConfigError` naming the file if it has none."""
        if self.teacher is None:
            raise ConfigError(
                f"{self.source}: distillation needs a 'teacher' section (source, path, arch)"
            )
        return self.teacher
