"""Comparing a state dict against a model's, with an error text that names the offending keys.

One place for the check that checkpoint loading, teacher loading and teacher-initialisation of a
student all make before ``load_state_dict``: which keys are missing, which are unexpected, and
which have the wrong shape.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from torch import Tensor

__all__ = ["describe_mismatch"]


def _clip(items: List[str], limit: int) -> str:
    return f"{items[:limit]}{' ...' if len(items) > limit else ''}"


def describe_mismatch(
    expected: Mapping[str, Tensor],
    given: Mapping[str, Tensor],
    *,
    allow_missing: bool = False,
    given_name: str = "checkpoint",
    expected_name: str = "model",
    limit: int = 8,
) -> Optional[str]:
    """Describe how ``given`` fails to fit ``expected`` (e.g. ``model.state_dict()``).

    Args:
        expected: the tensors the model has, by name.
        given: the tensors to load, by name.
        allow_missing: a partial ``given`` is fine (initialising a subset of the model).
        given_name / expected_name: how the two sides are called in the text.
        limit: how many keys of each kind to list.
    Returns:
        ``None`` if every key of ``given`` is in ``expected`` with the same shape (and, unless
        ``allow_missing``, every key of ``expected`` is given); else a sentence such as
        ``"missing keys [...]; keys not in the model [...]; shape mismatches ['w: checkpoint
        (2, 3) vs model (3, 3)']"``.
    """
    missing = [] if allow_missing else sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [
        f"{k}: {given_name} {tuple(given[k].shape)} vs {expected_name} {tuple(expected[k].shape)}"
        for k in sorted(given)
        if k in expected and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {_clip(missing, limit)}")
    if unexpected:
        parts.append(f"keys not in the {expected_name} {_clip(unexpected, limit)}")
    if wrong:
        parts.append(f"shape mismatches {_clip(wrong, limit)}")
    return "; ".join(parts) or None
