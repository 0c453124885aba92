"""Register s3prl-distill with S3PRL: hub entries, SUPERB pieces, and the pretrain task directory.

:func:`register` (idempotent):

1. applies :func:`s3prl_distill.compat.apply` (S3PRL must import on current torch/torchaudio);
2. puts ``s3prl_distill.upstream.hubconf.ENTRIES`` and
   ``s3prl_distill.upstream.registered.registered_entries()`` onto ``s3prl.hub``, so that
   ``-u distilhubert_local`` (``getattr(s3prl.hub, name)``) and the ``-u`` choices of
   ``s3prl.run_downstream`` (``dir(s3prl.hub)``) include them. A name that S3PRL (or anything other
   than this registry) already defines is never shadowed: :class:`RegistryError`;
3. calls :func:`s3prl_distill.superb.install` (what S3PRL's wheel lacks for the SUPERB tasks);
4. :func:`extend_pretrain_path`: appends :data:`PRETRAIN_DIR` (``s3prl_distill/pretrain``) to the
   ``__path__`` of S3PRL's pretrain package, both as ``s3prl.pretrain`` and as the top-level
   ``pretrain`` that S3PRL's ``run_pretrain.py`` imports from inside S3PRL's folder, so that
   ``pretrain.distiller.pretrain_expert`` (``-u distiller``) imports ours.

Which ``pretrain.<name>`` wins (Python's import rule for a package path with two folders, S3PRL's
first): a regular module or package (a ``.py`` file, or a folder WITH ``__init__.py``) is taken
from the first folder that has one, so S3PRL's own tasks (``apc``, ``mockingjay``, ``tera``, ...,
``runner``) always win over anything of ours. A folder WITHOUT ``__init__.py`` is only a
namespace portion, used when no folder has a regular package of that name. S3PRL's git checkout
ships its own ``pretrain/distiller/`` as such a folder, so OUR ``distiller`` package wins: that is
deliberate (:data:`REPLACED_S3PRL_TASKS`; ``run_pretrain.py -u distiller`` runs our distiller,
and S3PRL's ``-u`` choices, the folder names of ``pretrain/``, include ``distiller`` only in a
git checkout). Any other name of ours equal to one of S3PRL's is a collision
(:func:`pretrain_collisions`; logged when it happens, and a test keeps the list empty).

The import hook (``_s3prl_distill_hook``, installed as a ``.pth`` with the package) calls
:func:`register` the moment ``s3prl.hub`` is imported and :func:`extend_pretrain_path` when a
pretrain package of S3PRL is imported.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType
from typing import Callable, Dict, List, Optional

import _s3prl_distill_hook as hook
from s3prl_distill import compat, superb
from s3prl_distill.upstream import hubconf, registered

logger = logging.getLogger(__name__)

__all__ = ["RegistryError", "register", "registered_names", "extend_pretrain_path",
           "PRETRAIN_DIR", "REPLACED_S3PRL_TASKS", "collect_entries", "pretrain_names",
           "pretrain_collisions"]

#: our S3PRL pretrain task directory (holds ``distiller/pretrain_expert.py``)
PRETRAIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain")

#: S3PRL pretrain tasks that ours replace on purpose: S3PRL ships them (git checkout only) as a
#: folder without ``__init__.py``, which our regular package of the same name wins over
REPLACED_S3PRL_TASKS = ("distiller",)

_OURS: Dict[str, Callable] = {}  # names this registry put on s3prl.hub -> the callable put there


class RegistryError(RuntimeError):
    """A plugin entry would shadow a name S3PRL (or another plugin) already defines."""


def collect_entries() -> Dict[str, Callable]:
    """Hub entries of this package: ``hubconf.ENTRIES`` plus the user-registered checkpoints.

    Raises:
        RegistryError: a registered checkpoint name equals a built-in entry name.
    """
    entries: Dict[str, Callable] = dict(hubconf.ENTRIES)
    for name, func in registered.registered_entries().items():
        if name in entries:
            raise RegistryError(
                f"registered checkpoint name {name!r} collides with the built-in entry "
                f"{name!r}; re-register it under another name")
        entries[name] = func
    return entries


def pretrain_names(folder: str) -> Dict[str, str]:
    """What a folder on a package path provides: ``{name: "module" | "package" | "namespace"}``.

    ``module``: ``name.py``; ``package``: ``name/__init__.py``; ``namespace``: a folder without
    ``__init__.py`` (only used when no folder on the path has a module or package of that name).
    """
    names: Dict[str, str] = {}
    if not os.path.isdir(folder):
        return names
    for entry in sorted(os.listdir(folder)):
        full = os.path.join(folder, entry)
        if entry.startswith((".", "_")):
            continue
        if entry.endswith(".py") and os.path.isfile(full):
            names[entry[:-3]] = "module"
        elif os.path.isdir(full) and entry.isidentifier():
            names[entry] = "package" if os.path.isfile(os.path.join(full, "__init__.py")) else "namespace"
    return names


def pretrain_collisions(s3prl_folder: str) -> Dict[str, str]:
    """Names of ours that S3PRL's pretrain folder also provides, other than the deliberate ones.

    Returns:
        ``{name: why}``: a regular module/package of S3PRL shadows ours (ours unreachable), or
        one of ours shadows an S3PRL namespace folder that is not in :data:`REPLACED_S3PRL_TASKS`.
    """
    ours = pretrain_names(PRETRAIN_DIR)
    theirs = pretrain_names(s3prl_folder)
    out = {}
    for name in sorted(set(ours) & set(theirs)):
        if theirs[name] != "namespace":
            out[name] = f"S3PRL's {theirs[name]} pretrain.{name} shadows ours"
        elif name not in REPLACED_S3PRL_TASKS:
            out[name] = f"our {ours[name]} pretrain.{name} replaces S3PRL's folder of that name"
    return out


def extend_pretrain_path(module: Optional[ModuleType] = None) -> List[str]:
    """Append :data:`PRETRAIN_DIR` to S3PRL's pretrain package path(s); idempotent.

    Args:
        module: one pretrain package to extend; default: ``s3prl.pretrain`` and, if already
            imported, S3PRL's top-level ``pretrain``.

    Returns:
        Names of the packages whose path now includes our directory.
    """
    if module is not None:
        candidates = [module]
    else:
        candidates = [importlib.import_module("s3prl.pretrain")]
        top = sys.modules.get("pretrain")
        if top is not None:
            candidates.append(top)
    done = []
    for package in candidates:
        folders = [p for p in list(package.__path__) if hook.is_s3prl_pretrain_folder(p)]
        if not folders:
            logger.warning("package %r at %s is not S3PRL's pretrain folder; not extended",
                           package.__name__, list(getattr(package, "__path__", [])))
            continue
        paths = package.__path__
        if PRETRAIN_DIR not in list(paths):
            paths.append(PRETRAIN_DIR)
            for name, why in pretrain_collisions(folders[0]).items():
                logger.warning("%s.%s: %s", package.__name__, name, why)
        done.append(package.__name__)
    return done


def register(hub: Optional[ModuleType] = None) -> List[str]:
    """Register everything with S3PRL (see the module docstring); idempotent.

    Args:
        hub: the ``s3prl.hub`` module (the import hook passes it while it is being imported);
            default: ``import s3prl.hub``.

    Returns:
        The entry names now on ``s3prl.hub`` from this package, sorted.

    Raises:
        RegistryError: an entry name is already defined on ``s3prl.hub`` by something else.
    """
    compat.apply()
    if hub is None:
        hub = importlib.import_module("s3prl.hub")
    entries = collect_entries()
    clashes = sorted(
        name for name in entries
        if hasattr(hub, name) and getattr(hub, name) is not _OURS.get(name, object())
    )
    if clashes:
        raise RegistryError(
            f"s3prl-distill upstream name(s) {clashes} already exist on s3prl.hub (defined by "
            f"S3PRL or another plugin); refusing to shadow them. Rename the registered "
            f"checkpoint(s) (s3prl-distill register --name ...)")
    for name in [n for n in _OURS if n not in entries]:  # unregistered since the last call
        if getattr(hub, name, None) is _OURS[name]:
            delattr(hub, name)
        del _OURS[name]
    for name, func in entries.items():
        setattr(hub, name, func)
        _OURS[name] = func
    superb.install()
    extend_pretrain_path()
    logger.debug("registered %d upstream entries on s3prl.hub", len(entries))
    return sorted(entries)


def registered_names() -> List[str]:
    """Entry names this process has put on ``s3prl.hub``."""
    return sorted(_OURS)
