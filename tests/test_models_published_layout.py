"""Our DistilHuBERT layout equals S3PRL's published DistilHuBERT expert, hidden state by hidden state.

S3PRL's ``distiller_local`` expert exposes ``[CNN projection] + transformer layers + head outputs``;
with the same weights (converted by ``s3prl_distill.benchmark.s3prl_distiller``) our student with
``layer0: projection``, ``hidden_states: layers+heads`` and kept heads gives the same list.
"""

from __future__ import annotations

import dataclasses

import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill.benchmark.candidates import TINY_S3PRL
from s3prl_distill.benchmark.s3prl_distiller import (
    build_s3prl_distiller,
    build_s3prl_expert,
    convert_s3prl_state_dict,
    s3prl_distiller_config,
    student_config_from_s3prl,
    write_s3prl_checkpoint,
)
from s3prl_distill.checkpoint import save_student
from s3prl_distill.models import build_student
from s3prl_distill.upstream.hubconf import ENTRIES


def test_s3prl_distilhubert_expert_equals_ours(tmp_path):
    if hasattr(compat, "apply"):
        compat.apply()
    config = s3prl_distiller_config(**dict(
        TINY_S3PRL, extractor_conv_feature_layers="[(40,10,5)] + [(40,8,4)] + [(40,4,4)] + [(40,2,2)] * 2"))
    model = build_s3prl_distiller(config, seed=5)
    theirs = build_s3prl_expert(write_s3prl_checkpoint(model, config, str(tmp_path / "s3prl.ckpt")))

    cfg = dataclasses.replace(student_config_from_s3prl(config), layer0="projection",
                              keep_heads=True, hidden_states="layers+heads")
    student = build_student(cfg)
    student.load_state_dict(convert_s3prl_state_dict(model.state_dict(), config))
    save_student(tmp_path / "ours.ckpt", student)
    ours = ENTRIES["distilhubert_local"](ckpt=str(tmp_path / "ours.ckpt"))

    g = torch.Generator().manual_seed(0)
    wavs = [torch.randn(16000, generator=g), torch.randn(16000, generator=g)]
    with torch.no_grad():
        a = theirs(wavs)["hidden_states"]
        b = ours(wavs)["hidden_states"]
    assert len(a) == len(b) == 1 + config["encoder_layers"] + len(config["pred_layer_id"])
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, i
        assert torch.allclose(x, y, atol=1e-4), (i, (x - y).abs().max())
    assert theirs.get_downsample_rates("hidden_states") == ours.get_downsample_rates("hidden_states")
