"""Let ``torch.load(weights_only=True)`` read S3PRL's own checkpoints, and nothing more.

S3PRL's runners pickle, beside tensors and plain data, ``"Args"`` (an ``argparse.Namespace``)
and, in the optimizer ``param_groups`` of ``BertAdam``/``Lamb`` (``AdamW_with_schedule`` is a
``Lamb``), a ``schedule`` object of S3PRL's ``optimizers`` module. That module is imported as
``s3prl.optimizers`` by ``run_downstream`` and as the top-level ``optimizers`` by
``run_pretrain.py`` (run from inside S3PRL's folder), so each schedule class is allowed under both
pickled names. weights_only stays on: any other class still fails to load.

When this runs: :func:`s3prl_distill.compat.apply` (on ``import s3prl``), and the import hook
(``_s3prl_distill_hook``) the moment S3PRL's ``pretrain`` package is imported, which S3PRL's
``run_pretrain.py`` does before its first ``torch.load`` (``-e`` / ``-a`` resume).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import List, Tuple

logger = logging.getLogger(__name__)

__all__ = ["S3PRL_SCHEDULES", "s3prl_safe_globals", "allow_s3prl_checkpoints", "allowed_names"]

#: S3PRL 0.4.18's LR schedule classes (``s3prl/optimizers.py``) that optimizers pickle
S3PRL_SCHEDULES = ("ConstantLR", "WarmupCosineSchedule", "WarmupCosineWithHardRestartsSchedule",
                   "WarmupCosineWithWarmupRestartsSchedule", "WarmupConstantSchedule",
                   "WarmupLinearSchedule")


def s3prl_safe_globals() -> List[Tuple[object, str]]:
    """(object, pickled name) pairs S3PRL's own checkpoints need under ``weights_only=True``."""
    pairs: List[Tuple[object, str]] = [(argparse.Namespace, "argparse.Namespace")]
    try:
        optimizers = importlib.import_module("s3prl.optimizers")
    except Exception as err:  # pragma: no cover - s3prl is a dependency
        logger.warning("s3prl.optimizers not importable (%s); its schedules stay disallowed", err)
        return pairs
    for name in S3PRL_SCHEDULES:
        cls = getattr(optimizers, name, None)
        if cls is not None:
            pairs.append((cls, f"s3prl.optimizers.{name}"))
            pairs.append((cls, f"optimizers.{name}"))
    return pairs


def allowed_names() -> List[str]:
    """Pickled global names torch currently allows beyond its defaults (all sources)."""
    import torch

    names = []
    for item in torch.serialization.get_safe_globals():
        if isinstance(item, tuple):
            names.append(item[1])
        else:
            names.append(f"{item.__module__}.{item.__qualname__}")
    return names


def allow_s3prl_checkpoints() -> List[str]:
    """Allow exactly :func:`s3prl_safe_globals` in ``weights_only`` loading (never disables it).

    Idempotent. Returns ``["torch.safe_globals"]`` if this call added names, else ``[]``.
    """
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4 loads with weights_only=False by default
        return []
    known = set(allowed_names())
    pairs = [pair for pair in s3prl_safe_globals() if pair[1] not in known]
    if not pairs:
        return []
    add(pairs)
    return ["torch.safe_globals"]
