"""fairseq model / task configs (as plain data from :mod:`.fairseq_unpickle`) <-> :class:`Wav2Vec2Arch`.

:func:`fairseq_configs` finds the model and task sections of a checkpoint (``cfg`` of newer
checkpoints, the flat ``args`` namespace of older ones, the pretrained model's ``w2v_args`` of a
fine-tuned one); :func:`arch_from_fairseq` reads the torchaudio architecture (and the dropout
rates) off the model section with fairseq's defaults where a key is absent;
:func:`fairseq_model_config` writes the inverse; :func:`parse_conv_layers` reads fairseq's
``conv_feature_layers`` expression without ``eval``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from s3prl_distill.config import ConfigError, from_dict, to_dict
from s3prl_distill.conv_layers import parse_conv_layers as parse_layers
from s3prl_distill.teachers.base import TeacherError
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch

__all__ = ["fairseq_configs", "parse_conv_layers", "arch_from_fairseq", "fairseq_model_config"]


_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


def _resolve(value: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """Resolve omegaconf ``${a.b}`` references against ``root`` (absolute paths only)."""
    if isinstance(value, str) and depth < 8:
        match = _INTERPOLATION.match(value)
        if match:
            node: Any = root
            for part in match.group(1).split("."):
                if not isinstance(node, Mapping) or part not in node:
                    return value
                node = node[part]
            return _resolve(node, root, depth + 1)
    return value


def fairseq_configs(ckpt: Mapping[str, Any], where: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(model_cfg, task_cfg)`` of a (plain-data) fairseq checkpoint: from ``cfg.model`` /
    ``cfg.task`` when present, else the flat ``args`` namespace (both roles). Fine-tuned models
    (``w2v_args``) give the pretrained model's config."""
    cfg = ckpt.get("cfg")
    args = ckpt.get("args")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        model = {k: _resolve(v, cfg) for k, v in cfg["model"].items()}
        task = {k: _resolve(v, cfg) for k, v in (cfg.get("task") or {}).items()}
    elif isinstance(cfg, Mapping) and ("encoder_layers" in cfg or "conv_feature_layers" in cfg):
        model, task = dict(cfg), dict(cfg)  # unilm WavLM: one flat model config
    elif isinstance(args, Mapping):
        model, task = dict(args), dict(args)
    else:
        raise TeacherError(
            f"{where}: not a fairseq checkpoint: it has neither 'cfg' (with a 'model' section) nor "
            f"'args' (top-level keys: {sorted(ckpt)})"
        )
    inner = model.get("w2v_args")
    if isinstance(inner, Mapping):
        sub = {"cfg": inner} if isinstance(inner.get("model"), Mapping) else {"args": inner}
        inner_model, inner_task = fairseq_configs(sub, where)
        inner_task.setdefault("normalize", task.get("normalize", model.get("normalize")))
        return inner_model, inner_task
    return model, task


def parse_conv_layers(text: Any, where: str) -> List[Tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string (e.g. ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``)
    -> ``[(dim, kernel, stride)]``, by the one parser (:mod:`s3prl_distill.conv_layers`: never
    evaluated); errors are TeacherErrors naming the file and the key."""
    try:
        return parse_layers(text, where=f"{where}: conv_feature_layers")
    except ConfigError as err:
        raise TeacherError(str(err)) from None


_DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"


def arch_from_fairseq(
    model_cfg: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None, where: str = "teacher"
) -> Wav2Vec2Arch:
    """The torchaudio architecture of a fairseq HuBERT / wav2vec 2.0 / WavLM model config
    (fairseq's defaults where a key is absent), dropout rates included.
    ``overrides``: ``teacher.arch_config``."""

    def get(key: str, default: Any) -> Any:
        value = model_cfg.get(key)
        return default if value is None else value

    mode = get("extractor_mode", "default")
    if mode not in ("default", "group_norm", "layer_norm"):
        raise TeacherError(f"{where}: extractor_mode {mode!r} is not supported (default | layer_norm)")
    if get("layer_type", "transformer") != "transformer":
        raise TeacherError(f"{where}: layer_type {model_cfg.get('layer_type')!r} is not supported (transformer only)")
    if int(get("pos_conv_depth", 1)) != 1:
        raise TeacherError(f"{where}: pos_conv_depth {model_cfg.get('pos_conv_depth')} is not supported (1 only)")
    if get("activation_fn", "gelu") != "gelu":
        raise TeacherError(f"{where}: activation_fn {model_cfg.get('activation_fn')!r} is not supported (gelu only)")
    if model_cfg.get("relative_position_embedding") and not get("gru_rel_pos", True):
        raise TeacherError(f"{where}: WavLM without gru_rel_pos is not supported (torchaudio's WavLM is gated)")
    values = {
        "extractor_mode": "layer_norm" if mode == "layer_norm" else "group_norm",
        "conv_layers": parse_conv_layers(get("conv_feature_layers", _DEFAULT_CONV), where),
        "conv_bias": bool(get("conv_bias", False)),
        "embed_dim": int(get("encoder_embed_dim", 768)),
        "pos_conv_kernel": int(get("conv_pos", 128)),
        "pos_conv_groups": int(get("conv_pos_groups", 16)),
        "num_layers": int(get("encoder_layers", 12)),
        "num_heads": int(get("encoder_attention_heads", 12)),
        "ffn_dim": int(get("encoder_ffn_embed_dim", 3072)),
        "layer_norm_first": bool(get("layer_norm_first", False)),
        "num_buckets": int(get("relative_position_embedding_buckets", get("num_buckets", 320))),
        "max_distance": int(get("max_distance", 800)),
        # fairseq's HubertConfig / Wav2Vec2Config defaults (act only in train mode: eval_mode false)
        "dropout": float(get("dropout", 0.1)),
        "attention_dropout": float(get("attention_dropout", 0.1)),
        "activation_dropout": float(get("activation_dropout", 0.0)),
        "dropout_input": float(get("dropout_input", 0.0)),
    }
    values.update(dict(overrides or {}))
    return from_dict(Wav2Vec2Arch, to_dict(values), where=f"{where}: arch")


def fairseq_model_config(arch: Wav2Vec2Arch, name: str = "hubert") -> Dict[str, Any]:
    """A fairseq ``cfg.model`` section (plain dict) describing ``arch`` (inverse of
    :func:`arch_from_fairseq`), e.g. to write fairseq- or S3PRL-format checkpoints."""
    conv = " + ".join(f"[{tuple(c)}]" for c in arch.conv_layers)
    return {
        "_name": name,
        "extractor_mode": "layer_norm" if arch.extractor_mode == "layer_norm" else "default",
        "conv_feature_layers": conv,
        "conv_bias": arch.conv_bias,
        "encoder_layers": arch.num_layers,
        "encoder_embed_dim": arch.embed_dim,
        "encoder_ffn_embed_dim": arch.ffn_dim,
        "encoder_attention_heads": arch.num_heads,
        "layer_norm_first": arch.layer_norm_first,
        "conv_pos": arch.pos_conv_kernel,
        "conv_pos_groups": arch.pos_conv_groups,
        "activation_fn": "gelu",
        "dropout": arch.dropout,
        "attention_dropout": arch.attention_dropout,
        "activation_dropout": arch.activation_dropout,
        "dropout_input": arch.dropout_input,
    }
