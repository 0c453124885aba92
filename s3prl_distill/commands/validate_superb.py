"""``s3prl-distill validate-superb FOLDER [--python PY]``: check a SUPERB hidden-set submission folder.

Runs the folder's ``expert.py`` in a separate process (``--python``: e.g. a venv with torch alone)
and checks it against the challenge's upstream rules (:mod:`s3prl_distill.export.validate`):
prints ``OK`` or one line per problem (exit code 1).
"""

from __future__ import annotations

import argparse

HELP = "check a SUPERB hidden-set submission folder (expert.py, model.pt, requirements.txt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="the submission folder")
    parser.add_argument("--python", default=None,
                        help="interpreter to run expert.py with (default: this one)")


def run(args: argparse.Namespace) -> int:
    from s3prl_distill.export.validate import validate_folder

    problems = validate_folder(args.folder, python=args.python)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"OK: {args.folder} follows the SUPERB hidden-set upstream rules")
    return 0
