"""S3PRL ``UpstreamExpert`` for s3prl-distill student checkpoints.

``UpstreamExpert(ckpt, model_config=None, **kwargs)`` loads a student (or pretraining) checkpoint
with :func:`s3prl_distill.checkpoint.load_student` and serves it with S3PRL's upstream interface:

* ``forward(wavs: List[Tensor [S_i]]) -> {"hidden_states": [B, T, D] x L, "last_hidden_state",
  "hidden_state_{i}", "lengths": [B]}``. The list is zero-padded into one batch whose valid
  lengths are passed to the student explicitly; every hidden state has one T and one D.
* ``get_downsample_rates(key) -> int``: the true samples-per-frame of the hidden states
  (320 for DistilHuBERT; 640 for FitHuBERT with k = 2; see :mod:`s3prl_distill.models.student`).

``model_config`` (optional) is a YAML file with the :class:`ExpertOptions` keys, e.g.
``keep_heads: true`` to keep and expose heads a checkpoint carries.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from s3prl_distill.checkpoint import load_student
from s3prl_distill.config import from_dict, load_yaml
from s3prl_distill.lengths import pad_waveforms

try:  # S3PRL's base class gives hooks; the expert also works without S3PRL installed
    from s3prl.upstream.interfaces import UpstreamBase as _Base
except Exception:  # pragma: no cover - s3prl is a hard dependency; this only guards odd installs
    _Base = torch.nn.Module

logger = logging.getLogger(__name__)

__all__ = ["ExpertOptions", "UpstreamExpert"]


@dataclass
class ExpertOptions:
    """Options read from ``model_config``.

    keep_heads: None follows the checkpoint's config; True/False overrides it.
    """

    keep_heads: Optional[bool] = None


class UpstreamExpert(_Base):
    """S3PRL upstream serving a student checkpoint (heads dropped unless kept)."""

    def __init__(self, ckpt: str, model_config: Optional[str] = None, *,
                 loaded: Optional[Mapping[str, Any]] = None, **kwargs):
        """
        Args:
            ckpt: the checkpoint file.
            model_config: optional YAML of :class:`ExpertOptions`.
            loaded: the checkpoint dict already read from ``ckpt`` by the caller (a hub entry
                reads it once to check its family); not read again.
        """
        super().__init__(**kwargs)
        if ckpt is None:
            raise ValueError("UpstreamExpert needs ckpt=PATH to an s3prl-distill student checkpoint")
        options = ExpertOptions()
        if model_config:
            options = from_dict(ExpertOptions, load_yaml(model_config), where=os.fspath(model_config))
        self.model, self.meta = load_student(ckpt, keep_heads=options.keep_heads, loaded=loaded)
        self.model.eval()
        self.ckpt = os.fspath(ckpt)
        logger.info(
            "loaded %s student from %s: %d hidden states of dim %d at %d samples/frame",
            self.model.config.family, ckpt, self.num_hidden_states, self.model.dim,
            self.model.downsample_rate,
        )

    @property
    def num_hidden_states(self) -> int:
        return self.model.num_hidden_states

    def get_downsample_rates(self, key: str) -> int:
        """Samples per frame of every hidden state (the same for all keys)."""
        return self.model.downsample_rate

    def forward(self, wavs: List[Tensor]) -> Dict[str, object]:
        """wavs: list of B tensors [S_i] (16 kHz) -> dict with ``hidden_states`` (list of [B, T, D])."""
        batch, lengths = pad_waveforms(wavs)
        out = self.model(batch, lengths, with_heads=False)
        states = list(out.hidden_states)
        result: Dict[str, object] = {
            "hidden_states": states,
            "last_hidden_state": states[-1],
            "lengths": out.lengths,
        }
        for i, h in enumerate(states):
            result[f"hidden_state_{i}"] = h
        return result
