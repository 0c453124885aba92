"""``s3prl-distill convert SRC -o OUT.ckpt``: a published checkpoint as our student checkpoint.

Detects the format of ``SRC`` and names it: the official FitHuBERT / FitW2V2 Lightning ``.ckpt``,
S3PRL's distiller checkpoint (the released DistilHuBERT), or a Hugging Face ``HubertModel`` /
``Wav2Vec2Model`` folder. Reads with weights_only (no pickled code runs), writes a self-describing
student checkpoint atomically (never over an existing file), and prints what it read, what it
dropped and what to know. The result loads with ``s3prl_distill.checkpoint.load_student`` and the
S3PRL upstreams (``distill_student_local -k OUT.ckpt``). See docs/MODELS.md, "Published
checkpoints in".
"""

from __future__ import annotations

import argparse
import errno
import os

HELP = "convert a published checkpoint (official FitHuBERT, S3PRL DistilHuBERT, Hugging Face) to a student checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint file or Hugging Face folder")
    parser.add_argument("-o", "--output", required=True, help="student checkpoint to write (must not exist)")
    parser.add_argument("--config", default=None,
                        help="official FitHuBERT only: the training YAML released with the checkpoint "
                             "(default: the checkpoint's own hyper_parameters)")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument("--keep-heads", dest="keep_heads", action="store_const", const=True, default=None,
                       help="keep the prediction heads when the student is loaded (they are always in the file)")
    heads.add_argument("--drop-heads", dest="keep_heads", action="store_const", const=False,
                       help="drop them when loaded (the default of every format)")
    parser.add_argument("--hidden-states", default=None,
                        help="the student's hidden_states layout (layers | layers+heads | heads ...; "
                             "needs --keep-heads for heads)")
    parser.add_argument("--time-reduction-tail", choices=["pad", "drop"], default=None,
                        help="official FitHuBERT is converted with 'drop' (equal to the official model); "
                             "'pad' keeps the last odd CNN frame (our default for training)")


def run(args: argparse.Namespace) -> int:
    from s3prl_distill.config import load_yaml
    from s3prl_distill.convert import convert_path, write_converted

    if os.path.exists(args.output):  # before any work; write_converted checks again
        raise FileExistsError(errno.EEXIST, "exists; convert never overwrites a file (choose another -o)",
                              args.output)
    distiller_config = load_yaml(args.config) if args.config else None
    converted = convert_path(args.source, distiller_config)
    print(f"{args.source}: {converted.description}")
    student = write_converted(converted, args.output, args.keep_heads, args.hidden_states,
                              args.time_reduction_tail)
    cfg = student.config
    n_heads = len(student.heads)
    student.drop_heads()  # as load_student will (a no-op when the config keeps them)
    tr = (f", time reduction k={cfg.time_reduction} (tail: {cfg.time_reduction_tail})"
          if cfg.time_reduction > 1 else "")
    print(f"wrote {args.output}: {cfg.family} student, {cfg.encoder.num_layers} layers x "
          f"{cfg.encoder.dim}{tr}, {n_heads} heads in the file ({'kept' if cfg.keep_heads else 'dropped'} "
          f"when loaded); hidden_states: {student.num_hidden_states} x [B, T, {student.dim}] at "
          f"{student.downsample_rate} samples/frame")
    for line in converted.dropped:
        print(f"  dropped {line}")
    for line in converted.notes:
        print(f"  note: {line}")
    return 0
