"""The plain path of a model: every inference fast path switched off, for as long as it is needed.

The students' inference fast paths (``fast_path`` of the CNN blocks, the positional conv and the
attention; ``per_utterance`` of the CNN) compute the same function as the plain modules by other
means (GEMMs on channels-last activations, FFTs). Two things want the plain modules instead: the
SUPERB leaderboard's MAC count charges a model for its convolutions, not for a faster way to
compute them (``s3prl-distill profile``), and an export records the ops every runtime has.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Tuple

from torch import nn

__all__ = ["SWITCHES", "plain_path"]

#: the module attributes that switch a fast path on (instance attributes override the class's)
SWITCHES = ("fast_path", "per_utterance")


@contextlib.contextmanager
def plain_path(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every fast path of ``model`` off inside the ``with`` block, then restore them.

    Example::

        with plain_path(student):
            count = count_macs(student, wavs, lengths, convention="superb")
    """
    saved: List[Tuple[nn.Module, str, bool, object]] = []
    for module in model.modules():
        for switch in SWITCHES:
            if hasattr(module, switch):
                own = switch in vars(module)
                saved.append((module, switch, own, vars(module).get(switch)))
                setattr(module, switch, False)
    try:
        yield model
    finally:
        for module, switch, own, value in reversed(saved):
            if own:
                setattr(module, switch, value)
            else:
                delattr(module, switch)
