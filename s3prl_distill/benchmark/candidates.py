"""The models the benchmark compares, each wrapped as a :class:`Candidate`.

A candidate is a forward function on a padded batch ``(wavs [B, S], wav_lengths [B])`` that does
what an S3PRL upstream does for the featurizer (all hidden states, heads only where the model's
upstream returns them), plus its parameter counts.

* ``teacher``: HuBERT Base (torchaudio ``hubert_base`` architecture, random weights), all layers.
* ``s3prl_distiller``: S3PRL's own DistilHuBERT through its hub expert (``distiller_local``)
  without heads (``no_pred=True``: the like-for-like comparison with ours);
  ``s3prl_distiller+heads``: the same expert as S3PRL's ``distilhubert`` entry runs it by default,
  head outputs included in ``hidden_states``.
* ours: students built from ``upstream_configs/*.yaml`` by :mod:`s3prl_distill.models`.

Weights are random (no hub): speed does not depend on their values.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "Candidate",
    "count_params",
    "teacher_candidate",
    "s3prl_candidates",
    "student_candidate",
    "config_candidates",
    "TINY_TEACHER",
    "TINY_S3PRL",
]

# Shapes for smoke tests (``tiny=True``): 2 conv layers (stride 320 kept), 2 x 32-dim layers.
TINY_CONV = [(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 2, 2), (32, 2, 2)]
TINY_TEACHER = dict(
    extractor_mode="group_norm", extractor_conv_layer_config=TINY_CONV, extractor_conv_bias=False,
    encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
    encoder_pos_conv_groups=4, encoder_num_layers=4, encoder_num_heads=2,
    encoder_attention_dropout=0.0, encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
)
# (40 CNN channels != 32 encoder dims: S3PRL then builds its post_extract_proj, as in the real model)
TINY_S3PRL = dict(
    extractor_conv_feature_layers=str([(40, k, s) for _, k, s in TINY_CONV]).replace(" ", ""), conv_pos=16,
    conv_pos_groups=4, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
    encoder_attention_heads=2, final_dim=32, pred_layer_id=[2, 3, 4],
)


@dataclass
class Candidate:
    """One model under test.

    Attributes:
        name: row label (``teacher``, ``s3prl_distiller``, ``distilhubert``, ...).
        run: ``run(wavs [B, S], wav_lengths [B]) -> outputs``; called under inference mode.
        params: parameters the upstream uses (prediction heads excluded unless it returns them).
        params_with_heads: all parameters, heads included.
        kind: ``teacher`` | ``reference`` (S3PRL's) | ``ours`` | ``variant`` (an optimisation).
        module: the ``nn.Module`` (for optimisation variants and equivalence checks).
        hidden: ``hidden(wavs, lengths) -> (List[Tensor [B, T, D]], lengths [B])`` where known.
        note: shown in the table.
    """

    name: str
    run: Callable[[Tensor, Tensor], Any]
    params: int
    params_with_heads: int
    kind: str
    module: Optional[nn.Module] = None
    hidden: Optional[Callable[[Tensor, Tensor], Any]] = None
    note: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)


def count_params(module: nn.Module, exclude_prefixes: Sequence[str] = ()) -> int:
    """Number of parameters of ``module``, leaving out names starting with ``exclude_prefixes``."""
    return sum(
        p.numel()
        for name, p in module.named_parameters()
        if not any(name.startswith(prefix) for prefix in exclude_prefixes)
    )


def teacher_candidate(tiny: bool = False, seed: int = 0) -> Candidate:
    """HuBERT Base (torchaudio architecture, random weights): every transformer layer's output."""
    from torchaudio.models import hubert_base, wav2vec2_model

    torch.manual_seed(seed)
    model = (wav2vec2_model(**TINY_TEACHER) if tiny else hubert_base()).eval()

    def run(wavs: Tensor, lengths: Tensor):
        return model.extract_features(wavs, lengths)

    def hidden(wavs: Tensor, lengths: Tensor):
        states, out_lengths = model.extract_features(wavs, lengths)
        return states, out_lengths

    params = count_params(model)
    return Candidate(
        "teacher", run, params, params, "teacher", module=model, hidden=hidden,
        note="HuBERT Base arch (torchaudio), 12 layers" if not tiny else "tiny teacher",
    )


def _unpad(wavs: Tensor, lengths: Tensor) -> List[Tensor]:
    return [wavs[i, : int(lengths[i])] for i in range(wavs.shape[0])]


def s3prl_candidates(
    workdir: str, tiny: bool = False, seed: int = 0, model: Optional[nn.Module] = None,
    config: Optional[Dict[str, Any]] = None,
) -> List[Candidate]:
    """S3PRL's DistilHuBERT through its own hub expert, without and with heads, and our student
    code running the same weights (``distilhubert@s3prl``, for the like-for-like comparison).

    Args:
        workdir: folder for the temporary ``distiller_local`` checkpoint.
        tiny: tiny shapes for smoke tests.
        model, config: an existing ``DistillerModel`` and its config (default: a random one).
    """
    from s3prl_distill.benchmark.s3prl_distiller import (
        build_s3prl_distiller, build_s3prl_expert, s3prl_distiller_config, write_s3prl_checkpoint,
    )

    if config is None:
        config = s3prl_distiller_config(**(TINY_S3PRL if tiny else {}))
    if model is None:
        model = build_s3prl_distiller(config, seed=seed)
    path = write_s3prl_checkpoint(model, config, os.path.join(workdir, "s3prl_distiller.ckpt"))
    expert = build_s3prl_expert(path)
    with_heads = count_params(expert)
    without = count_params(expert, exclude_prefixes=("model.model.output_layer.",))

    def run_plain(wavs: Tensor, lengths: Tensor):
        return expert(_unpad(wavs, lengths), no_pred=True)

    def run_heads(wavs: Tensor, lengths: Tensor):
        return expert(_unpad(wavs, lengths))

    def hidden(wavs: Tensor, lengths: Tensor):
        out = expert(_unpad(wavs, lengths), no_pred=True)
        return out["hidden_states"], out["pad_mask"].sum(-1).long()

    from s3prl_distill.benchmark.s3prl_distiller import student_from_s3prl

    ours = student_candidate(
        "distilhubert@s3prl", student_from_s3prl(model, config),
        note="our student code, S3PRL's weights converted (identical outputs)",
    )
    return [
        ours,
        Candidate(
            "s3prl_distiller", run_plain, without, with_heads, "reference", module=expert,
            hidden=hidden, note="s3prl.upstream.distiller hub expert, no_pred=True",
        ),
        Candidate(
            "s3prl_distiller+heads", run_heads, with_heads, with_heads, "reference",
            module=expert, note="same, heads in hidden_states (s3prl's default)",
        ),
    ]


def student_candidate(name: str, student: nn.Module, note: str = "", kind: str = "ours") -> Candidate:
    """One of our students (``s3prl_distill.models.Student``), heads off as the upstream runs it."""
    student = student.eval()
    keep_heads = bool(getattr(getattr(student, "config", None), "keep_heads", False))

    def run(wavs: Tensor, lengths: Tensor):
        return student(wavs, lengths, with_heads=keep_heads)

    def hidden(wavs: Tensor, lengths: Tensor):
        out = student(wavs, lengths, with_heads=keep_heads)
        return out.hidden_states, out.lengths

    with_heads = count_params(student)
    without = with_heads if keep_heads else count_params(student, exclude_prefixes=("heads.",))
    return Candidate(name, run, without, with_heads, kind, module=student, hidden=hidden, note=note)


def config_candidates(
    config_dir: str, patterns: Sequence[str], tiny: bool = False, seed: int = 0
) -> List[Candidate]:
    """Our students from model YAMLs in ``config_dir`` matching ``patterns`` (glob), in order.

    Files that cannot be built are skipped with a warning naming the file and the reason (the
    benchmark must still report the others).
    """
    try:
        from s3prl_distill.distill.config import DistillConfig
        from s3prl_distill.models import build_student
    except ImportError as err:
        logger.warning("our students are not available (%s): skipped", err)
        return []
    out: List[Candidate] = []
    seen = set()
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(config_dir, pattern))):
            if path in seen:
                continue
            seen.add(path)
            name = os.path.splitext(os.path.basename(path))[0]
            try:
                cfg = DistillConfig.from_yaml(path).student
                if tiny:
                    cfg = _tiny_student(cfg)
                torch.manual_seed(seed)
                student = build_student(cfg)
            except Exception as err:  # report and go on: one bad file must not hide the others
                logger.warning("%s: cannot build the student (%s): skipped", path, err)
                continue
            out.append(student_candidate(name, student, note=os.path.relpath(path)))
    return out


def _tiny_student(cfg):
    """Shrink a student config for smoke tests: same structure, channels / 16, 32-dim layers."""
    cnn = dataclasses.replace(
        cfg.cnn,
        layers=[dataclasses.replace(l, channels=max(8, l.channels // 16)) for l in cfg.cnn.layers],
    )
    encoder = dataclasses.replace(
        cfg.encoder, dim=32, ffn_dim=64, num_heads=2, pos_conv_kernel=16, pos_conv_groups=4,
    )
    teacher_layers = TINY_TEACHER["encoder_num_layers"]
    heads = [
        dataclasses.replace(h, teacher_layer=min(h.teacher_layer, teacher_layers),
                            inner_dim=None if h.inner_dim is None else 32)
        for h in cfg.heads
    ]
    try:
        return dataclasses.replace(
            cfg, cnn=cnn, encoder=encoder, heads=heads, teacher_dim=32, teacher_layers=teacher_layers,
        )
    except Exception as err:
        raise ValueError(f"cannot shrink student config for a tiny run: {err}") from err


def embedded_teacher_candidate(config_dir: str, pattern: str = "whisper_tiny_*.yaml") -> Optional[Candidate]:
    """The teacher of the embedded-teacher students (Whisper tiny.en encoder), for context.

    Built from the ``teacher:`` section of the first YAML matching ``pattern``; ``None`` (with a
    warning) when there is none or it cannot be built (e.g. the weights package is absent).
    """
    paths = sorted(glob.glob(os.path.join(config_dir, pattern)))
    if not paths:
        return None
    try:
        from s3prl_distill.distill.config import DistillConfig
        from s3prl_distill.teachers import build_teacher

        teacher = build_teacher(DistillConfig.from_yaml(paths[0]).teacher)
    except Exception as err:  # context row only: report and go on
        logger.warning("%s: cannot build the embedded teacher (%s): skipped", paths[0], err)
        return None

    def run(wavs: Tensor, lengths: Tensor):
        return teacher(wavs, lengths)

    def hidden(wavs: Tensor, lengths: Tensor):
        out = teacher(wavs, lengths)
        return out.hidden_states, out.lengths

    params = count_params(teacher)
    return Candidate(
        "whisper_tiny_teacher", run, params, params, "reference", module=teacher, hidden=hidden,
        note=f"teacher of {os.path.basename(pattern)} students ({os.path.relpath(paths[0])})",
    )
