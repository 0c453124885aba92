"""fairseq HuBERT / wav2vec 2.0 / WavLM checkpoints, read without fairseq and without running pickled code.

**Why this loader is safe.** A fairseq ``.pt`` pickles, beside the tensors, an
``argparse.Namespace`` (``"args"``, old checkpoints), an omegaconf ``DictConfig`` (``"cfg"``,
newer ones: ``DictConfig``/``ListConfig``/``*Node``/``*Metadata`` objects, ``typing.Any``,
``collections.defaultdict``) and, in HuBERT's ``task_state``, fairseq ``Dictionary`` objects. A
plain ``torch.load`` would import and run whatever the pickle names. We use torch's own
``weights_only=True`` unpickler (only tensors and plain containers) and, for the duration of the
call, allow *exactly* those class names - each mapped to an inert stand-in that only records the
pickled state (:class:`PickledObject`; no ``__setstate__`` logic, no imports of omegaconf/fairseq),
plus the harmless builtin constructors the omegaconf metadata names (``dict``, ``list``, ``int``,
...). Any other global in the file is refused with an error naming it. This keeps torch's tested
allow-list for tensor rebuilding (a hand-written unpickler would have to re-implement it) and
needs neither fairseq nor omegaconf installed. The stand-ins are then turned into plain data
(:func:`to_plain`).

**Mapping.** :func:`fairseq_to_torchaudio` renames a fairseq state dict to torchaudio
``Wav2Vec2Model`` names (the inverse, :func:`torchaudio_to_fairseq`, writes fairseq layout, used to
make S3PRL/fairseq-format files from any teacher); training-only tensors (``mask_emb``,
``final_proj``, ``label_embs_concat``, quantizer, ...) are dropped, any other unknown key is an
error. Fine-tuned checkpoints (``w2v_encoder.w2v_model.*``, config in ``w2v_args``) are accepted.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

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

__all__ = [
    "PickledObject",
    "safe_load_fairseq",
    "to_plain",
    "fairseq_configs",
    "arch_from_fairseq",
    "parse_conv_layers",
    "fairseq_to_torchaudio",
    "torchaudio_to_fairseq",
    "fairseq_model_config",
    "load_fairseq_teacher",
]


class PickledObject:
    """Inert stand-in for an allow-listed pickled class: keeps the class name and the state.

    Attributes:
        pickled_class (str): e.g. ``"omegaconf.dictconfig.DictConfig"``.
        state: what the pickle's BUILD step passed (usually a dict), else ``None``.
        args: constructor arguments the pickle gave (NEWOBJ / REDUCE).
    """

    pickled_class = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        obj.__dict__["state"] = None
        return obj

    def __init__(self, *args, **kwargs) -> None:  # REDUCE calls cls(*args): nothing to do
        pass

    def __setstate__(self, state) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}>"


#: the only non-tensor classes a fairseq checkpoint may name (each becomes a PickledObject)
STAND_IN_CLASSES = (
    "argparse.Namespace",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
    "omegaconf.nodes.EnumNode",
    "fairseq.data.dictionary.Dictionary",
    "typing.Any",
)

#: builtin constructors named by omegaconf metadata (type annotations): harmless to call
HARMLESS_BUILTINS = {
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "builtins.tuple": tuple,
    "builtins.object": object,
    "pathlib.PosixPath": str,
    "pathlib.Path": str,
}


def _plain_defaultdict(*_args) -> dict:
    """Stand-in for ``collections.defaultdict(factory)``: a plain dict (the factory is dropped)."""
    return {}


_STAND_INS = {name: type(name.rsplit(".", 1)[1], (PickledObject,), {"pickled_class": name}) for name in STAND_IN_CLASSES}


def _safe_globals() -> List[Tuple[Any, str]]:
    allowed = [(cls, name) for name, cls in _STAND_INS.items()]
    allowed += [(fn, name) for name, fn in HARMLESS_BUILTINS.items()]
    allowed.append((_plain_defaultdict, "collections.defaultdict"))
    return allowed


def safe_load_fairseq(path: str) -> Dict[str, Any]:
    """Load a fairseq checkpoint with ``weights_only=True`` and the stand-ins above.

    Returns:
        the checkpoint dict with tensors as tensors and every other object as plain data
        (``args``/``cfg`` become nested dicts; see :func:`to_plain`).
    Raises:
        TeacherError: naming the path: missing, not a checkpoint, or a pickled global outside the
            allow-list (named in the message).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TeacherError(f"teacher.path {path}: no such file (expected a fairseq .pt checkpoint)")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError / RuntimeError with long text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        match = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it pickles {match.group(1)}, which is not on the allow-list" if match else first
        raise TeacherError(
            f"teacher.path {path}: cannot be read safely as a fairseq checkpoint: {what}. Only "
            f"tensors, plain data and {', '.join(STAND_IN_CLASSES)} are accepted (no pickled code "
            "is ever run)."
        ) from err
    if not isinstance(data, Mapping):
        raise TeacherError(f"teacher.path {path}: expected a checkpoint dict, got {type(data).__name__}")
    return {k: to_plain(v) for k, v in data.items()}


def to_plain(obj: Any) -> Any:
    """Turn stand-ins (``DictConfig``, ``Namespace``, nodes, ...) into plain dicts/lists/values."""
    if isinstance(obj, PickledObject):
        state = obj.state if obj.state is not None else {}
        name = obj.pickled_class
        if name in ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig"):
            content = state.get("_content") if isinstance(state, dict) else None
            if isinstance(content, str):  # "???" (missing) or an interpolation of the whole node
                return None if content == "???" else content
            return to_plain(content)
        if name.startswith("omegaconf.nodes."):
            value = state.get("_val") if isinstance(state, dict) else None
            return None if value == "???" else to_plain(value)
        if name == "typing.Any":
            return "typing.Any"
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            return {k: to_plain(v) for k, v in state.items()}
        return to_plain(state)
    if isinstance(obj, argparse.Namespace):  # the real class, if someone allow-listed it globally
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj


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
    """Parse fairseq's ``conv_feature_layers`` string, e.g.
    ``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"``, without ``eval``: only list/tuple
    literals of integers, ``+`` and ``*`` are accepted."""
    if isinstance(text, (list, tuple)):
        node_value = [tuple(t) for t in text]
    else:
        try:
            tree = ast.parse(str(text), mode="eval")
        except SyntaxError as err:
            raise TeacherError(f"{where}: conv_feature_layers {text!r} is not a list expression") from err

        def value(node: ast.AST) -> Any:
            if isinstance(node, ast.Expression):
                return value(node.body)
            if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
                return node.value
            if isinstance(node, ast.List):
                return [value(e) for e in node.elts]
            if isinstance(node, ast.Tuple):
                return tuple(value(e) for e in node.elts)
            if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
                left, right = value(node.left), value(node.right)
                return left + right if isinstance(node.op, ast.Add) else left * right
            raise TeacherError(
                f"{where}: conv_feature_layers {text!r}: only lists of (dim, kernel, stride) tuples, "
                f"'+' and '*' are allowed, found {type(node).__name__}"
            )

        node_value = value(tree)
    if not isinstance(node_value, list) or not all(
        isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in node_value
    ):
        raise TeacherError(f"{where}: conv_feature_layers {text!r} is not a list of (dim, kernel, stride)")
    return node_value


_DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"


def arch_from_fairseq(
    model_cfg: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None, where: str = "teacher"
) -> Wav2Vec2Arch:
    """The torchaudio architecture of a fairseq HuBERT / wav2vec 2.0 / WavLM model config
    (fairseq's defaults where a key is absent). ``overrides``: ``teacher.arch_config``."""

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
    }
    values.update(dict(overrides or {}))
    return from_dict(Wav2Vec2Arch, to_dict(values), where=f"{where}: arch")


# ---------------------------------------------------------------------------------------------
# state-dict mapping
# ---------------------------------------------------------------------------------------------
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


def _is_wavlm(state: Mapping[str, Tensor]) -> bool:
    return any(".self_attn.relative_attention_bias." in k or ".self_attn.grep_linear." in k for k in state)


def fairseq_to_torchaudio(state: Mapping[str, Tensor], where: str = "teacher") -> Dict[str, Tensor]:
    """Rename a fairseq HuBERT / wav2vec 2.0 / WavLM state dict to torchaudio names.

    Raises:
        TeacherError: listing keys that are neither mapped nor known training-only tensors.
    """
    prefix = "w2v_encoder.w2v_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    wavlm = _is_wavlm(state)
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
    }


def _fill_identity_projection(state: Dict[str, Tensor], arch: Wav2Vec2Arch) -> None:
    """fairseq has no ``post_extract_proj`` when CNN channels == embed_dim: use the identity."""
    key = "encoder.feature_projection.projection.weight"
    if key not in state and arch.conv_layers[-1][0] == arch.embed_dim:
        state[key] = torch.eye(arch.embed_dim)
        state["encoder.feature_projection.projection.bias"] = torch.zeros(arch.embed_dim)


def load_fairseq_teacher(cfg) -> Wav2Vec2Teacher:
    """``source: fairseq``: see the module docstring."""
    path = os.fspath(cfg.path)
    where = f"teacher.path {path}"
    ckpt = safe_load_fairseq(path)
    state = ckpt.get("model")
    if not isinstance(state, Mapping) or not state:
        raise TeacherError(f"{where}: no 'model' state dict in this fairseq checkpoint (keys: {sorted(ckpt)})")
    model_cfg, task_cfg = fairseq_configs(ckpt, where)
    arch = arch_from_fairseq(model_cfg, cfg.arch_config, where)
    mapped = fairseq_to_torchaudio(state, where)
    _fill_identity_projection(mapped, arch)
    file_name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    kind = "wavlm" if _is_wavlm(state) else ("wav2vec2" if file_name.startswith("wav2vec") else "hubert")
    if cfg.arch is not None and (cfg.arch == "wavlm") != (kind == "wavlm"):
        raise TeacherError(f"{where}: teacher.arch is {cfg.arch!r} but the checkpoint is a {kind} model")
    if cfg.arch is not None and file_name and cfg.arch != kind:
        logger.warning("%s: teacher.arch %r but the checkpoint says %r; using %r", where, cfg.arch, file_name, kind)
    normalize = cfg.normalize_waveform
    if normalize is None:
        normalize = bool(task_cfg.get("normalize", model_cfg.get("normalize", False)) or False)
    return teacher_from_state_dict(
        mapped, arch, kind, source="fairseq", path=path, normalize_waveform=normalize, where=where
    )
