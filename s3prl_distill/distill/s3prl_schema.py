"""S3PRL's own distiller model config, translated into a :class:`DistillConfig`.

S3PRL 0.4.18's ``s3prl/pretrain/distiller/config_model.yaml`` (read by its
``pretrain/distiller/pretrain_expert.py``) has four sections::

    distiller:   # DistillerConfig (s3prl/upstream/distiller/model.py): the student and its loss
      extractor_conv_feature_layers: '[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2'
      ...
    teacher: {model: hubert_base, n_layers: 12}   # S3PRL loads it from its torch hub (a download)
    task: {sequence_length: 250000}               # training crop in samples (0: whole utterances)
    audio: {target_level: None}                   # stored by the dataset, never used

Every key is mapped to our schema (student / teacher / loss / init / crop_samples) or rejected
with an error naming it; a missing ``distiller`` key takes S3PRL's own default
(:data:`DISTILLER_DEFAULTS`, from ``DistillerConfig.__init__``). What the translation gives:

* the student is S3PRL's ``DistillerModel`` (tested equal at identical weights): no LayerNorm on
  the CNN features, a projection only when the CNN width differs from the encoder's, the heads
  on the last layer (``expand-last``) or the layers themselves (``self-hidden``), layer 0 = the
  projection, S3PRL's random initialisation (``weight_init: fairseq``);
* the loss is S3PRL's ``compute_loss``: L1 + ``cosine_loss`` x (-log sigmoid cos), averaged over
  the predicted layers (``layer_reduction: mean``);
* ``init_teacher_conv_layers`` + ``init_teacher_encoder_layers`` = S3PRL's teacher copy (the
  encoder LayerNorm is not copied, as in S3PRL);
* ``task.sequence_length`` -> :attr:`DistillConfig.crop_samples` (the data side applies it).

Our deliberate defaults stay (padded frames excluded from the loss and from the first group norm;
the teacher in eval mode). Optional keys that S3PRL's own code ignores (so the same YAML still
runs in S3PRL) switch to S3PRL's behaviour or make the teacher local:

* ``distiller.group_norm_over_padding: true`` -> ``student.cnn.group_norm_over_padding``
* ``distiller.include_padded_frames: true`` -> ``loss.include_padded_frames``
* ``teacher.local: {source: fairseq, path: /data/hubert_base_ls960.pt}`` -> the teacher, any of
  our sources (:class:`~s3prl_distill.teachers.config.TeacherConfig`); without it
  ``teacher.model`` is S3PRL's hub entry (``source: s3prl``, ``name: <model>``, which downloads).
* ``teacher.eval_mode`` -> ``TeacherConfig.eval_mode`` (``false`` = S3PRL: the teacher's dropout
  stays on during distillation); ``teacher.padding`` -> ``TeacherConfig.padding`` (``s3prl``:
  the first group norm over the padded batch, as S3PRL's HuBERT expert); ``teacher.precision``
  (default ``float32``, as S3PRL runs its teacher with autocast off).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.conv_layers import MAX_CONV_LAYERS, parse_conv_layers

__all__ = [
    "S3PRL_SECTIONS",
    "DISTILLER_DEFAULTS",
    "EXTRA_DISTILLER_KEYS",
    "is_s3prl_schema",
    "MAX_CONV_LAYERS",
    "parse_conv_layers",
    "student_config_from_distiller",
    "distill_config_from_s3prl",
]

#: the top-level sections of S3PRL's distiller model config
S3PRL_SECTIONS = ("distiller", "teacher", "task", "audio")

#: S3PRL 0.4.18 ``DistillerConfig`` defaults (s3prl/upstream/distiller/model.py, lines 22-78):
#: what S3PRL uses for a key its YAML leaves out. ``pred_layer_id`` defaults to 1..n_tasks.
DISTILLER_DEFAULTS: Dict[str, Any] = {
    "extractor_mode": "default",
    "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "extractor_dropout": 0.0,
    "feature_grad_mult": 1.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "encoder_layers": 1,
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
    "out_layer_inter_dim": -1,
    "n_tasks": 12,
    "task_emb_type": "expand-last",
    "task_emb_size": 0,
    "layer_emb_size": 0,
    "loss_type": "l1",
    "feat_pen_loss": 0.0,
    "cosine_loss": 0.0,
    "pred_layer_id": None,
    "init_teacher_conv_layers": False,
    "init_teacher_encoder_layers": False,
}

#: our optional keys in ``distiller:`` (S3PRL's DistillerConfig ignores unknown keys)
EXTRA_DISTILLER_KEYS = ("group_norm_over_padding", "include_padded_frames")
_TEACHER_KEYS = ("model", "n_layers", "local", "eval_mode", "precision", "padding")
#: S3PRL's distiller runs its teacher in float32 with autocast off (pretrain_expert.py)
S3PRL_TEACHER_PRECISION = "float32"
_TASK_KEYS = ("sequence_length",)
_AUDIO_KEYS = ("target_level",)


def is_s3prl_schema(data: Mapping[str, Any]) -> bool:
    """Whether a loaded model YAML is S3PRL's schema (it has a ``distiller:`` section)."""
    return isinstance(data, Mapping) and "distiller" in data


# --------------------------------------------------------------------------- sections


def _section(data: Mapping[str, Any], name: str, allowed, where: str) -> Dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {name}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: {name}: unknown key(s) {unknown}; S3PRL's distiller reads "
                          f"{sorted(allowed)}")
    return dict(value)


def _expect(cfg: Dict[str, Any], key: str, allowed, where: str, why: str) -> None:
    if cfg[key] not in allowed:
        raise ConfigError(f"{where}: distiller.{key}: {cfg[key]!r} is not supported here ({why}); "
                          f"supported: {list(allowed)}")


def _number(cfg: Dict[str, Any], key: str, kind, where: str):
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ConfigError(f"{where}: distiller.{key}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def _flag(cfg: Dict[str, Any], key: str, where: str) -> bool:
    value = cfg[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: distiller.{key}: expected true or false, got {value!r}")
    return value


def student_config_from_distiller(section: Mapping[str, Any], teacher_layers: int = 12,
                                  where: str = "<config>"):
    """Our :class:`~s3prl_distill.models.config.StudentConfig` for S3PRL's ``distiller:`` section.

    Args:
        section: the ``distiller:`` mapping (missing keys take :data:`DISTILLER_DEFAULTS`).
        teacher_layers: the teacher's depth (S3PRL's ``teacher.n_layers``).
        where: names the file in errors.
    Raises:
        ConfigError: naming the key S3PRL's model has and ours does not implement.
    """
    from s3prl_distill.models.config import (
        CNNConfig, ConvLayerConfig, EncoderConfig, HeadConfig, StudentConfig,
    )

    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: distiller: expected a mapping, got {section!r}")
    unknown = sorted(set(section) - set(DISTILLER_DEFAULTS) - set(EXTRA_DISTILLER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: distiller: unknown key(s) {unknown}; S3PRL's DistillerConfig reads "
                          f"{sorted(DISTILLER_DEFAULTS)} (plus ours: {list(EXTRA_DISTILLER_KEYS)})")
    cfg = {**DISTILLER_DEFAULTS, **{k: v for k, v in section.items() if k in DISTILLER_DEFAULTS}}

    _expect(cfg, "extractor_mode", ("default", "layer_norm"), where, "S3PRL asserts one of these")
    _expect(cfg, "activation_fn", ("gelu",), where, "our layers use GELU")
    _expect(cfg, "attention_type", ("original",), where, "sparse/dynamic attention needs fairseq")
    _expect(cfg, "loss_type", ("l1",), where, "the DistilHuBERT loss is L1 + cosine")
    _expect(cfg, "task_emb_type", ("expand-last", "self-hidden"), where,
            "task embeddings (add/concat/concat-last/none) are not implemented")
    for key, why in (("extractor_dropout", "there is no dropout between our CNN layers"),
                     ("encoder_layerdrop", "our encoder has no layer drop"),
                     ("feat_pen_loss", "our loss has no CNN-feature penalty")):
        if _number(cfg, key, float, where) != 0.0:
            raise ConfigError(f"{where}: distiller.{key}: {cfg[key]!r} is not supported here ({why}); "
                              "only 0 (S3PRL's DistilHuBERT value)")

    layers = parse_conv_layers(cfg["extractor_conv_feature_layers"],
                               where=f"{where}: distiller.extractor_conv_feature_layers")
    dim = _number(cfg, "encoder_embed_dim", int, where)
    n_layers = _number(cfg, "encoder_layers", int, where)
    if n_layers < 1:
        raise ConfigError(f"{where}: distiller.encoder_layers: {n_layers} is not supported here (S3PRL "
                          "then replaces the encoder by a GELU); use at least 1")
    n_tasks = _number(cfg, "n_tasks", int, where)
    pred = cfg["pred_layer_id"]
    pred = list(range(1, n_tasks + 1)) if pred is None else pred
    if not isinstance(pred, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in pred):
        raise ConfigError(f"{where}: distiller.pred_layer_id: expected a list of teacher layers, got {pred!r}")
    if len(pred) != n_tasks:
        raise ConfigError(f"{where}: distiller.n_tasks: {n_tasks} but pred_layer_id has {len(pred)} "
                          f"layers {list(pred)} (S3PRL asserts they agree)")
    out_type, inter = cfg["out_layer_type"], _number(cfg, "out_layer_inter_dim", int, where)
    if cfg["task_emb_type"] == "expand-last":
        _expect(cfg, "out_layer_type", ("expand-last",), where,
                "task_emb_type expand-last predicts through the expand-last output layer")
        heads = [HeadConfig(student_layer=n_layers, teacher_layer=int(t), type="mlp",
                            inner_dim=inter if inter > 0 else None) for t in pred]
    else:  # self-hidden: the projection and every layer predict a teacher layer themselves
        _expect(cfg, "out_layer_type", ("none", "self-hidden"), where,
                "task_emb_type self-hidden has no output layer")
        if n_tasks != n_layers + 1:
            raise ConfigError(f"{where}: distiller.n_tasks: self-hidden needs encoder_layers + 1 = "
                              f"{n_layers + 1} predicted layers, got {n_tasks} (S3PRL asserts this)")
        if _flag(cfg, "layer_norm_first", where):
            raise ConfigError(f"{where}: distiller.layer_norm_first: self-hidden with pre-LN layers is "
                              "not supported here (S3PRL predicts from the last layer before its final "
                              "LayerNorm)")
        heads = [HeadConfig(student_layer=i, teacher_layer=int(t), type="identity")
                 for i, t in enumerate(pred)]
    channels = layers[-1][0]
    extra = {k: section[k] for k in EXTRA_DISTILLER_KEYS if k in section}
    for key, value in extra.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: distiller.{key}: expected true or false, got {value!r}")
    student = StudentConfig(
        family="distilhubert",
        cnn=CNNConfig(
            layers=[ConvLayerConfig(*layer) for layer in layers],
            norm="group_norm_first" if cfg["extractor_mode"] == "default" else "layer_norm",
            bias=False,
            group_norm_over_padding=extra.get("group_norm_over_padding", False),
        ),
        encoder=EncoderConfig(
            dim=dim,
            ffn_dim=_number(cfg, "encoder_ffn_embed_dim", int, where),
            num_heads=_number(cfg, "encoder_attention_heads", int, where),
            num_layers=n_layers,
            layer_norm_first=_flag(cfg, "layer_norm_first", where),
            pos_conv_kernel=_number(cfg, "conv_pos", int, where),
            pos_conv_groups=_number(cfg, "conv_pos_groups", int, where),
            dropout=_number(cfg, "dropout", float, where),
            attention_dropout=_number(cfg, "attention_dropout", float, where),
            activation_dropout=_number(cfg, "activation_dropout", float, where),
            feature_dropout=0.0,  # DistillerModel has no dropout on the projected features
            feature_layer_norm=False,  # nor a LayerNorm on the CNN features
            feature_projection=channels != dim,  # post_extract_proj only when the widths differ
        ),
        heads=heads,
        teacher_dim=_number(cfg, "final_dim", int, where),
        teacher_layers=int(teacher_layers),
        keep_heads=False,
        hidden_states="layers",
        feature_grad_mult=_number(cfg, "feature_grad_mult", float, where),
        layer0="projection",  # S3PRL's expert exposes feat_final (the projection) as state 0
        weight_init="fairseq",  # DistillerModel: kaiming CNN, wav2vec 2.0 pos_conv, init_bert_params
    )
    return from_dict(StudentConfig, _plain(student), where=f"{where}: distiller")


def _plain(obj: Any) -> Any:
    from s3prl_distill.config import to_dict

    return to_dict(obj)


def _teacher(section: Dict[str, Any], where: str):
    from s3prl_distill.teachers.config import TeacherConfig

    local = section.get("local")
    if local is not None:
        if not isinstance(local, Mapping):
            raise ConfigError(f"{where}: teacher.local: expected a mapping like {{source: fairseq, path: "
                              f"/data/hubert_base_ls960.pt}}, got {local!r}")
        data = dict(local)
        for key in ("eval_mode", "precision", "padding"):
            if key in section:
                data.setdefault(key, section[key])
        data.setdefault("precision", S3PRL_TEACHER_PRECISION)
        return from_dict(TeacherConfig, data, where=f"{where}: teacher.local")
    name = section.get("model")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: teacher.model: expected an S3PRL hub name such as hubert_base, "
                          f"got {name!r} (or give teacher.local: {{source: ..., path: ...}})")
    data = {"source": "s3prl", "name": name, "path": None, "precision": S3PRL_TEACHER_PRECISION}
    for key in ("eval_mode", "precision", "padding"):
        if key in section:
            data[key] = section[key]
    try:
        return from_dict(TeacherConfig, data, where=f"{where}: teacher")
    except ConfigError as err:
        raise ConfigError(
            f"{err} (teacher.model '{name}' is S3PRL's hub teacher, which S3PRL downloads from its "
            f"torch hub 's3prl/s3prl'; to use a local copy add teacher.local: "
            "{source: fairseq, path: /path/to/hubert_base_ls960.pt})") from None


def distill_config_from_s3prl(data: Mapping[str, Any], where: str = "<config>"):
    """Translate S3PRL's distiller model config (see the module docstring) into a DistillConfig.

    Raises:
        ConfigError: naming the file and the key that is unknown or not supported.
    """
    from s3prl_distill.distill.config import DistillConfig, InitConfig, LossConfig

    unknown = sorted(set(data) - set(S3PRL_SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown} in S3PRL's distiller schema "
                          f"(sections {list(S3PRL_SECTIONS)}); our own schema uses student/teacher/loss/init "
                          "and cannot be mixed with it")
    teacher_section = _section(data, "teacher", _TEACHER_KEYS, where)
    n_layers = teacher_section.get("n_layers")
    if n_layers is None or isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ConfigError(f"{where}: teacher.n_layers: expected the teacher's number of layers "
                          f"(12 for hubert_base), got {n_layers!r}")
    distiller = data["distiller"]
    student = student_config_from_distiller(distiller, teacher_layers=n_layers, where=where)
    teacher = _teacher(teacher_section, where)

    cfg = {**DISTILLER_DEFAULTS, **distiller}
    cosine = _number(cfg, "cosine_loss", float, where)
    if cosine < 0:
        raise ConfigError(f"{where}: distiller.cosine_loss: expected >= 0, got {cosine}")
    loss = LossConfig(type="distilhubert", cos_weight=cosine, layer_reduction="mean",
                      include_padded_frames=bool(distiller.get("include_padded_frames", False)))

    conv, enc = (_flag(cfg, key, where) for key in ("init_teacher_conv_layers", "init_teacher_encoder_layers"))
    if conv != enc:
        raise ConfigError(
            f"{where}: distiller.init_teacher_conv_layers ({conv}) and init_teacher_encoder_layers "
            f"({enc}) differ; copying only the CNN or only the encoder is not supported here (set both "
            "true, S3PRL's DistilHuBERT, or both false)")
    init = InitConfig(from_teacher=conv, num_layers=student.encoder.num_layers if conv else 0,
                      copy_encoder_layer_norm=False)

    task = _section(data, "task", _TASK_KEYS, where)
    crop = task.get("sequence_length")
    if crop is not None:
        if isinstance(crop, bool) or not isinstance(crop, int):
            raise ConfigError(f"{where}: task.sequence_length: expected samples (an integer), got {crop!r}")
        crop = max(crop, 0)  # S3PRL: <= 0 keeps whole utterances
    _section(data, "audio", _AUDIO_KEYS, where)  # target_level: stored by S3PRL, never applied

    return DistillConfig(student=student, teacher=teacher, loss=loss, init=init, crop_samples=crop,
                         source=where, schema="s3prl")
