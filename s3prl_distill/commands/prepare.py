"""``s3prl-distill prepare TASK ...``: check an official SUPERB corpus and write what the task reads.

    s3prl-distill prepare pr --librispeech /data/LibriSpeech --lexicon lex.txt --out prep/pr
    s3prl-distill prepare sid --voxceleb1 /data/VoxCeleb1 --split-file iden_split.txt --out prep/sid

One sub-command per task (pr asr ks ic sf sid asv er qbe sd); the work is done by
:mod:`s3prl_distill.superb.prepare` (one module per corpus). Prints ``KEY<TAB>PATH`` (or count) per
output. ``python -m s3prl_distill.superb.prepare TASK ...`` (what ``downstream_recipes/*/run.sh``
call) is the same command; it exits with 1 instead of 2 on a corpus error, as it always did.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Dict, List, Optional

from s3prl_distill.superb import prepare

logger = logging.getLogger(__name__)

HELP = "check an official SUPERB corpus and write what the S3PRL task reads (one sub-command per task)"

__all__ = ["HELP", "TASKS", "add_arguments", "run", "main"]


def _pr(args):
    return prepare.prepare_pr(args.librispeech, args.lexicon, args.out)


def _asr(args):
    return prepare.prepare_asr(args.librispeech, args.out, args.splits)


def _sf(args):
    return prepare.prepare_sf(args.root, args.out, {"train": args.train_speakers,
                                                    "valid": args.valid_speakers,
                                                    "test": args.test_speakers})


#: task -> (help, [(flag, argparse options)], what to run)
TASKS: Dict[str, tuple] = {
    "pr": ("LibriSpeech + lexicon: checks every word, writes phoneme.txt",
           [("--librispeech", {}), ("--lexicon", {"nargs": "+"}), ("--out", {})], _pr),
    "asr": ("LibriSpeech -> len_for_bucket/*.csv, char.dict",
            [("--librispeech", {}), ("--out", {}),
             ("--splits", {"nargs": "+", "required": False,
                           "default": ["train-clean-100", "dev-clean", "test-clean"]})], _asr),
    "ks": ("check Speech Commands v0.01 (train folder and test set)",
           [("--train", {}), ("--test", {})], lambda a: prepare.check_ks(a.train, a.test)),
    "ic": ("check Fluent Speech Commands", [("--root", {})], lambda a: prepare.check_ic(a.root)),
    "sf": ("check Audio SNIPS, write character.txt",
           [("--root", {}), ("--out", {}), ("--train-speakers", {"nargs": "+"}),
            ("--valid-speakers", {"nargs": "+"}), ("--test-speakers", {"nargs": "+"})], _sf),
    "sid": ("VoxCeleb1 + iden_split.txt (+ S3PRL's file lists, in our cache folder)",
            [("--voxceleb1", {}), ("--split-file", {}), ("--out", {})],
            lambda a: prepare.prepare_sid(a.voxceleb1, a.split_file, a.out)),
    "asv": ("VoxCeleb1 + trial list", [("--voxceleb1", {}), ("--trials", {}), ("--out", {})],
            lambda a: prepare.prepare_asv(a.voxceleb1, a.trials, a.out)),
    "er": ("IEMOCAP -> 5-fold meta data", [("--iemocap", {}), ("--out", {})],
           lambda a: prepare.prepare_er(a.iemocap, a.out)),
    "qbe": ("check quesst14Database", [("--root", {})], lambda a: prepare.check_qbe(a.root)),
    "sd": ("Kaldi-style diarization dirs -> + reco2dur, spk2utt",
           [("--source", {}), ("--out", {})], lambda a: prepare.prepare_sd(a.source, a.out)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, (help_text, options, func) in TASKS.items():
        p = sub.add_parser(task, help=help_text, description=help_text)
        for flag, extra in options:
            p.add_argument(flag, **{"required": True, **extra})
        p.set_defaults(_prepare=func)


def run(args: argparse.Namespace) -> int:
    """Prepare ``args.task``; prints one ``KEY<TAB>VALUE`` line per output. Errors propagate."""
    result = args._prepare(args)
    for key, value in result.items():
        print(f"{key}\t{value}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m s3prl_distill.superb.prepare``: 0, or 1 with ``error: ...`` on a corpus error."""
    parser = argparse.ArgumentParser(prog="python -m s3prl_distill.superb.prepare", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except prepare.PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
