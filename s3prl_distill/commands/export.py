"""``s3prl-distill export CKPT -o student.pt``: the student-only file of a pretraining checkpoint.

Reads a pretraining checkpoint (``states-N.ckpt``; any student checkpoint works), drops the
prediction heads unless the student's config keeps them (or ``--keep-heads``), and writes a
student checkpoint without optimizer, scheduler, RNG or data state (atomically). The result
loads with ``s3prl_distill.checkpoint.load_student`` and S3PRL's ``distill_student_local``.
"""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)

HELP = "write the student-only checkpoint (heads dropped) of a pretraining checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="pretraining checkpoint (states-N.ckpt) or student checkpoint")
    parser.add_argument("-o", "--output", required=True, help="student checkpoint to write")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument("--keep-heads", dest="keep_heads", action="store_const", const=True,
                       default=None, help="keep the prediction heads")
    heads.add_argument("--drop-heads", dest="keep_heads", action="store_const", const=False,
                       help="drop the heads even if the config keeps them")


def export_student(checkpoint: str, output: str, keep_heads=None) -> str:
    """Write the student of ``checkpoint`` to ``output``; returns ``output``."""
    from s3prl_distill.checkpoint import read_checkpoint, save_student, student_from_checkpoint

    ckpt = read_checkpoint(checkpoint)
    student = student_from_checkpoint(ckpt, keep_heads, where=os.fspath(checkpoint))
    training = dict(ckpt.get("training") or {})
    if "step" in ckpt:
        training.setdefault("step", ckpt["step"])
    training["exported_from"] = os.path.basename(os.fspath(checkpoint))
    save_student(output, student, ckpt.get("teacher") or {}, training)
    return output


def run(args: argparse.Namespace) -> int:
    from s3prl_distill.checkpoint import CheckpointError

    try:
        path = export_student(args.checkpoint, args.output, args.keep_heads)
    except (CheckpointError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    print(path)
    return 0
