"""``s3prl-distill export CKPT -o OUT [--to ckpt|hf|onnx|superb-hidden]``: a student out of its checkpoint.

* ``--to ckpt`` (default): the student-only checkpoint of a pretraining checkpoint (heads dropped
  unless the config keeps them or ``--keep-heads``), without optimizer, scheduler, RNG or data
  state; loads with ``s3prl_distill.checkpoint.load_student`` and S3PRL's ``distill_student_local``.
* ``--to hf``: a Hugging Face ``HubertModel`` folder (``save_pretrained`` form, no custom code;
  heads a checkpoint carries go to ``prediction_heads.safetensors``), :mod:`s3prl_distill.export.hf`.
* ``--to onnx``: ``OUT`` (``.onnx``) and ``OUT.int8.onnx``, every hidden state and the output
  lengths, checked against PyTorch on unseen lengths, :mod:`s3prl_distill.export.onnx`.
* ``--to superb-hidden``: the SUPERB hidden-set submission folder (``expert.py``, ``model.pt``,
  ``requirements.txt``), runnable with torch alone and validated, :mod:`s3prl_distill.export.superb_hidden`.

Errors a user can fix (not a checkpoint, a student HF cannot express, an output that exists) are
one line (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)

HELP = "export a student: student-only checkpoint, Hugging Face folder, ONNX, SUPERB hidden-set folder"

TARGETS = ("ckpt", "hf", "onnx", "superb-hidden")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="pretraining checkpoint (states-N.ckpt) or student checkpoint")
    parser.add_argument("-o", "--output", required=True,
                        help="what to write: a checkpoint file (ckpt), a folder (hf, superb-hidden), "
                             "a .onnx file (onnx)")
    parser.add_argument("--to", choices=TARGETS, default="ckpt",
                        help="export target (default: ckpt, the student-only checkpoint)")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument("--keep-heads", dest="keep_heads", action="store_const", const=True,
                       default=None, help="keep the prediction heads")
    heads.add_argument("--drop-heads", dest="keep_heads", action="store_const", const=False,
                       help="drop the heads even if the config keeps them")
    parser.add_argument("--no-int8", action="store_true", help="onnx: skip the int8 copy")


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


def _load(checkpoint: str, keep_heads):
    from s3prl_distill.checkpoint import read_checkpoint, student_from_checkpoint

    ckpt = read_checkpoint(checkpoint)
    student = student_from_checkpoint(ckpt, keep_heads, where=os.fspath(checkpoint)).eval()
    meta = {"teacher": ckpt.get("teacher") or {},
            "name": os.path.splitext(os.path.basename(os.fspath(checkpoint)))[0]}
    return student, meta


def export(checkpoint: str, output: str, to: str = "ckpt", keep_heads=None, int8: bool = True):
    """Export ``checkpoint`` to target ``to`` at ``output``; returns what was written."""
    if to == "ckpt":
        return [export_student(checkpoint, output, keep_heads)]
    if to == "hf":
        from s3prl_distill.export.hf import export_hf

        # heads the checkpoint carries are kept (in a side file), unless --drop-heads
        student, meta = _load(checkpoint, True if keep_heads is None else keep_heads)
        return export_hf(student, output, meta)
    student, meta = _load(checkpoint, keep_heads)
    if to == "onnx":
        from s3prl_distill.export.onnx import export_onnx

        info = export_onnx(student, output, int8=int8)
        return [p for p in (info.path, info.int8_path) if p]
    if to == "superb-hidden":
        from s3prl_distill.export.superb_hidden import export_superb_hidden

        return export_superb_hidden(student, output, meta)
    raise ValueError(f"unknown export target {to!r}; expected one of {TARGETS}")


def run(args: argparse.Namespace) -> int:
    for path in export(args.checkpoint, args.output, args.to, args.keep_heads, not args.no_int8):
        print(path)
    return 0
