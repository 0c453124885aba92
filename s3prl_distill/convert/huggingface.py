"""Hugging Face ``HubertModel`` / ``Wav2Vec2Model`` folders of distilled students
(``ntu-spml/distilhubert`` as published: 2 post-LN layers, no feature-projection LayerNorm).

The folder holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, read with
weights_only). The weights are renamed with the teachers' reader
(:func:`s3prl_distill.teachers.huggingface.hf_to_torchaudio`): our student uses torchaudio's names.

What equals what (``tests/test_convert_huggingface.py``, against transformers): our
``hidden_states`` are transformers' ``output_hidden_states`` (index 0 = the transformer input
after the positional conv and, post-LN, the encoder LayerNorm; index i = layer i). On a padded
batch ours equal transformers' output for each utterance run alone: we normalise the first conv
over valid samples only and mask padded keys. transformers' own padded batch differs for the
shorter utterances: its group norm spans the padding (its feature extractor therefore sends no
attention mask for group-norm models and feeds the padding to the attention too).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping

from s3prl_distill.checkpoint import CheckpointError
from s3prl_distill.convert.common import Converted

__all__ = ["FORMAT", "DESCRIPTION", "matches", "student_config_from_hf", "convert"]

FORMAT = "huggingface"
DESCRIPTION = "Hugging Face HubertModel / Wav2Vec2Model folder (config.json + weights)"
_KINDS = ("hubert", "wav2vec2")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def folder_of(path: str) -> str:
    """The folder meant by ``path``: itself, or the folder of a weight file / config.json in it."""
    if os.path.isfile(path) and os.path.basename(path) in WEIGHT_FILES + ("config.json",):
        return os.path.dirname(os.path.abspath(path))
    return path


def matches(path: str) -> bool:
    """Whether ``path`` is (a file of) a folder with a config.json and a weight file."""
    folder = folder_of(path)
    return (os.path.isdir(folder) and os.path.isfile(os.path.join(folder, "config.json"))
            and any(os.path.isfile(os.path.join(folder, f)) for f in WEIGHT_FILES))


def _read_config(folder: str) -> Dict[str, Any]:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def student_config_from_hf(config: Mapping[str, Any]):
    """Our StudentConfig for a transformers ``config.json`` (transformers' defaults where absent).

    Raises:
        ValueError: naming an option our student does not implement.
    """
    from s3prl_distill.models.config import CNNConfig, ConvLayerConfig, EncoderConfig, StudentConfig

    def get(key: str, default: Any) -> Any:
        value = config.get(key)
        return default if value is None else value

    kind = config.get("model_type")
    if kind not in _KINDS:
        raise ValueError(f"model_type {kind!r} is not supported (expected one of {list(_KINDS)})")
    for key, ok in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu"),
                    ("layer_norm_eps", 1e-5), ("num_conv_pos_embedding_layers", 1),
                    ("conv_pos_batch_norm", False), ("add_adapter", False), ("use_weighted_layer_sum", False)):
        if get(key, ok) != ok:
            raise ValueError(f"{key} {config.get(key)!r} is not supported (only {ok!r})")
    norm = {"group": "group_norm_first", "layer": "layer_norm"}.get(get("feat_extract_norm", "group"))
    if norm is None:
        raise ValueError(f"feat_extract_norm {config.get('feat_extract_norm')!r} is not supported (group | layer)")
    dims = list(get("conv_dim", [512] * 7))
    kernels = list(get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
    strides = list(get("conv_stride", [5, 2, 2, 2, 2, 2, 2]))
    if not len(dims) == len(kernels) == len(strides):
        raise ValueError(f"conv_dim/conv_kernel/conv_stride differ in length: {dims}, {kernels}, {strides}")
    dim = int(get("hidden_size", 768))
    return StudentConfig(
        family="distilhubert",
        cnn=CNNConfig(layers=[ConvLayerConfig(int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)],
                      norm=norm, bias=bool(get("conv_bias", False))),
        encoder=EncoderConfig(
            dim=dim, ffn_dim=int(get("intermediate_size", 3072)),
            num_heads=int(get("num_attention_heads", 12)), num_layers=int(get("num_hidden_layers", 12)),
            layer_norm_first=bool(get("do_stable_layer_norm", False)),
            pos_conv_kernel=int(get("num_conv_pos_embeddings", 128)),
            pos_conv_groups=int(get("num_conv_pos_embedding_groups", 16)),
            dropout=float(get("hidden_dropout", 0.1)), attention_dropout=float(get("attention_dropout", 0.1)),
            activation_dropout=float(get("activation_dropout", 0.1)),
            feature_dropout=float(get("feat_proj_dropout", 0.1)),
            # wav2vec2's projection always has the LayerNorm; HuBERT's only with feat_proj_layer_norm
            feature_layer_norm=bool(get("feat_proj_layer_norm", True)) if kind == "hubert" else True,
        ),
        heads=[],
        teacher_dim=dim,
        teacher_layers=int(get("num_hidden_layers", 12)),
    )


def convert(path: str) -> Converted:
    """A Hugging Face folder (see :func:`matches`) -> :class:`Converted`.

    Raises:
        CheckpointError: naming the folder and the option or weight that does not convert.
    """
    from s3prl_distill.teachers.huggingface import _HEAD_PREFIXES, hf_to_torchaudio, read_hf_weights
    from s3prl_distill.teachers.wav2vec2 import normalize_state_dict_names

    folder = folder_of(path)
    config = _read_config(folder)
    try:
        cfg = student_config_from_hf(config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{os.path.join(folder, 'config.json')}: does not convert: {err}") from err
    kind = config["model_type"]
    raw = read_hf_weights(folder, folder)
    state = normalize_state_dict_names(hf_to_torchaudio(raw, kind, folder))
    state = {k: v.detach().clone().float() for k, v in state.items()}
    prefix = kind + "."
    base = [k[len(prefix):] if k.startswith(prefix) else k for k in raw]
    dropped = sorted(k for k in base if k.startswith(_HEAD_PREFIXES))
    notes = []
    pre = os.path.join(folder, "preprocessor_config.json")
    if os.path.isfile(pre):
        with open(pre, "r", encoding="utf-8") as handle:
            try:
                do_normalize = bool(json.load(handle).get("do_normalize", False))
            except (json.JSONDecodeError, AttributeError):
                do_normalize = False
        if do_normalize:
            notes.append("preprocessor_config.json has do_normalize: true: transformers' feature "
                         "extractor normalises each waveform to zero mean and unit variance; our "
                         "student does not, so normalise inputs the same way to get its outputs")
    training = {"converted_from": os.path.basename(os.path.abspath(folder)), "source_format": FORMAT,
                "model_type": kind}
    if isinstance(config.get("architectures"), list):
        training["architectures"] = [str(a) for a in config["architectures"]]
    return Converted(FORMAT, DESCRIPTION, cfg, state, teacher={}, training=training,
                     dropped=[f"{k}: not used by the base model's forward pass" for k in dropped],
                     notes=notes)
