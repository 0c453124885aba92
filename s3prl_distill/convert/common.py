"""What every published-format converter shares: the result type, conv-spec parsing, checks."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from s3prl_distill.models.config import StudentConfig

__all__ = ["Converted", "parse_conv_layers", "identity_linear", "plain"]


@dataclass
class Converted:
    """A published checkpoint turned into our student's config and weights.

    format: the format's key (``fithubert_official`` ...); description: one line naming it.
    state_dict: tensors under our student's names (heads included where the file has them).
    dropped: ``"name(s): why"`` for every tensor of the file that has no place in the student.
    notes: what a user must know (e.g. which evaluation mode the published code used).
    """

    format: str
    description: str
    config: StudentConfig
    state_dict: Dict[str, Tensor]
    teacher: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def parse_conv_layers(spec: str, key: str = "conv layers") -> List[Tuple[int, int, int]]:
    """Parse a fairseq/S3PRL conv-layer string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, without eval.

    Each ``+``-separated term is a list literal of ``(channels, kernel, stride)`` tuples, optionally
    followed by ``* n``. ``key`` names the setting in errors.

    Raises:
        ValueError: naming the term that is not of that form.
    """
    layers: List[Tuple[int, int, int]] = []
    for term in str(spec).split("+"):
        term = term.strip()
        count = 1
        if "*" in term:
            body, _, times = term.rpartition("*")
            term, times = body.strip(), times.strip()
            if not times.isdigit():
                raise ValueError(f"{key}: bad repeat count in {spec!r}")
            count = int(times)
        try:
            items = ast.literal_eval(term)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{key}: cannot read {term!r} in {spec!r}") from err
        if not isinstance(items, list) or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in items
        ):
            raise ValueError(f"{key}: expected a list of (channels, kernel, stride), got {term!r}")
        layers.extend(items * count)
    return layers


def identity_linear(dim: int) -> Tuple[Tensor, Tensor]:
    """(weight [D, D], bias [D]) of a Linear that is the identity (a projection the file lacks)."""
    return torch.eye(dim), torch.zeros(dim)


def plain(value: Any) -> Optional[Any]:
    """``value`` if it is plain data (dict/list/str/int/float/bool/None), else None."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            p = plain(v)
            if not isinstance(k, str) or (p is None and v is not None):
                return None
            out[k] = p
        return out
    return None
