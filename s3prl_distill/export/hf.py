"""Hugging Face ``transformers`` export: a student as a plain ``HubertModel`` folder.

The folder is what ``save_pretrained`` writes (``config.json``, ``model.safetensors``,
``preprocessor_config.json``) and loads with ``transformers.AutoModel.from_pretrained(folder)``
and no custom code. It is written without importing ``transformers`` (a test dependency only).

Which students ``HubertModel`` expresses: a waveform CNN whose first layer has a group norm
(``feat_extract_norm: group``) or every layer a layer norm (``layer``), with or without conv biases
and pointwise (kernel 1) layers; a feature projection with or without its LayerNorm
(``feat_proj_layer_norm``, False for DistilHuBERT as S3PRL published it); a convolutional
positional embedding; post-LN (HuBERT Base) or pre-LN (``do_stable_layer_norm``) layers. Students
with time reduction, a log-mel front end, no feature projection, sinusoidal or no positions, or
no CNN norm are refused with one line pointing at ONNX.

Hidden states: ``output_hidden_states=True`` gives ``[transformer input, layer 1, ..., layer N]``
(pre-LN: the last one after the final LayerNorm), our ``layers`` layout exactly; when the
student's layer 0 is the CNN projection (``layer0: projection``, DistilHuBERT as published),
hidden state 0 is ``model.feature_projection(extract_features)`` instead (HF's hidden state 0 is
the transformer input after the positional conv). Prediction heads a checkpoint carries go to
``prediction_heads.safetensors`` + ``prediction_heads.json`` beside the model (HF has no place for
them; they are not dropped silently).

Padding (transformers 4.57): pass ``attention_mask`` for layer-norm CNNs and the padded batch
equals ours; a group-norm CNN normalises its first layer over the whole padded length in HF (its
documented behaviour: no ``attention_mask`` for such models, results depend on padding), so only
unpadded utterances equal ours there; ours uses valid frames only.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

import torch

from s3prl_distill.export import ExportError

logger = logging.getLogger(__name__)

__all__ = ["HF_ARCHITECTURE", "hf_refusal", "hf_config", "hf_state_dict", "export_hf"]

HF_ARCHITECTURE = "HubertModel"
HEADS_FILE = "prediction_heads.safetensors"
HEADS_META = "prediction_heads.json"


def hf_refusal(cfg) -> Optional[str]:
    """Why ``HubertModel`` cannot express a student of config ``cfg`` (None if it can)."""
    enc = cfg.encoder
    if cfg.front_end != "cnn":
        why = f"its front end is '{cfg.front_end}' (HubertModel reads waveforms with a conv stack)"
    elif cfg.time_reduction > 1:
        why = f"it has time reduction (k = {cfg.time_reduction}) before the transformer"
    elif cfg.cnn.norm == "none":
        why = "its CNN has no norm (HubertModel's conv stack has a group norm or layer norms)"
    elif not enc.feature_projection:
        why = "it has no feature projection"
    elif enc.sinusoidal_positions or not enc.pos_conv_kernel:
        why = "it has no convolutional positional embedding"
    elif cfg.hidden_states == "heads" and cfg.keep_heads and cfg.heads:
        why = "its hidden states are its prediction heads' outputs"
    else:
        return None
    return (f"a HubertModel cannot express this student: {why}; export it with --to onnx "
            f"(every student family, every hidden state)")


def hf_config(student) -> Dict[str, Any]:
    """``config.json`` of the ``HubertModel`` equal to ``student`` (transformers' keys)."""
    cfg = student.config
    enc = cfg.encoder
    layers = cfg.cnn.layers
    return {
        "architectures": [HF_ARCHITECTURE],
        "model_type": "hubert",
        "torch_dtype": "float32",
        "hidden_size": enc.dim,
        "num_hidden_layers": enc.num_layers,
        "num_attention_heads": enc.num_heads,
        "intermediate_size": enc.ffn_dim,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "feat_extract_norm": "group" if cfg.cnn.norm == "group_norm_first" else "layer",
        "feat_extract_activation": "gelu",
        "conv_dim": [spec.channels for spec in layers],
        "conv_kernel": [spec.kernel for spec in layers],
        "conv_stride": [spec.stride for spec in layers],
        "conv_bias": bool(cfg.cnn.bias),
        "feat_proj_layer_norm": bool(enc.feature_layer_norm),
        "num_conv_pos_embeddings": enc.pos_conv_kernel,
        "num_conv_pos_embedding_groups": enc.pos_conv_groups,
        "conv_pos_batch_norm": False,
        "do_stable_layer_norm": bool(enc.layer_norm_first),
        "hidden_dropout": enc.dropout,
        "attention_dropout": enc.attention_dropout,
        "activation_dropout": enc.activation_dropout,
        "feat_proj_dropout": enc.feature_dropout,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "apply_spec_augment": False,
        "mask_time_prob": 0.0,
        "mask_feature_prob": 0.0,
        "vocab_size": 32,
    }


def preprocessor_config(student) -> Dict[str, Any]:
    """``preprocessor_config.json``: raw 16 kHz waveforms, zero padding; the students read the
    waveform as it is (``do_normalize: false``); an attention mask only for layer-norm CNNs (the
    HF convention for group-norm models, whose first norm sees the padding anyway)."""
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": False,
        "return_attention_mask": student.config.cnn.norm != "group_norm_first",
    }


def _hf_name(name: str) -> Optional[str]:
    """Our parameter name -> HubertModel's (None for prediction heads)."""
    if name.startswith("heads."):
        return None
    if name.startswith("encoder.transformer."):
        return "encoder." + name[len("encoder.transformer."):]
    if name.startswith("encoder.feature_projection."):
        return name[len("encoder."):]
    if name.startswith("feature_extractor."):
        return name
    raise ExportError(f"parameter {name!r} has no place in a HubertModel; export with --to onnx")


def hf_state_dict(student) -> Dict[str, torch.Tensor]:
    """The body's tensors under ``HubertModel`` names (contiguous float32 copies)."""
    out = {}
    for name, value in student.state_dict().items():
        key = _hf_name(name)
        if key is not None:
            out[key] = value.detach().to("cpu", torch.float32).contiguous().clone()
    return out


def _heads(student) -> Dict[str, torch.Tensor]:
    return {name: value.detach().cpu().contiguous().clone()
            for name, value in student.state_dict().items() if name.startswith("heads.")}


def export_hf(student, output: str, meta: Optional[Dict[str, Any]] = None) -> List[str]:
    """Write ``student`` as a ``HubertModel`` folder at ``output`` (created; must be empty or absent).

    Returns the files written. Raises :class:`ExportError` (one line, pointing at ONNX) for a
    student ``HubertModel`` cannot express.
    """
    from safetensors.torch import save_file

    from s3prl_distill.io import atomic_write_text

    why = hf_refusal(student.config)
    if why:
        raise ExportError(why)
    output = os.fspath(output)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ExportError(f"{output}: exists and is not an empty folder; choose a new -o")
    os.makedirs(output, exist_ok=True)
    written = []
    config = hf_config(student)
    config["s3prl_distill"] = {
        "layer0": student.config.layer0,
        "hidden_state_0": ("feature_projection(extract_features)" if student.config.layer0 == "projection"
                           else "hidden_states[0]"),
        "downsample_rate": int(student.downsample_rate),
        "family": student.config.family,
        **({"teacher": meta.get("teacher")} if meta and meta.get("teacher") else {}),
    }
    weights = hf_state_dict(student)
    path = os.path.join(output, "model.safetensors")
    save_file(weights, path + ".tmp", metadata={"format": "pt"})
    os.replace(path + ".tmp", path)
    written.append(path)
    for name, data in (("config.json", config), ("preprocessor_config.json", preprocessor_config(student))):
        atomic_write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", os.path.join(output, name))
        written.append(os.path.join(output, name))
    heads = _heads(student)
    if heads:
        path = os.path.join(output, HEADS_FILE)
        save_file(heads, path + ".tmp", metadata={"format": "pt"})
        os.replace(path + ".tmp", path)
        described = {
            "what": "the student's distillation prediction heads (not part of the HubertModel); "
                    "head j reads hidden state student_layer (HubertModel hidden_states index) and "
                    "predicts teacher layer teacher_layer; parameter names as in s3prl-distill's "
                    "models/heads.py",
            "heads": [{"index": j, "type": h.type, "student_layer": h.student_layer,
                       "teacher_layer": h.teacher_layer, "inner_dim": h.inner_dim}
                      for j, h in enumerate(student.config.heads)],
            "teacher_dim": student.config.teacher_dim,
        }
        atomic_write_text(json.dumps(described, indent=2) + "\n", os.path.join(output, HEADS_META))
        written += [path, os.path.join(output, HEADS_META)]
    logger.info("wrote HubertModel folder %s (%d tensors%s)", output, len(weights),
                f", {len(heads)} head tensors in {HEADS_FILE}" if heads else "")
    return written
