"""Checkpoints the user registered under a name: zero-argument S3PRL upstream entries.

``s3prl-distill register my_student /path/to/student.ckpt`` records the checkpoint in a registry
file; from then on ``-u my_student`` works in S3PRL's runners with no ``-k`` (the import hook puts
:func:`registered_entries` on ``s3prl.hub``).

Registry file: ``$S3PRL_DISTILL_REGISTRY`` if set, else
``$XDG_CONFIG_HOME/s3prl-distill/registered.json`` (``~/.config/...`` without XDG_CONFIG_HOME)::

    {"version": 1,
     "entries": {"my_student": {"ckpt": "/abs/path/student.ckpt", "family": "distilhubert"}}}

Names are Python identifiers and never shadow an S3PRL hub name or a built-in s3prl-distill entry
(the ``register`` command checks; :mod:`s3prl_distill.registry` refuses at registration time).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Callable, Dict, Optional
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["RegistryFileError", "registry_path", "read_registry", "write_registry",
           "registered_entries", "make_entry", "ENV_VAR", "NAME_PATTERN"]

ENV_VAR = "S3PRL_DISTILL_REGISTRY"
VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RegistryFileError(UserError):
    """The registry file is unreadable or not in the expected format (message names the file)."""


def registry_path() -> Path:
    """Where registered checkpoints are recorded (see the module docstring)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "s3prl-distill" / "registered.json"


def read_registry(path: Optional[Path] = None) -> Dict[str, Dict[str, str]]:
    """``{name: {"ckpt": path, "family": str}}``; empty when the file does not exist.

    Raises:
        RegistryFileError: not JSON, wrong version, or a malformed entry.
    """
    path = Path(path) if path is not None else registry_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RegistryFileError(f"{path}: not a readable JSON registry: {err}") from err
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(
            data.get("entries"), dict):
        raise RegistryFileError(
            f"{path}: expected {{\"version\": {VERSION}, \"entries\": {{name: {{\"ckpt\": ...}}}}}}")
    entries = {}
    for name, entry in data["entries"].items():
        if not NAME_PATTERN.match(name):
            raise RegistryFileError(f"{path}: entries.{name}: not a valid upstream name")
        if not isinstance(entry, dict) or not isinstance(entry.get("ckpt"), str):
            raise RegistryFileError(f"{path}: entries.{name}.ckpt: expected a checkpoint path")
        entries[name] = {"ckpt": entry["ckpt"], "family": str(entry.get("family", "custom"))}
    return entries


def write_registry(entries: Dict[str, Dict[str, str]], path: Optional[Path] = None) -> Path:
    """Write ``entries`` atomically; returns the file written."""
    from s3prl_distill.io import atomic_write_text

    path = Path(path) if path is not None else registry_path()
    text = json.dumps({"version": VERSION, "entries": dict(sorted(entries.items()))}, indent=2)
    atomic_write_text(text + "\n", path)
    return path


def make_entry(name: str, ckpt: str) -> Callable:
    """A zero-argument hub entry that loads ``ckpt`` as an s3prl-distill student upstream."""

    def entry(ckpt_arg=None, *args, model_config=None, refresh=False, **kwargs):
        given = kwargs.pop("ckpt", None) or ckpt_arg
        if given and os.path.abspath(os.fspath(given)) != os.path.abspath(ckpt):
            raise ValueError(
                f"upstream {name!r} is registered to {ckpt}; got -k {given}. Use "
                f"-u distill_student_local -k {given} for another checkpoint")
        if not os.path.isfile(ckpt):
            raise FileNotFoundError(
                f"upstream {name!r}: registered checkpoint {ckpt} no longer exists "
                f"(re-register it: s3prl-distill register --force {name} NEW_PATH)")
        from s3prl_distill.upstream.hubconf import distill_student_local

        return distill_student_local(ckpt, model_config=model_config, **kwargs)

    entry.__name__ = name
    entry.__qualname__ = name
    entry.__doc__ = f"s3prl-distill student registered as {name!r}: {ckpt}"
    return entry


def registered_entries() -> Dict[str, Callable]:
    """``{name: zero-argument entry}`` for every checkpoint in the registry file.

    A broken registry file is logged as an error and yields no entries (so importing S3PRL's hub
    never fails because of it); ``s3prl-distill register --list`` shows the error itself.
    """
    try:
        entries = read_registry()
    except RegistryFileError as err:
        logger.error("%s (no registered upstreams loaded)", err)
        return {}
    return {name: make_entry(name, entry["ckpt"]) for name, entry in entries.items()}
