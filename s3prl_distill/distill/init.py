"""Initialise a student from its teacher (DistilHuBERT Sec. 2: CNN + first layers copied).

What is copied is S3PRL's DistilHuBERT initialisation by default: the CNN (+ its GroupNorm), the
feature projection, the positional conv and the first ``num_layers`` transformer layers; a post-LN
student's encoder LayerNorm (between the positional conv and layer 1) keeps its fresh (1, 0)
values unless ``init.copy_encoder_layer_norm``. (A pre-LN student's encoder LayerNorm follows its
last layer; the teacher decides whether it hands one over: Whisper's ``ln_post`` only when every
block is copied.)

The teacher hands over its CNN front end and first ``num_layers`` transformer layers already in
the student's parameter names (``Teacher.student_init_state``); this module checks every key
and shape against the student and loads them, so a mismatch is an error that names the
parameter instead of a silent partial copy.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
from torch import Tensor, nn

from s3prl_distill.state_dict import describe_mismatch

logger = logging.getLogger(__name__)

__all__ = ["init_student_from_teacher", "load_init_state", "ENCODER_LAYER_NORM"]

#: the encoder LayerNorm's parameters (copied only with ``init.copy_encoder_layer_norm``)
ENCODER_LAYER_NORM = "encoder.transformer.layer_norm."


def load_init_state(student: nn.Module, state: Dict[str, Tensor], where: str = "teacher") -> List[str]:
    """Copy ``state`` (student parameter names) into ``student``; returns the copied names.

    Raises:
        ValueError: a key is not a student parameter/buffer, or its shape differs.
    """
    own = student.state_dict()
    problem = describe_mismatch(own, state, allow_missing=True, given_name="teacher",
                                expected_name="student")
    if problem:
        raise ValueError(f"{where}: cannot initialise the student: {problem}")
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
    return sorted(state)


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, init_cfg) -> List[str]:
    """Apply ``init_cfg`` (:class:`~s3prl_distill.distill.config.InitConfig`); returns copied keys."""
    if not init_cfg.from_teacher:
        return []
    check = getattr(teacher, "check_student_fits", None)  # teachers whose copy needs more than shapes
    if callable(check) and hasattr(student, "config"):
        check(student.config)
    state = teacher.student_init_state(init_cfg.num_layers)
    # a student without the CNN-feature LayerNorm (S3PRL's DistilHuBERT layout) takes the
    # teacher's projection alone, as S3PRL's DistilHuBERT initialisation did
    prefix = "encoder.feature_projection.layer_norm."
    if not any(k.startswith(prefix) for k in student.state_dict()):
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    # S3PRL copies feature_extractor, post_extract_proj, encoder.pos_conv and the first layers,
    # not encoder.layer_norm (s3prl/pretrain/distiller/pretrain_expert.py, DistillerForPretrain);
    # in a post-LN student that LayerNorm sits between the positional conv and layer 1
    post_ln = not getattr(getattr(getattr(student, "config", None), "encoder", None),
                          "layer_norm_first", False)
    if post_ln and not init_cfg.copy_encoder_layer_norm:
        state = {k: v for k, v in state.items() if not k.startswith(ENCODER_LAYER_NORM)}
    copied = load_init_state(student, state, where=f"{type(teacher).__name__}")
    logger.info("initialised %d student tensors from the teacher (CNN + %d layers)", len(copied),
                init_cfg.num_layers)
    return copied
