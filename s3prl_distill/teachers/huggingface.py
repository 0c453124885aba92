"""Hugging Face ``save_pretrained`` folders of HuBERT / wav2vec 2.0 / WavLM, without transformers.

The folder's ``config.json`` gives the architecture (``model_type`` hubert | wav2vec2 | wavlm,
``conv_dim``/``conv_kernel``/``conv_stride``, ``feat_extract_norm``, ``do_stable_layer_norm``, ...)
and its weights (``model.safetensors``, sharded ``model.safetensors.index.json``, or
``pytorch_model.bin`` read with ``weights_only=True``) are renamed to torchaudio
``Wav2Vec2Model`` names and run by :class:`~s3prl_distill.teachers.wav2vec2.Wav2Vec2Teacher`.
``normalize_waveform`` defaults to the folder's ``preprocessor_config.json`` ``do_normalize``
(False when absent), as transformers' feature extractor would do.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import Tensor

from s3prl_distill.config import from_dict, to_dict
from s3prl_distill.teachers.base import TeacherError
from s3prl_distill.teachers.wav2vec2 import (
    Wav2Vec2Arch,
    Wav2Vec2Teacher,
    normalize_state_dict_names,
    teacher_from_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = ["arch_from_hf_config", "hf_to_torchaudio", "read_hf_weights", "load_huggingface_teacher"]

_MODEL_TYPES = ("hubert", "wav2vec2", "wavlm")
_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "masked_spec_embed", "final_proj.",
                  "label_embeddings_concat", "adapter.", "projector.", "classifier.", "dropout")


def _read_json(path: str, where: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise TeacherError(f"{where}: {os.path.basename(path)} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise TeacherError(f"{where}: {os.path.basename(path)} is not a JSON object")
    return data


def arch_from_hf_config(config: Mapping[str, Any], where: str) -> Tuple[Wav2Vec2Arch, str]:
    """``(arch, kind)`` from a transformers ``config.json`` dict (transformers' defaults where absent).

    Raises:
        TeacherError: unknown ``model_type`` or options torchaudio's model cannot express.
    """
    kind = config.get("model_type")
    if kind not in _MODEL_TYPES:
        raise TeacherError(f"{where}: config.json model_type {kind!r} is not supported (expected one of {list(_MODEL_TYPES)})")

    def get(key: str, default: Any) -> Any:
        value = config.get(key)
        return default if value is None else value

    dims = list(get("conv_dim", [512] * 7))
    kernels = list(get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
    strides = list(get("conv_stride", [5, 2, 2, 2, 2, 2, 2]))
    if not len(dims) == len(kernels) == len(strides):
        raise TeacherError(f"{where}: conv_dim/conv_kernel/conv_stride have different lengths {dims}, {kernels}, {strides}")
    for key, ok in [("hidden_act", "gelu"), ("feat_extract_activation", "gelu")]:
        if get(key, ok) != ok:
            raise TeacherError(f"{where}: config.json {key} {config.get(key)!r} is not supported ({ok} only)")
    if not get("feat_proj_layer_norm", True):
        raise TeacherError(f"{where}: feat_proj_layer_norm false is not supported (torchaudio's projection has a LayerNorm)")
    if get("conv_pos_batch_norm", False) or int(get("num_conv_pos_embedding_layers", 1)) != 1:
        raise TeacherError(f"{where}: batch-normed / stacked positional convolutions are not supported")
    norm = get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        raise TeacherError(f"{where}: feat_extract_norm {norm!r} is not supported (group | layer)")
    values = {
        "extractor_mode": "layer_norm" if norm == "layer" else "group_norm",
        "conv_layers": [list(t) for t in zip(dims, kernels, strides)],
        "conv_bias": bool(get("conv_bias", False)),
        "embed_dim": int(get("hidden_size", 768)),
        "pos_conv_kernel": int(get("num_conv_pos_embeddings", 128)),
        "pos_conv_groups": int(get("num_conv_pos_embedding_groups", 16)),
        "num_layers": int(get("num_hidden_layers", 12)),
        "num_heads": int(get("num_attention_heads", 12)),
        "ffn_dim": int(get("intermediate_size", 3072)),
        "layer_norm_first": bool(get("do_stable_layer_norm", False)),
        "num_buckets": int(get("num_buckets", 320)),
        "max_distance": int(get("max_bucket_distance", 800)),
        # transformers' defaults (act only in train mode: eval_mode false)
        "dropout": float(get("hidden_dropout", 0.1)),
        "attention_dropout": float(get("attention_dropout", 0.1)),
        "activation_dropout": float(get("activation_dropout", 0.1)),
        "dropout_input": float(get("feat_proj_dropout", 0.0)),
    }
    return from_dict(Wav2Vec2Arch, to_dict(values), where=f"{where}: config.json"), kind


def hf_to_torchaudio(state: Mapping[str, Tensor], kind: str, where: str) -> Dict[str, Tensor]:
    """Rename transformers HuBERT / wav2vec 2.0 / WavLM weights to torchaudio names.

    Base-model prefixes (``hubert.``, ``wav2vec2.``, ``wavlm.`` of ``*ForCTC`` etc.) are removed and
    task heads dropped; any other unknown key is an error.
    """
    prefix = f"{kind}."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out: Dict[str, Tensor] = {}
    unknown: List[str] = []
    qkv: Dict[Tuple[str, str], Dict[str, Tensor]] = {}
    for key, value in state.items():
        new = None
        if key.startswith(("feature_extractor.conv_layers.", "feature_encoder.conv_layers.")):
            new = "feature_extractor." + key.split(".", 1)[1]
        elif key.startswith("feature_projection.") and not key.startswith("feature_projection.dropout"):
            new = "encoder." + key
        elif key.startswith(("encoder.pos_conv_embed.conv.", "encoder.layer_norm.")):
            new = "encoder.transformer." + key[len("encoder."):]
        else:
            m = re.match(r"encoder\.layers\.(\d+)\.(.+)$", key)
            if m:
                i, rest = m.groups()
                base = f"encoder.transformer.layers.{i}."
                am = re.match(r"attention\.([qkv])_proj\.(weight|bias)$", rest)
                if kind == "wavlm" and am:
                    qkv.setdefault((i, am.group(2)), {})[am.group(1)] = value
                    continue
                if kind == "wavlm" and rest.startswith("attention.out_proj."):
                    new = base + "attention.attention." + rest[len("attention."):]
                else:
                    new = base + rest
        if new is not None:
            out[new] = value
        elif not key.startswith(_HEAD_PREFIXES):
            unknown.append(key)
    for (i, part), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise TeacherError(f"{where}: WavLM layer {i} lacks one of attention.q/k/v_proj.{part}")
        out[f"encoder.transformer.layers.{i}.attention.attention.in_proj_{part}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    if unknown:
        raise TeacherError(f"{where}: unexpected weights {unknown[:10]}{'...' if len(unknown) > 10 else ''} "
                           f"for a {kind} model")
    return normalize_state_dict_names(out)


def read_hf_weights(folder: str, where: str) -> Dict[str, Tensor]:
    """Weights of a ``save_pretrained`` folder: safetensors (single or sharded) or pytorch_model.bin."""
    from safetensors.torch import load_file

    from s3prl_distill.io import safe_load

    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    binary = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(single):
        return dict(load_file(single))
    if os.path.isfile(index):
        shards = sorted(set(_read_json(index, where).get("weight_map", {}).values()))
        if not shards:
            raise TeacherError(f"{where}: model.safetensors.index.json has an empty weight_map")
        state: Dict[str, Tensor] = {}
        for shard in shards:
            path = os.path.join(folder, shard)
            if os.path.basename(shard) != shard or not os.path.isfile(path):
                raise TeacherError(f"{where}: shard {shard!r} listed in the index is missing")
            state.update(load_file(path))
        return state
    if os.path.isfile(binary):
        try:
            data = safe_load(binary)
        except ValueError as err:
            raise TeacherError(f"{where}: {err}") from err
        if not isinstance(data, Mapping):
            raise TeacherError(f"{where}: pytorch_model.bin is not a state dict")
        return dict(data)
    raise TeacherError(f"{where}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin in the folder")


def load_huggingface_teacher(cfg) -> Wav2Vec2Teacher:
    """``source: huggingface``: a ``save_pretrained`` folder (see the module docstring)."""
    folder = os.fspath(cfg.path)
    where = f"teacher.path {folder}"
    if not os.path.isdir(folder):
        raise TeacherError(f"{where}: not a folder (expected a Hugging Face save_pretrained folder)")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise TeacherError(f"{where}: no config.json in the folder")
    config = _read_json(config_path, where)
    arch, kind = arch_from_hf_config(config, where)
    if cfg.arch is not None and cfg.arch != kind:
        raise TeacherError(f"{where}: teacher.arch is {cfg.arch!r} but config.json says model_type {kind!r}")
    state = hf_to_torchaudio(read_hf_weights(folder, where), kind, where)
    normalize = cfg.normalize_waveform
    if normalize is None:
        pre = os.path.join(folder, "preprocessor_config.json")
        normalize = bool(_read_json(pre, where).get("do_normalize", False)) if os.path.isfile(pre) else False
    return teacher_from_state_dict(state, arch, kind, source="huggingface", path=folder,
                                   normalize_waveform=normalize, where=where)
