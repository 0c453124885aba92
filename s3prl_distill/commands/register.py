"""``s3prl-distill register``: give a trained student checkpoint a name usable as ``-u NAME``.

    s3prl-distill register my_distilhubert /path/to/student.ckpt    # add (--force to replace)
    s3prl-distill register --list                                   # show the registry
    s3prl-distill register --remove my_distilhubert                 # forget a name

Then ``python -m s3prl.run_downstream -u my_distilhubert -d ...`` needs no ``-k``. The registry
file is described in :mod:`s3prl_distill.upstream.registered` (``$S3PRL_DISTILL_REGISTRY``
overrides its location).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Dict, Optional, Set

from s3prl_distill.upstream.registered import (
    NAME_PATTERN,
    RegistryFileError,
    read_registry,
    registry_path,
    write_registry,
)
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

HELP = "register a student checkpoint under a name usable as an S3PRL upstream (-u NAME)"

__all__ = ["HELP", "add_arguments", "run", "register_checkpoint", "remove", "RegisterError",
           "reserved_names"]


class RegisterError(UserError):
    """The name or checkpoint cannot be registered (message says why)."""


def reserved_names() -> Set[str]:
    """Names that a registration must not take: S3PRL's hub entries and our built-in ones."""
    from s3prl_distill import compat
    from s3prl_distill.upstream.hubconf import ENTRIES

    compat.apply()
    import s3prl.hub as hub

    ours = set()
    try:
        from s3prl_distill import registry

        ours = set(registry.registered_names())
    except ImportError:
        pass
    names = {n for n in dir(hub) if not n.startswith("_")} - (ours - set(ENTRIES))
    return names | set(ENTRIES)


def register_checkpoint(name: str, ckpt: str, force: bool = False,
                        reserved: Optional[Set[str]] = None) -> Dict[str, str]:
    """Validate ``ckpt`` as a student checkpoint and record it as ``name``; returns the entry.

    Raises:
        RegisterError: invalid or reserved name, name taken (without ``force``), bad checkpoint.
    """
    from s3prl_distill.checkpoint import CheckpointError, read_checkpoint

    if not NAME_PATTERN.match(name):
        raise RegisterError(f"name {name!r}: use letters, digits and '_' (a Python identifier)")
    reserved = reserved_names() if reserved is None else reserved
    if name in reserved:
        raise RegisterError(f"name {name!r} is already an S3PRL or s3prl-distill upstream; "
                            f"choose another")
    path = os.path.abspath(os.path.expanduser(ckpt))
    if not os.path.isfile(path):
        raise RegisterError(f"{path}: checkpoint not found")
    try:
        family = str(read_checkpoint(path)["config"].get("family", "custom"))
    except (CheckpointError, ValueError, KeyError, RuntimeError) as err:
        raise RegisterError(f"{path}: not an s3prl-distill student checkpoint: {err}") from err
    entries = read_registry()
    if name in entries and not force and entries[name]["ckpt"] != path:
        raise RegisterError(f"name {name!r} is registered to {entries[name]['ckpt']}; "
                            f"use --force to replace it")
    entries[name] = {"ckpt": path, "family": family}
    write_registry(entries)
    return entries[name]


def remove(name: str) -> None:
    entries = read_registry()
    if name not in entries:
        raise RegisterError(f"{name!r} is not registered in {registry_path()}")
    del entries[name]
    write_registry(entries)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="upstream name to use with -u")
    parser.add_argument("ckpt", nargs="?", help="student checkpoint (.ckpt) to register")
    parser.add_argument("--force", action="store_true", help="replace an existing registration")
    parser.add_argument("--list", action="store_true", help="list registered checkpoints")
    parser.add_argument("--remove", metavar="NAME", help="unregister NAME")


def run(args: argparse.Namespace) -> int:
    try:
        if args.list:
            entries = read_registry()
            print(f"# {registry_path()}")
            for name, entry in entries.items():
                state = "" if os.path.isfile(entry["ckpt"]) else "  (MISSING)"
                print(f"{name}\t{entry['family']}\t{entry['ckpt']}{state}")
            return 0
        if args.remove:
            remove(args.remove)
            print(f"removed {args.remove} from {registry_path()}")
            return 0
        if not args.name or not args.ckpt:
            logger.error("usage: s3prl-distill register NAME CKPT [--force] | --list | --remove NAME")
            return 2
        entry = register_checkpoint(args.name, args.ckpt, force=args.force)
    except (RegisterError, RegistryFileError) as err:
        logger.error("%s", err)
        return 1
    print(f"registered {args.name} ({entry['family']}) -> {entry['ckpt']}")
    print(f"use it as: python -m s3prl.run_downstream -u {args.name} -d TASK ...")
    return 0
