"""Random initialisation of a student (``student.weight_init``), before any copy from a teacher.

``pytorch``: every module keeps PyTorch's default (``nn.Linear`` / ``nn.Conv1d``: kaiming-uniform
with ``a = sqrt(5)``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases).

``fairseq``: what both official codes do to their students (S3PRL 0.4.18
``s3prl/upstream/distiller/module.py`` + ``s3prl/upstream/wav2vec2/wav2vec2_model.py``, the
official FitHuBERT ``modules/module.py``), module by module in our names:

==========================================================  ===========================================
``feature_extractor.conv_layers.*.conv.weight``              ``nn.init.kaiming_normal_`` (fan_in, gain
(waveform CNN)                                               sqrt 2: std = sqrt(2 / (C_in K)));
                                                             ``ConvFeatureExtractionModel.make_conv``
``encoder.transformer.pos_conv_embed.conv``                  weight ~ N(0, sqrt(4 / (K D))) before the
                                                             weight norm, bias 0 (wav2vec 2.0's
                                                             ``pos_conv`` init)
``encoder.transformer.layers.*`` every ``nn.Linear``         weight ~ N(0, 0.02), bias 0 (fairseq's
(q/k/v/out projections, FFN)                                 ``init_bert_params``, applied by
                                                             ``TransformerEncoder.__init__``)
everything else (group/layer norms, feature projection,      PyTorch default: both codes build those
time reduction, heads, log-mel convs)                        outside the encoder (``post_extract_proj``,
                                                             heads, FitHuBERT's ``MelSpecHead``) or
                                                             leave them at their defaults
==========================================================  ===========================================

(``init_bert_params`` also re-draws fairseq ``MultiheadAttention``'s q/k/v weights from the same
N(0, 0.02), and S3PRL's ``SplitLinear`` heads use U(-1/sqrt(D_in), 1/sqrt(D_in)) = PyTorch's
``nn.Linear`` default, so both are covered by the table.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BERT_STD", "init_weights", "fairseq_init_", "pos_conv_std"]

#: standard deviation of fairseq's ``init_bert_params`` normal draws
BERT_STD = 0.02


def pos_conv_std(kernel: int, dim: int) -> float:
    """wav2vec 2.0's positional-conv weight std: ``sqrt(4 / (kernel * dim))`` (dropout 0)."""
    return math.sqrt(4.0 / (kernel * dim))


@torch.no_grad()
def _init_pos_conv_(conv: nn.Conv1d) -> None:
    """N(0, pos_conv_std) weight (through the weight-norm parametrisation, which re-derives its
    magnitude ``g`` and direction ``v`` from it, as ``nn.utils.weight_norm`` does), zero bias."""
    kernel, dim = conv.kernel_size[0], conv.out_channels
    weight = torch.empty_like(conv.weight).normal_(0.0, pos_conv_std(kernel, dim))
    conv.weight = weight  # parametrised: right_inverse sets original0 (g) and original1 (v)
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def fairseq_init_(student: nn.Module) -> None:
    """Re-initialise ``student`` (a :class:`~s3prl_distill.models.student.Student`) in place as
    the official codes do (see the module docstring)."""
    from s3prl_distill.models.cnn import FeatureExtractor

    front = student.feature_extractor
    if isinstance(front, FeatureExtractor):
        for block in front.conv_layers:
            nn.init.kaiming_normal_(block.conv.weight)
    transformer = student.encoder.transformer
    if transformer.pos_conv_embed is not None:
        _init_pos_conv_(transformer.pos_conv_embed.conv)
    for layer in transformer.layers:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, BERT_STD)
                if module.bias is not None:
                    module.bias.zero_()


def init_weights(student: nn.Module, scheme: str) -> None:
    """Apply ``scheme`` (``pytorch``: leave the defaults; ``fairseq``: :func:`fairseq_init_`)."""
    if scheme == "fairseq":
        fairseq_init_(student)
    elif scheme != "pytorch":
        raise ValueError(f"weight_init must be 'pytorch' or 'fairseq', got {scheme!r}")
