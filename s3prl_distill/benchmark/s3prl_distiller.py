"""S3PRL's own DistilHuBERT (``s3prl.upstream.distiller``) as a benchmark reference.

S3PRL 0.4.18 ships the distiller *upstream* (``DistillerModel`` and the ``distiller_local`` hub
expert) but not its pretraining code. This module

* holds the published DistilHuBERT model configuration (the ``distiller:`` section of S3PRL's
  ``pretrain/distiller/config_model.yaml``, written out here as data),
* builds S3PRL's model and its hub expert from it, with random or given weights, through S3PRL's
  own classes (:func:`build_s3prl_distiller`, :func:`build_s3prl_expert`), and
* writes a checkpoint in the layout ``distiller_local`` reads (:func:`write_s3prl_checkpoint`),
* converts S3PRL distiller weights to our student (:func:`student_from_s3prl`), so both can be
  compared at identical weights (and S3PRL-trained DistilHuBERT weights used as our upstream).

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


def parse_conv_layers(spec: str) -> list:
    """Parse S3PRL's conv-layer string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, without eval.

    Each ``+``-separated term is a list literal of ``(channels, kernel, stride)`` tuples, optionally
    followed by ``* n``.

    Raises:
        ValueError: naming the term that is not of that form.
    """
    import ast

    layers: list = []
    for term in spec.split("+"):
        term = term.strip()
        count = 1
        if "*" in term:
            body, _, times = term.rpartition("*")
            term, count = body.strip(), times.strip()
            if not count.isdigit():
                raise ValueError(f"extractor_conv_feature_layers: bad repeat count in {spec!r}")
            count = int(count)
        try:
            items = ast.literal_eval(term)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"extractor_conv_feature_layers: cannot read {term!r} in {spec!r}") from err
        if not isinstance(items, list) or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in items
        ):
            raise ValueError(
                f"extractor_conv_feature_layers: expected a list of (channels, kernel, stride), got {term!r}"
            )
        layers.extend(items * count)
    return layers


def student_config_from_s3prl(config: Dict[str, Any]):
    """Our :class:`~s3prl_distill.models.config.StudentConfig` with S3PRL distiller ``config``'s shape.

    Supports the DistilHuBERT layout (``task_emb_type``/``out_layer_type`` ``expand-last``).

    Raises:
        ValueError: for settings our student does not implement.
    """
    from s3prl_distill.models.config import (
        CNNConfig, ConvLayerConfig, EncoderConfig, HeadConfig, StudentConfig,
    )

    if config.get("task_emb_type", "expand-last") != "expand-last" or config.get(
        "out_layer_type", "expand-last"
    ) != "expand-last":
        raise ValueError("only S3PRL distillers with task_emb_type/out_layer_type 'expand-last' convert")
    if config.get("attention_type", "original") != "original":
        raise ValueError(f"attention_type {config.get('attention_type')!r} has no equivalent here")
    mode = config.get("extractor_mode", "default")
    norm = {"default": "group_norm_first", "layer_norm": "layer_norm"}.get(mode)
    if norm is None:
        raise ValueError(f"extractor_mode {mode!r}: expected 'default' or 'layer_norm'")
    layers = parse_conv_layers(config["extractor_conv_feature_layers"])
    dim = int(config["encoder_embed_dim"])
    inter = int(config.get("out_layer_inter_dim", -1))
    n_layers = int(config["encoder_layers"])
    pred = [int(v) for v in config["pred_layer_id"]]
    return StudentConfig(
        family="distilhubert",
        cnn=CNNConfig(layers=[ConvLayerConfig(*l) for l in layers], norm=norm, bias=False),
        encoder=EncoderConfig(
            dim=dim, ffn_dim=int(config["encoder_ffn_embed_dim"]),
            num_heads=int(config["encoder_attention_heads"]), num_layers=n_layers,
            layer_norm_first=bool(config.get("layer_norm_first", False)),
            pos_conv_kernel=int(config["conv_pos"]), pos_conv_groups=int(config["conv_pos_groups"]),
            dropout=float(config.get("dropout", 0.1)),
            attention_dropout=float(config.get("attention_dropout", 0.1)),
            activation_dropout=float(config.get("activation_dropout", 0.1)),
            feature_dropout=0.0, feature_layer_norm=False,
        ),
        heads=[
            HeadConfig(student_layer=n_layers, teacher_layer=t, type="mlp",
                       inner_dim=inter if inter > 0 else None)
            for t in pred
        ],
        teacher_dim=int(config["final_dim"]),
        teacher_layers=max(pred),
        feature_grad_mult=float(config.get("feature_grad_mult", 1.0)),
    )


def convert_s3prl_state_dict(state: Dict[str, torch.Tensor], config: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """S3PRL ``DistillerModel`` state dict -> our student's parameter names (torchaudio layout).

    The fused head ``output_layer = [Linear(D, n*inner), GELU, SplitLinear(inner, n, D_t)]`` is
    split into ``n`` heads ``Linear(D, inner) -> GELU -> Linear(inner, D_t)`` (the same function).

    Raises:
        KeyError: naming S3PRL keys that have no counterpart (nothing is silently dropped).
    """
    import re

    n_tasks = len(config["pred_layer_id"])
    out: Dict[str, torch.Tensor] = {}
    used = set()

    def put(new: str, old: str, value: Optional[torch.Tensor] = None) -> None:
        out[new] = (state[old] if value is None else value).detach().clone()
        used.add(old)

    for key in state:
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.weight", key)
        if m:
            put(f"feature_extractor.conv_layers.{m[1]}.conv.weight", key)
            continue
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)", key)
        if m:
            put(f"feature_extractor.conv_layers.{m[1]}.layer_norm.{m[2]}", key)
            continue
        m = re.fullmatch(r"post_extract_proj\.(weight|bias)", key)
        if m:
            put(f"encoder.feature_projection.projection.{m[1]}", key)
            continue
        pos = {
            "encoder.pos_conv.0.bias": "encoder.transformer.pos_conv_embed.conv.bias",
            "encoder.pos_conv.0.weight_g": "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0",
            "encoder.pos_conv.0.weight_v": "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1",
        }
        if key in pos:
            put(pos[key], key)
            continue
        m = re.fullmatch(r"encoder\.layer_norm\.(weight|bias)", key)
        if m:
            put(f"encoder.transformer.layer_norm.{m[1]}", key)
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m:
            names = {
                "self_attn.q_proj": "attention.q_proj", "self_attn.k_proj": "attention.k_proj",
                "self_attn.v_proj": "attention.v_proj", "self_attn.out_proj": "attention.out_proj",
                "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
                "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm",
            }
            if m[2] in names:
                put(f"encoder.transformer.layers.{m[1]}.{names[m[2]]}.{m[3]}", key)
                continue
    if "encoder.feature_projection.projection.weight" not in out:
        # S3PRL builds no projection when the CNN width equals the encoder width: identity
        dim = int(config["encoder_embed_dim"])
        out["encoder.feature_projection.projection.weight"] = torch.eye(dim)
        out["encoder.feature_projection.projection.bias"] = torch.zeros(dim)
    if "output_layer.0.weight" in state:
        w1, b1 = state["output_layer.0.weight"], state["output_layer.0.bias"]
        inner = w1.shape[0] // n_tasks
        w2, b2 = state["output_layer.2.weight"], state["output_layer.2.bias"]
        for j in range(n_tasks):
            rows = slice(j * inner, (j + 1) * inner)
            put(f"heads.{j}.fc1.weight", "output_layer.0.weight", w1[rows])
            put(f"heads.{j}.fc1.bias", "output_layer.0.bias", b1[rows])
            put(f"heads.{j}.fc2.weight", "output_layer.2.weight", w2[j].t().contiguous())
            put(f"heads.{j}.fc2.bias", "output_layer.2.bias", b2.reshape(n_tasks, -1)[j])
    left = sorted(set(state) - used)
    if left:
        raise KeyError(f"S3PRL distiller keys without a counterpart in our student: {left[:8]}")
    return out


def student_from_s3prl(model: nn.Module, config: Dict[str, Any]) -> nn.Module:
    """Our student with exactly the weights of S3PRL's ``DistillerModel`` ``model`` (eval mode).

    Its transformer layers and head outputs equal S3PRL's (to float rounding). Its
    ``hidden_states[0]`` is the transformer input (after the positional conv and LayerNorm) where
    S3PRL's expert exposes the projection output before them.
    """
    from s3prl_distill.models import build_student

    student = build_student(student_config_from_s3prl(config))
    converted = convert_s3prl_state_dict(model.state_dict(), config)
    missing, unexpected = student.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise KeyError(f"converted S3PRL weights do not fit: missing {missing}, unexpected {unexpected}")
    return student.eval()
