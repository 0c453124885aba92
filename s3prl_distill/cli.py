"""The ``s3prl-distill`` command: one sub-command per module under :mod:`s3prl_distill.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``s3prl-distill --help`` stays fast.
A user error (:class:`s3prl_distill.errors.UserError`, a missing file, a full disk) prints one
line and exits with 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from s3prl_distill.errors import DEBUG_ENV, run_command

# command name -> module path (each module: HELP, add_arguments(parser), run(args) -> int)
COMMANDS = {
    "init": "s3prl_distill.commands.init",
    "demo": "s3prl_distill.commands.demo",
    "bench": "s3prl_distill.commands.bench",
    "plan": "s3prl_distill.commands.plan",
    "profile": "s3prl_distill.commands.profile",
    "submit": "s3prl_distill.commands.submit",
    "export": "s3prl_distill.commands.export",
    "validate-superb": "s3prl_distill.commands.validate_superb",
    "register": "s3prl_distill.commands.register",
    "convert": "s3prl_distill.commands.convert",
    "prepare": "s3prl_distill.commands.prepare",
}


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as err:
        if err.name == COMMANDS[name]:
            return None
        raise


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="s3prl-distill",
        description="Distil speech SSL models (DistilHuBERT, FitHuBERT) and use them in S3PRL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others are listed by name.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name in COMMANDS:
        if name == chosen:
            module = _load(name)
            if module is None:
                parser.error(f"command '{name}' is not available in this installation")
            cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(cmd)
            cmd.set_defaults(_module=module)
        else:
            sub.add_parser(name, help=f"(see: s3prl-distill {name} -h)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(lambda: args._module.run(args), f"s3prl-distill {args.command}", args.debug)


if __name__ == "__main__":
    sys.exit(main())
