"""Register s3prl-distill with S3PRL: hub entries, SUPERB pieces, and the pretrain task directory.

:func:`register` (idempotent):

1. applies :func:`s3prl_distill.compat.apply` (S3PRL must import on current torch/torchaudio);
2. puts ``s3prl_distill.upstream.hubconf.ENTRIES`` and
   ``s3prl_distill.upstream.registered.registered_entries()`` onto ``s3prl.hub``, so that
   ``-u distilhubert_local`` (``getattr(s3prl.hub, name)``) and the ``-u`` choices of
   ``s3prl.run_downstream`` (``dir(s3prl.hub)``) include them. A name that S3PRL (or anything other
   than this registry) already defines is never shadowed: :class:`RegistryError`;
3. calls ``s3prl_distill.superb.install()`` (PR/SF corpus readers etc.) if that module exists;
4. appends ``s3prl_distill/pretrain/`` to the ``__path__`` of S3PRL's pretrain package, both as
   ``s3prl.pretrain`` and as the top-level ``pretrain`` that ``run_pretrain.py`` imports from
   inside S3PRL's folder, so ``pretrain.distiller.pretrain_expert`` imports. S3PRL's own
   sub-packages stay first on the path and win on equal names.

The import hook (``_s3prl_distill_hook``, installed as a ``.pth`` with the package) calls
:func:`register` the moment ``s3prl.hub`` is imported and :func:`extend_pretrain_path` when a
pretrain package of S3PRL is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from types import ModuleType
from typing import Callable, Dict, List, Optional

logger = logging.getLogger(__name__)

__all__ = ["RegistryError", "register", "registered_names", "extend_pretrain_path",
           "PRETRAIN_DIR", "collect_entries"]

#: our S3PRL pretrain task directory (holds ``distiller/pretrain_expert.py``)
PRETRAIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain")

_OURS: Dict[str, Callable] = {}  # names this registry put on s3prl.hub -> the callable put there


class RegistryError(RuntimeError):
    """A plugin entry would shadow a name S3PRL (or another plugin) already defines."""


def _optional_import(name: str) -> Optional[ModuleType]:
    """Import ``name`` if it exists; a missing module returns None, any other failure raises."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            return None
        raise


def collect_entries() -> Dict[str, Callable]:
    """Hub entries of this package: ``hubconf.ENTRIES`` plus the user-registered checkpoints.

    Raises:
        RegistryError: a registered checkpoint name equals a built-in entry name.
    """
    entries: Dict[str, Callable] = {}
    hubconf = _optional_import("s3prl_distill.upstream.hubconf")
    if hubconf is None:
        logger.warning("s3prl_distill.upstream.hubconf is missing: no built-in upstream entries")
    else:
        entries.update(hubconf.ENTRIES)
    registered = _optional_import("s3prl_distill.upstream.registered")
    if registered is None:
        logger.warning("s3prl_distill.upstream.registered is missing: no user-registered entries")
    else:
        for name, func in registered.registered_entries().items():
            if name in entries:
                raise RegistryError(
                    f"registered checkpoint name {name!r} collides with the built-in entry "
                    f"{name!r}; re-register it under another name")
            entries[name] = func
    return entries


def _is_s3prl_pretrain(module: ModuleType) -> bool:
    """Whether ``module`` is S3PRL's ``pretrain`` package (as ``s3prl.pretrain`` or top-level)."""
    path = list(getattr(module, "__path__", []) or [])
    if not path:
        return False
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        return False
    roots = {os.path.realpath(os.path.join(p, "pretrain")) for p in spec.submodule_search_locations}
    return any(os.path.realpath(p) in roots for p in path)


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
        if package.__name__ == "pretrain" and not _is_s3prl_pretrain(package):
            logger.warning("top-level 'pretrain' package %s is not S3PRL's; not extended",
                           getattr(package, "__path__", None))
            continue
        paths = package.__path__
        if PRETRAIN_DIR not in list(paths):
            paths.append(PRETRAIN_DIR)
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
    from s3prl_distill import compat

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
    superb = _optional_import("s3prl_distill.superb")
    if superb is not None and hasattr(superb, "install"):
        superb.install()
    else:
        logger.debug("s3prl_distill.superb not present; SUPERB add-ons not installed")
    extend_pretrain_path()
    logger.debug("registered %d upstream entries on s3prl.hub", len(entries))
    return sorted(entries)


def registered_names() -> List[str]:
    """Entry names this process has put on ``s3prl.hub``."""
    return sorted(_OURS)
