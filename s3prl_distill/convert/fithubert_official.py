"""The official FitHuBERT / FitW2V2 checkpoints (PyTorch Lightning ``.ckpt`` of glory20h/FitHuBERT).

The official ``train.py`` saves its ``LightningModule`` with Lightning's ``ModelCheckpoint``:
``state_dict`` holds ``student_model.*`` (the student, ``CustomStudentModel``) and
``teacher_model.model.*`` (the frozen fairseq teacher), ``hyper_parameters`` holds
``{"cfg": <the whole training YAML>}`` whose ``distiller:`` section configures the student.
The file is read with weights_only and inert stand-ins (:mod:`s3prl_distill.convert.loading`);
only ``state_dict`` and ``hyper_parameters`` are used. Where the hyper-parameters are not plain
data, the YAML released with the checkpoint is given instead (``--config``).

Key map (official student -> ours):

    feature_extractor.conv_layers.{i}.0.weight         -> feature_extractor.conv_layers.{i}.conv.weight
    feature_extractor.conv_layers.{i}.2[.1].{w,b}      -> ...conv_layers.{i}.layer_norm.{w,b}  (group / layer norm)
    layer_norm.{w,b}            (LayerNorm on the CNN features)  -> encoder.feature_projection.layer_norm.*
    post_extract_proj.{w,b}     (absent when widths agree: identity)  -> encoder.feature_projection.projection.*
    encoder.pos_conv.0.{weight_g,weight_v,bias}         -> encoder.transformer.pos_conv_embed.conv.*
    encoder.layer_norm.*                                -> encoder.transformer.layer_norm.*
    encoder.layers.{tr_layer_index}.{w,b} (the Conv1d time reduction)  -> time_reduction.conv.*
    encoder.layers.{j}.self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm
                                                        -> encoder.transformer.layers.{j-1}.attention..., ...
    proj_head.{i}.upsampler.*, proj_head.{i}.lin_proj.* -> heads.{i}.upsample.*, heads.{i}.proj.*
                                                           (lin_proj absent when widths agree: identity)
    upsampler.* (model-level, unused in layer-wise mode), cnn_proj_head.* (training-only CNN loss)
                                                        -> dropped, and listed

Head ``i`` (on student layer ``i + 1``) predicts the teacher's ``layer_results[i]``, i.e. teacher
layer ``i + 1`` (the official ``calculate_loss``). The official time reduction is a plain
``Conv1d(k, stride=k)`` that drops the last ``T mod k`` CNN frames, so the converted config says
``time_reduction_tail: drop``; with it our hidden states and heads equal the official model's
(``tests/test_convert_fithubert_official.py``). What the official code builds and we do not
(log-mel front end, conformer layers, ``fc1``/``fc2`` time reduction, reduction after layer 0,
``required_seq_len_multiple`` / ``crop_seq_to_multiple`` other than 1, DistilHuBERT-style heads
after the model-level upsampler) is refused with the setting named.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from s3prl_distill.checkpoint import CheckpointError
from s3prl_distill.convert.common import Converted, identity_linear, parse_conv_layers, plain

__all__ = ["FORMAT", "DESCRIPTION", "OFFICIAL_DEFAULTS", "matches", "distiller_section",
           "student_config_from_official", "convert_official_state_dict", "convert"]

FORMAT = "fithubert_official"
DESCRIPTION = "official FitHuBERT / FitW2V2 PyTorch Lightning checkpoint (glory20h/FitHuBERT)"
STUDENT_PREFIX = "student_model."

#: the official ``CustomStudentModelConfig`` defaults (modules/model.py) for keys a YAML may omit
OFFICIAL_DEFAULTS: Dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_type": "transformer", "n_mels": 0, "dropout": 0.1, "attention_dropout": 0.1,
    "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0,
    "layer_norm_first": False,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False, "feature_grad_mult": 1.0, "conv_pos": 128, "conv_pos_groups": 16,
    "pos_conv_depth": 1, "required_seq_len_multiple": 2, "crop_seq_to_multiple": 1,
    "pred_head_inter_dim": 0, "pred_head_final_dim": 768, "pred_layer_id": "[3, 7, 11]",
    "layerwise_proj": False, "enable_tr_layer": True, "tr_reduce_factor": 2,
    "tr_layer_type": "fc1", "tr_layer_index": 1,
}


def matches(ckpt: Any) -> bool:
    """Whether a loaded file is an official FitHuBERT Lightning checkpoint."""
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        return False
    return any(isinstance(k, str) and k.startswith(STUDENT_PREFIX) for k in ckpt["state_dict"])


def distiller_section(ckpt: Mapping[str, Any], config: Optional[Mapping[str, Any]], path: str) -> Dict[str, Any]:
    """The ``distiller:`` section with the official defaults for omitted keys.

    Args:
        config: the training YAML given with ``--config`` (wins), else the checkpoint's
            ``hyper_parameters["cfg"]``.
    Raises:
        CheckpointError: neither holds a plain ``distiller:`` section.
    """
    source = "--config"
    if config is None:
        source = "hyper_parameters"
        hparams = ckpt.get("hyper_parameters")
        config = hparams.get("cfg") if isinstance(hparams, Mapping) else None
    section = plain(config.get("distiller")) if isinstance(config, Mapping) else None
    if not isinstance(section, dict):
        raise CheckpointError(
            f"{path}: no plain 'distiller:' section in its {source}; pass the YAML released with "
            "the checkpoint: s3prl-distill convert SRC --config FitHuBERT.yaml -o OUT"
        )
    return {**OFFICIAL_DEFAULTS, **section}


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _int_list(value: Any, key: str) -> List[int]:
    import ast

    items = ast.literal_eval(value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, int) for v in items):
        raise ValueError(f"{key}: expected a list of ints, got {value!r}")
    return list(items)


def student_config_from_official(d: Mapping[str, Any], state: Mapping[str, Tensor]):
    """Our StudentConfig for an official ``distiller:`` section (``d``, defaults filled in).

    ``state``: the student's official state dict (without ``student_model.``), to see which heads
    and projections exist.

    Raises:
        ValueError: naming a setting our student does not implement.
    """
    from s3prl_distill.models.config import (
        CNNConfig, ConvLayerConfig, EncoderConfig, HeadConfig, StudentConfig,
    )

    def need(key: str, ok) -> None:
        if d.get(key) != ok:
            raise ValueError(f"{key}: {d.get(key)!r} is not supported (only {ok!r})")

    need("layer_type", "transformer")
    need("activation_fn", "gelu")
    if int(d["n_mels"]) > 0:
        raise ValueError(f"n_mels: {d['n_mels']} (mel-spectrogram front end) is not supported")
    need("pos_conv_depth", 1)
    need("required_seq_len_multiple", 1)
    need("crop_seq_to_multiple", 1)
    mode = {"default": "group_norm_first", "layer_norm": "layer_norm"}.get(d["extractor_mode"])
    if mode is None:
        raise ValueError(f"extractor_mode: {d['extractor_mode']!r} (expected default | layer_norm)")
    n_layers = int(d["encoder_layers"])
    dim = int(d["encoder_embed_dim"])
    k = 1
    if _bool(d["enable_tr_layer"]):
        need("tr_layer_type", "conv1d")
        need("tr_layer_index", 0)
        k = int(d["tr_reduce_factor"])
    heads: List[Any] = []
    final_dim = int(d["pred_head_final_dim"])
    if any(key.startswith("proj_head.") for key in state):
        if not _bool(d["layerwise_proj"]):
            raise ValueError("layerwise_proj: false (DistilHuBERT-style heads on the upsampled last "
                             "layer) is not supported; only the layer-wise heads of FitHuBERT")
        heads = [HeadConfig(student_layer=i + 1, teacher_layer=i + 1, type="deconv_linear")
                 for i in range(n_layers)]
    pred = _int_list(d["pred_layer_id"], "pred_layer_id")
    layers = parse_conv_layers(d["conv_feature_layers"], "conv_feature_layers")
    return StudentConfig(
        family="fithubert",
        cnn=CNNConfig(layers=[ConvLayerConfig(*l) for l in layers], norm=mode, bias=_bool(d["conv_bias"])),
        encoder=EncoderConfig(
            dim=dim, ffn_dim=int(d["encoder_ffn_embed_dim"]), num_heads=int(d["encoder_attention_heads"]),
            num_layers=n_layers, layer_norm_first=_bool(d["layer_norm_first"]),
            pos_conv_kernel=int(d["conv_pos"]), pos_conv_groups=int(d["conv_pos_groups"]),
            dropout=float(d["dropout"]), attention_dropout=float(d["attention_dropout"]),
            activation_dropout=float(d["activation_dropout"]), feature_dropout=float(d["dropout_input"]),
            feature_layer_norm=True,
        ),
        time_reduction=k,
        time_reduction_tail="drop",
        heads=heads,
        teacher_dim=final_dim,
        teacher_layers=max([n_layers] + [p + 1 for p in pred]),
        feature_grad_mult=float(d["feature_grad_mult"]),
    )


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
    "encoder.pos_conv.0.parametrizations.weight.original0":
        "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.parametrizations.weight.original1":
        "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1",
}
_DROP = {"upsampler.": "the model-level upsampler, unused with layer-wise heads",
         "cnn_proj_head.": "the training-only CNN-loss head",
         "final_proj.": "unused", "mel_spec_head.": "unused"}


def convert_official_state_dict(state: Mapping[str, Tensor], cfg, tr_index: int = 0):
    """Official student state dict (no ``student_model.`` prefix) -> (our state dict, dropped).

    Raises:
        KeyError: naming keys that have no counterpart (nothing is silently dropped).
    """
    out: Dict[str, Tensor] = {}
    dropped: Dict[str, str] = {}
    left: List[str] = []
    has_tr = cfg.time_reduction > 1
    for key, value in state.items():
        value = value.detach().clone().float()
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", key)
        if m:
            out[f"feature_extractor.conv_layers.{m[1]}.conv.{m[2]}"] = value
            continue
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)", key)
        if m:
            out[f"feature_extractor.conv_layers.{m[1]}.layer_norm.{m[2]}"] = value
            continue
        m = re.fullmatch(r"layer_norm\.(weight|bias)", key)
        if m:
            out[f"encoder.feature_projection.layer_norm.{m[1]}"] = value
            continue
        m = re.fullmatch(r"post_extract_proj\.(weight|bias)", key)
        if m:
            out[f"encoder.feature_projection.projection.{m[1]}"] = value
            continue
        if key in _POS_CONV:
            out[_POS_CONV[key]] = value
            continue
        m = re.fullmatch(r"encoder\.layer_norm\.(weight|bias)", key)
        if m:
            out[f"encoder.transformer.layer_norm.{m[1]}"] = value
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(weight|bias)", key)
        if m and has_tr and int(m[1]) == tr_index:
            out[f"time_reduction.conv.{m[2]}"] = value
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m and m[2] in _LAYER_NAMES:
            j = int(m[1]) - (1 if has_tr and int(m[1]) > tr_index else 0)
            out[f"encoder.transformer.layers.{j}.{_LAYER_NAMES[m[2]]}.{m[3]}"] = value
            continue
        m = re.fullmatch(r"proj_head\.(\d+)\.(upsampler|lin_proj)\.(weight|bias)", key)
        if m:
            out[f"heads.{m[1]}.{'upsample' if m[2] == 'upsampler' else 'proj'}.{m[3]}"] = value
            continue
        prefix = next((p for p in _DROP if key.startswith(p)), None)
        if prefix is not None:
            dropped[prefix + "*"] = _DROP[prefix]
            continue
        left.append(key)
    if left:
        raise KeyError(f"official student keys without a counterpart in our student: {sorted(left)[:8]}")
    dim = cfg.encoder.dim
    if "encoder.feature_projection.projection.weight" not in out:  # no post_extract_proj: widths agree
        w, b = identity_linear(dim)
        out["encoder.feature_projection.projection.weight"] = w
        out["encoder.feature_projection.projection.bias"] = b
    for i in range(len(cfg.heads)):  # no lin_proj: the head's output width is the encoder's
        if f"heads.{i}.proj.weight" not in out:
            w, b = identity_linear(dim)
            out[f"heads.{i}.proj.weight"] = w
            out[f"heads.{i}.proj.bias"] = b
    return out, [f"{k}: {v}" for k, v in sorted(dropped.items())]


def convert(ckpt: Mapping[str, Any], path: str, config: Optional[Mapping[str, Any]] = None) -> Converted:
    """A loaded official checkpoint (see :func:`matches`) -> :class:`Converted`.

    Args:
        config: the training YAML released with the checkpoint (parsed), when given.
    Raises:
        CheckpointError: naming the file and the setting or key that does not convert.
    """
    full = ckpt["state_dict"]
    state = {k[len(STUDENT_PREFIX):]: v for k, v in full.items() if k.startswith(STUDENT_PREFIX)}
    others = sorted({k.split(".", 1)[0] for k in full if not k.startswith(STUDENT_PREFIX)})
    d = distiller_section(ckpt, config, path)
    try:
        cfg = student_config_from_official(d, state)
        out, dropped = convert_official_state_dict(state, cfg, int(d["tr_layer_index"]))
    except (KeyError, ValueError, TypeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise CheckpointError(f"{path}: does not convert: {msg}") from err
    for name in others:
        n = sum(v.numel() for k, v in full.items() if k.startswith(name + "."))
        what = "the frozen teacher" if name == "teacher_model" else "not part of the student"
        dropped.append(f"{name}.*: {what} ({n / 1e6:.2f} M values)")
    cfg_all = config if config is not None else (ckpt.get("hyper_parameters") or {}).get("cfg")
    teacher = {}
    if isinstance(cfg_all, Mapping) and isinstance(cfg_all.get("teacher"), Mapping):
        teacher = plain(dict(cfg_all["teacher"])) or {}
    training: Dict[str, Any] = {"converted_from": os.path.basename(path), "source_format": FORMAT,
                                "official_distiller": plain(d) or {}}
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if isinstance(ckpt.get(key), (int, str)):
            training[key.replace("-", "_")] = ckpt[key]
    notes = ["time_reduction_tail: drop (the official Conv1d ignores the last T mod k CNN frames); "
             "--time-reduction-tail pad keeps them (our default; outputs then differ on those frames)"]
    if cfg.heads:
        notes.append(f"{len(cfg.heads)} heads kept in the file; the official S3PRL expert uses the last "
                     "one as 'last_hidden_state' and the layers as 'hidden_states'")
    return Converted(FORMAT, DESCRIPTION, cfg, out, teacher=teacher, training=training,
                     dropped=dropped, notes=notes)
