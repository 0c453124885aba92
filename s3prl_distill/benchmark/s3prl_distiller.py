"""S3PRL's own DistilHuBERT (``s3prl.upstream.distiller``) as a benchmark reference.

S3PRL 0.4.18 ships the distiller *upstream* (``DistillerModel`` and the ``distiller_local`` hub
expert) but not its pretraining code. This module

* holds the published DistilHuBERT model configuration (the ``distiller:`` section of S3PRL's
  ``pretrain/distiller/config_model.yaml``, written out here as data),
* builds S3PRL's model and its hub expert from it, with random or given weights, through S3PRL's
  own classes (:func:`build_s3prl_distiller`, :func:`build_s3prl_expert`), and
* writes a checkpoint in the layout ``distiller_local`` reads (:func:`write_s3prl_checkpoint`),
* re-exports the converter of S3PRL distiller weights to our student (:func:`student_from_s3prl`,
  from :mod:`s3prl_distill.convert.s3prl_distiller`), so both can be compared at identical weights.

S3PRL's classes print while they are built; the prints are captured and sent to the debug log.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from typing import Any, Dict, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "DISTILHUBERT_S3PRL_CONFIG",
    "s3prl_distiller_config",
    "build_s3prl_distiller",
    "write_s3prl_checkpoint",
    "build_s3prl_expert",
    "parse_conv_layers",
    "student_config_from_s3prl",
    "convert_s3prl_state_dict",
    "student_from_s3prl",
]

# The DistilHuBERT student of the paper as S3PRL configures it (2 layers x 768, 3 heads predicting
# HuBERT layers 4, 8, 12; L1 + cosine loss).
DISTILHUBERT_S3PRL_CONFIG: Dict[str, Any] = {
    "extractor_mode": "default",
    "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "extractor_dropout": 0.0,
    "feature_grad_mult": 0.1,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "encoder_layers": 2,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "attention_type": "original",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "encoder_layerdrop": 0.0,
    "final_dim": 768,
    "out_layer_type": "expand-last",
    "n_tasks": 3,
    "task_emb_type": "expand-last",
    "task_emb_size": 0,
    "layer_emb_size": 0,
    "loss_type": "l1",
    "feat_pen_loss": 0.0,
    "cosine_loss": 1.0,
    "pred_layer_id": [4, 8, 12],
    "init_teacher_conv_layers": True,
    "init_teacher_encoder_layers": True,
}


def s3prl_distiller_config(**overrides: Any) -> Dict[str, Any]:
    """A copy of :data:`DISTILHUBERT_S3PRL_CONFIG` with ``overrides`` applied (for tiny tests).

    Raises:
        KeyError: naming an override that is not a DistilHuBERT config key.
    """
    config = copy.deepcopy(DISTILHUBERT_S3PRL_CONFIG)
    for key, value in overrides.items():
        if key not in config:
            raise KeyError(f"s3prl distiller config: unknown key {key!r}; known: {sorted(config)}")
        config[key] = value
    return config


@contextlib.contextmanager
def _quiet():
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        logger.debug("s3prl says: %s", text)


def build_s3prl_distiller(config: Optional[Dict[str, Any]] = None, seed: int = 0) -> nn.Module:
    """S3PRL's ``DistillerModel`` with random weights (seeded), in eval mode.

    Args:
        config: the ``distiller:`` section (default: DistilHuBERT's).
        seed: torch seed for the random initialisation.
    """
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    torch.manual_seed(seed)
    with _quiet():
        model = DistillerModel(DistillerConfig(dict(config or DISTILHUBERT_S3PRL_CONFIG)))
    return model.eval()


def write_s3prl_checkpoint(model: nn.Module, config: Dict[str, Any], path: str) -> str:
    """Write ``model``'s weights in the layout S3PRL's ``distiller_local`` loads.

    The file holds ``{"Config": {"distiller": config}, "Distiller": state_dict}`` (plain data
    and tensors only).
    """
    from s3prl_distill.io import atomic_save

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_save({"Config": {"distiller": dict(config)}, "Distiller": state}, path)
    return path


def build_s3prl_expert(checkpoint: str) -> nn.Module:
    """S3PRL's own hub expert (``s3prl.upstream.distiller.expert.UpstreamExpert``) on a checkpoint.

    It is exactly what ``-u distiller_local -k checkpoint`` builds in S3PRL's runners; returned in
    eval mode (S3PRL's builder leaves the model in training mode; the downstream runner puts a
    frozen upstream in eval mode).
    """
    from s3prl.upstream.distiller.expert import UpstreamExpert

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"s3prl distiller checkpoint not found: {checkpoint}")
    with _quiet():
        expert = UpstreamExpert(checkpoint)
    return expert.eval()


# --------------------------------------------------------------------------- weight conversion
# The converter lives in s3prl_distill.convert (also behind `s3prl-distill convert`); re-exported
# here for the benchmark and its callers.
from s3prl_distill.conv_layers import parse_conv_layers  # noqa: E402
from s3prl_distill.convert.s3prl_distiller import (  # noqa: E402
    convert_s3prl_state_dict,
    student_config_from_s3prl,
    student_from_s3prl,
)
