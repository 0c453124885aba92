"""``s3prl-distill init CONFIG -o CKPT [--teacher SPEC]``: write an untrained or teacher-initialised
student checkpoint from a model YAML.

``--teacher SPEC`` sets or overrides the YAML's ``teacher:`` section, either as a YAML file (its
``teacher:`` section, or the whole file if it has none) or as comma-separated ``key=value`` pairs,
e.g. ``source=fairseq,path=/data/hubert_base_ls960.pt`` (values read as YAML scalars:
``null``, ``true``, numbers). When the YAML's ``init.from_teacher`` is true (DistilHuBERT) the
student gets the teacher's CNN and first ``init.num_layers`` layers; ``--no-teacher-init`` skips
that and writes a randomly initialised student.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict

import torch
import yaml

from s3prl_distill.config import ConfigError, load_yaml, to_dict

logger = logging.getLogger(__name__)

HELP = "write an untrained or teacher-initialised student checkpoint from a model YAML"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model YAML (upstream_configs/*.yaml)")
    parser.add_argument("-o", "--output", required=True, help="student checkpoint to write")
    parser.add_argument("--teacher", metavar="SPEC", default=None,
                        help="teacher: a YAML file or key=value pairs, e.g. source=fairseq,path=X.pt")
    parser.add_argument("--no-teacher-init", action="store_true",
                        help="do not copy teacher weights even if the YAML's init asks for it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")


def parse_teacher_spec(spec: str) -> Dict[str, Any]:
    """``--teacher`` value -> plain mapping for the ``teacher:`` section.

    Raises:
        ConfigError: naming the spec and the malformed part.
    """
    if os.path.isfile(spec) or spec.endswith((".yaml", ".yml")):
        data = load_yaml(spec)
        section = data.get("teacher", data)
        if not isinstance(section, dict):
            raise ConfigError(f"{spec}: 'teacher' must be a mapping, got {section!r}")
        return dict(section)
    out: Dict[str, Any] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(
                f"--teacher {spec!r}: expected key=value pairs separated by commas "
                f"(e.g. source=fairseq,path=X.pt) or a YAML file, got {part!r}"
            )
        key, value = part.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--teacher {spec!r}: empty key in {part!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--teacher {spec!r}: value of {key!r} is not a YAML scalar") from err
        out[key] = value if isinstance(parsed, (dict, list)) else parsed
        if key == "path" and parsed is not None:
            out[key] = value  # paths stay strings even if they look like numbers
    return out


def run(args: argparse.Namespace) -> int:
    from s3prl_distill.checkpoint import save_student
    from s3prl_distill.distill.config import DistillConfig
    from s3prl_distill.models import build_student

    data = load_yaml(args.config)
    if args.teacher:
        override = parse_teacher_spec(args.teacher)
        base = data.get("teacher") or {}
        if "source" in override and override.get("source") != base.get("source"):
            base = {}  # a different source: the old section's keys do not apply
        data["teacher"] = {**base, **override}
    if args.no_teacher_init and isinstance(data.get("init"), dict):
        data["init"] = {**data["init"], "from_teacher": False}
    cfg = DistillConfig.from_data(data, where=os.fspath(args.config))

    torch.manual_seed(args.seed)
    student = build_student(cfg.student)
    teacher_desc: Dict[str, Any] = to_dict(cfg.teacher) if cfg.teacher is not None else {}
    copied = 0
    if cfg.init.from_teacher:
        from s3prl_distill.distill.init import init_student_from_teacher
        from s3prl_distill.teachers import build_teacher

        teacher = build_teacher(cfg.teacher)
        copied = len(init_student_from_teacher(student, teacher, cfg.init))
        teacher_desc = teacher.describe()
    training = {
        "steps": 0,
        "config_file": os.path.abspath(args.config),
        "initialised_from_teacher": bool(cfg.init.from_teacher),
        "teacher_layers_copied": cfg.init.num_layers if cfg.init.from_teacher else 0,
        "seed": args.seed,
    }
    save_student(args.output, student, teacher_desc=teacher_desc, training=training)
    n_params = sum(p.numel() for p in student.parameters())
    n_heads = sum(p.numel() for p in student.heads.parameters())
    print(
        f"wrote {args.output}: {cfg.student.family} student, {n_params / 1e6:.2f} M parameters "
        f"({(n_params - n_heads) / 1e6:.2f} M without heads), "
        + (f"{copied} tensors from the teacher" if cfg.init.from_teacher else "random initialisation")
    )
    return 0
