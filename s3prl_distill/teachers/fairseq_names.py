"""fairseq HuBERT / wav2vec 2.0 / WavLM parameter names <-> torchaudio ``Wav2Vec2Model`` names.

:func:`fairseq_to_torchaudio` renames a fairseq state dict to torchaudio
``Wav2Vec2Model`` names (the inverse, :func:`torchaudio_to_fairseq`, writes fairseq layout, used to
make S3PRL/fairseq-format files from any teacher); training-only tensors (``mask_emb``,
``final_proj``, ``label_embs_concat``, quantizer, ...) are dropped, any other unknown key is an
error. Fine-tuned checkpoints (``w2v_encoder.w2v_model.*``, config in ``w2v_args``) are accepted.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from s3prl_distill.teachers.base import TeacherError
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch, normalize_state_dict_names

__all__ = ["fairseq_to_torchaudio", "torchaudio_to_fairseq", "is_wavlm_state", "fill_identity_projection"]


_TRAINING_ONLY = ("mask_emb", "final_proj.", "label_embs_concat", "quantizer.", "project_q.", "target_glu.",
                  "project_inp.", "_float_tensor", "encoder.version", "proj.", "w2v_encoder.proj.")
_LAYER_RENAMES = [
    ("self_attn.q_proj.", "attention.q_proj."),
    ("self_attn.k_proj.", "attention.k_proj."),
    ("self_attn.v_proj.", "attention.v_proj."),
    ("self_attn.out_proj.", "attention.out_proj."),
    ("self_attn_layer_norm.", "layer_norm."),
    ("fc1.", "feed_forward.intermediate_dense."),
    ("fc2.", "feed_forward.output_dense."),
    ("final_layer_norm.", "final_layer_norm."),
]
_WAVLM_RENAMES = [
    ("self_attn.grep_linear.", "attention.gru_rel_pos_linear."),
    ("self_attn.grep_a", "attention.gru_rel_pos_const"),
    ("self_attn.relative_attention_bias.", "attention.rel_attn_embed."),
    ("self_attn.out_proj.", "attention.attention.out_proj."),
]


def is_wavlm_state(state: Mapping[str, Tensor]) -> bool:
    return any(".self_attn.relative_attention_bias." in k or ".self_attn.grep_linear." in k for k in state)


def fairseq_to_torchaudio(state: Mapping[str, Tensor], where: str = "teacher") -> Dict[str, Tensor]:
    """Rename a fairseq HuBERT / wav2vec 2.0 / WavLM state dict to torchaudio names.

    Raises:
        TeacherError: listing keys that are neither mapped nor known training-only tensors.
    """
    prefix = "w2v_encoder.w2v_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    wavlm = is_wavlm_state(state)
    out: Dict[str, Tensor] = {}
    unknown: List[str] = []
    qkv: Dict[str, Dict[str, Tensor]] = {}
    for key, value in state.items():
        new: Optional[str] = None
        m = re.match(r"feature_extractor\.conv_layers\.(\d+)\.(.+)$", key)
        if m:
            i, rest = m.groups()
            base = f"feature_extractor.conv_layers.{i}."
            new = {"0.weight": base + "conv.weight", "0.bias": base + "conv.bias",
                   "2.weight": base + "layer_norm.weight", "2.bias": base + "layer_norm.bias",
                   "2.1.weight": base + "layer_norm.weight", "2.1.bias": base + "layer_norm.bias"}.get(rest)
        elif key.startswith("layer_norm."):
            new = "encoder.feature_projection." + key
        elif key.startswith("post_extract_proj."):
            new = "encoder.feature_projection.projection." + key[len("post_extract_proj."):]
        elif key.startswith("encoder.pos_conv.0."):
            new = "encoder.transformer.pos_conv_embed.conv." + key[len("encoder.pos_conv.0."):]
        elif key.startswith("encoder.layer_norm."):
            new = "encoder.transformer." + key[len("encoder."):]
        else:
            m = re.match(r"encoder\.layers\.(\d+)\.(.+)$", key)
            if m:
                i, rest = m.groups()
                if wavlm and re.match(r"self_attn\.[qkv]_proj\.", rest):
                    qkv.setdefault(f"{i}.{rest[-6:] if rest.endswith('weight') else rest[-4:]}", {})[rest[10]] = value
                    continue
                for old, repl in (_WAVLM_RENAMES if wavlm else []) + _LAYER_RENAMES:
                    if rest.startswith(old):
                        new = f"encoder.transformer.layers.{i}." + repl + rest[len(old):]
                        break
        if new is not None:
            out[new] = value
        elif not key.startswith(_TRAINING_ONLY):
            unknown.append(key)
    for name, parts in qkv.items():  # WavLM: torchaudio keeps q, k, v in one in_proj tensor
        i, kind = name.split(".")
        if set(parts) != {"q", "k", "v"}:
            raise TeacherError(f"{where}: layer {i} lacks one of self_attn.q/k/v_proj.{kind}")
        out[f"encoder.transformer.layers.{i}.attention.attention.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    if unknown:
        raise TeacherError(
            f"{where}: unexpected fairseq keys {unknown[:10]}{'...' if len(unknown) > 10 else ''} "
            "(is this a HuBERT / wav2vec 2.0 / WavLM checkpoint?)"
        )
    return normalize_state_dict_names(out)


def torchaudio_to_fairseq(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The inverse of :func:`fairseq_to_torchaudio` for HuBERT / wav2vec 2.0 (not WavLM):
    torchaudio names -> fairseq names (positional conv as ``weight_g``/``weight_v``). The CNN's
    norm index follows the extractor mode (GroupNorm ``.2``, LayerNorm ``.2.1``)."""
    state = normalize_state_dict_names(state)
    layer_norm_mode = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.match(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$", key)
        if m:
            i, part, kind = m.groups()
            index = "0" if part == "conv" else ("2.1" if layer_norm_mode else "2")
            out[f"feature_extractor.conv_layers.{i}.{index}.{kind}"] = value
            continue
        if key.startswith("encoder.feature_projection.layer_norm."):
            out[key[len("encoder.feature_projection."):]] = value
            continue
        if key.startswith("encoder.feature_projection.projection."):
            out["post_extract_proj." + key.rsplit(".", 1)[1]] = value
            continue
        if key.startswith("encoder.transformer.pos_conv_embed.conv."):
            rest = key[len("encoder.transformer.pos_conv_embed.conv."):]
            rest = {"parametrizations.weight.original0": "weight_g",
                    "parametrizations.weight.original1": "weight_v"}.get(rest, rest)
            out["encoder.pos_conv.0." + rest] = value
            continue
        if key.startswith("encoder.transformer.layer_norm."):
            out["encoder." + key[len("encoder.transformer."):]] = value
            continue
        m = re.match(r"encoder\.transformer\.layers\.(\d+)\.(.+)$", key)
        if m:
            i, rest = m.groups()
            for old, new in _LAYER_RENAMES:
                if rest.startswith(new):
                    out[f"encoder.layers.{i}.{old}{rest[len(new):]}"] = value
                    break
            else:
                raise TeacherError(f"torchaudio_to_fairseq: no fairseq name for {key}")
            continue
        if key.startswith("aux."):
            continue
        raise TeacherError(f"torchaudio_to_fairseq: no fairseq name for {key}")
    return out


def fill_identity_projection(state: Dict[str, Tensor], arch: Wav2Vec2Arch) -> None:
    """fairseq has no ``post_extract_proj`` when CNN channels == embed_dim: use the identity."""
    key = "encoder.feature_projection.projection.weight"
    if key not in state and arch.conv_layers[-1][0] == arch.embed_dim:
        state[key] = torch.eye(arch.embed_dim)
        state["encoder.feature_projection.projection.bias"] = torch.zeros(arch.embed_dim)
