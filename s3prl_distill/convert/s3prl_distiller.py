"""S3PRL's distiller checkpoints (the released DistilHuBERT; S3PRL's ``distiller_local`` format).

The file is S3PRL's pretraining checkpoint: ``{"Distiller": DistillerModel state dict,
"Config": {"distiller": {...}, "teacher": {...}, ...}, "Optimizer", "Step", "Args"
(argparse.Namespace), ...}``. Only ``Distiller`` and ``Config`` are read.

What equals what: with ``layer0: projection`` (S3PRL's expert exposes the CNN projection as its
first hidden state) our student's ``layers`` are S3PRL's ``[projection] + transformer layers``,
and its heads are S3PRL's fused ``output_layer`` split per predicted layer (the same function).
S3PRL's expert lists ``[projection] + layers + predictions``: ``--keep-heads --hidden-states
layers+heads`` gives that list.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from s3prl_distill.checkpoint import CheckpointError
from s3prl_distill.convert import common
from s3prl_distill.convert.common import Converted, plain

__all__ = ["FORMAT", "DESCRIPTION", "matches", "student_config_from_s3prl",
           "convert_s3prl_state_dict", "student_from_s3prl", "convert"]

FORMAT = "s3prl_distiller"
DESCRIPTION = "S3PRL distiller checkpoint (DistilHuBERT, distiller_local)"


def matches(ckpt: Any) -> bool:
    """Whether a loaded file is an S3PRL distiller checkpoint."""
    return (isinstance(ckpt, Mapping) and isinstance(ckpt.get("Distiller"), Mapping)
            and isinstance(ckpt.get("Config"), Mapping)
            and isinstance(ckpt["Config"].get("distiller"), Mapping))


def student_config_from_s3prl(config: Dict[str, Any], teacher_layers: Optional[int] = None):
    """Our :class:`~s3prl_distill.models.config.StudentConfig` for an S3PRL ``distiller:`` config:
    the one translation of S3PRL's model config
    (:func:`s3prl_distill.distill.s3prl_schema.student_config_from_distiller`).

    Args:
        teacher_layers: the teacher's depth (``Config.teacher.n_layers``; default: the deepest
            predicted layer).
    Raises:
        ConfigError: for settings our student does not implement (a ValueError).
    """
    from s3prl_distill.distill.s3prl_schema import student_config_from_distiller

    pred = config.get("pred_layer_id") or [1]
    layers = int(teacher_layers) if teacher_layers else max(int(v) for v in pred)
    return student_config_from_distiller(config, teacher_layers=layers, where="Config")


_LAYER_NAMES = {
    "self_attn.q_proj": "attention.q_proj", "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj", "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm",
}
_POS_CONV = {
    "encoder.pos_conv.0.bias": "encoder.transformer.pos_conv_embed.conv.bias",
    "encoder.pos_conv.0.weight_g": "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1",
}


def convert_s3prl_state_dict(state: Dict[str, torch.Tensor], config: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """S3PRL ``DistillerModel`` state dict -> our student's parameter names (torchaudio layout).

    The fused head ``output_layer = [Linear(D, n*inner), GELU, SplitLinear(inner, n, D_t)]`` is
    split into ``n`` heads ``Linear(D, inner) -> GELU -> Linear(inner, D_t)`` (the same function).

    Raises:
        KeyError: naming S3PRL keys that have no counterpart (nothing is silently dropped).
    """
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
        if key in _POS_CONV:
            put(_POS_CONV[key], key)
            continue
        m = re.fullmatch(r"encoder\.layer_norm\.(weight|bias)", key)
        if m:
            put(f"encoder.transformer.layer_norm.{m[1]}", key)
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m and m[2] in _LAYER_NAMES:
            put(f"encoder.transformer.layers.{m[1]}.{_LAYER_NAMES[m[2]]}.{m[3]}", key)
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


def convert(ckpt: Mapping[str, Any], path: str) -> Converted:
    """A loaded S3PRL distiller checkpoint (see :func:`matches`) -> :class:`Converted`.

    Raises:
        CheckpointError: naming the file and the setting or key that does not convert.
    """
    config = dict(ckpt["Config"]["distiller"])
    try:
        teacher_layers = (ckpt["Config"].get("teacher") or {}).get("n_layers")
        cfg = student_config_from_s3prl(config, teacher_layers if isinstance(teacher_layers, int) else None)
        state = convert_s3prl_state_dict(dict(ckpt["Distiller"]), config)
    except (KeyError, ValueError, TypeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise CheckpointError(f"{path}: Config.distiller / Distiller do not convert: {msg}") from err
    teacher = plain(ckpt["Config"].get("teacher")) or {}
    training: Dict[str, Any] = {"converted_from": os.path.basename(path), "source_format": FORMAT}
    if isinstance(ckpt.get("Step"), int):
        training["step"] = ckpt["Step"]
    dropped = [f"{k}: S3PRL's training state" for k in sorted(ckpt)
               if k not in ("Distiller", "Config")]
    notes = ["layer 0 is the CNN projection, as S3PRL's distiller expert exposes it "
             "(layer0: projection)"]
    return Converted(FORMAT, DESCRIPTION, cfg, state, teacher=teacher, training=training,
                     dropped=dropped, notes=notes)
