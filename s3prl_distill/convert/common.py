"""What every published-format converter shares: the result type, conv-spec parsing, checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from s3prl_distill.conv_layers import parse_conv_layers  # the one parser, re-exported here
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
