"""Every speed-related change leaves outputs equal (within tolerance).

* S3PRL distiller -> our student weight conversion: identical transformer layers and head outputs.
* Optimisation variants (int8 dynamic quantisation, bf16 autocast): within their numeric error.
* Student fast paths (pointwise convs as matmuls, first conv as unfold + matmul, per-utterance CNN
  on padded batches): equal to the plain path.
"""

from __future__ import annotations


import pytest
import torch

import s3prl_distill  # noqa: F401
from teachers_testutil import noise_batch
from s3prl_distill.benchmark.candidates import TINY_S3PRL, student_candidate
from s3prl_distill.benchmark.s3prl_distiller import (
    build_s3prl_distiller,
    convert_s3prl_state_dict,
    parse_conv_layers,
    s3prl_distiller_config,
    student_from_s3prl,
)

TOL = 1e-4


_batch = noise_batch  # (lengths, seed=0) -> (wavs [B, S], lengths [B])


@pytest.fixture(scope="module")
def tiny_pair():
    # 40-dim CNN output != 32-dim encoder, so S3PRL builds its post_extract_proj
    config = s3prl_distiller_config(**dict(TINY_S3PRL, extractor_conv_feature_layers=
                                           "[(40,10,5)] + [(40,8,4)] + [(40,4,4)] + [(40,2,2)] * 2"))
    model = build_s3prl_distiller(config, seed=3)
    return model, config, student_from_s3prl(model, config)


def test_parse_conv_layers_without_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == (
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    with pytest.raises(ValueError, match="extractor_conv_feature_layers"):
        parse_conv_layers("__import__('os')")
    with pytest.raises(ValueError, match="extractor_conv_feature_layers"):  # a name, not a count
        parse_conv_layers("[(1,2,3)] * x")


def test_conversion_gives_identical_layers_and_heads(tiny_pair):
    model, config, student = tiny_pair
    wavs, lengths = _batch([8000, 8000])
    with torch.inference_mode():
        _, _, pred, _, hidden = model(wavs, torch.ones_like(wavs), get_hidden=True)
        out = student(wavs, lengths, with_heads=True)
    assert len(hidden) == len(out.layer_outputs) - 1 == config["encoder_layers"]
    for theirs, ours in zip(hidden, out.layer_outputs[1:]):
        assert torch.allclose(theirs, ours, atol=TOL), (theirs - ours).abs().max()
    for j, ours in enumerate(out.predictions):
        assert torch.allclose(pred[:, j], ours, atol=TOL)
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in model.parameters())


def test_padded_batch_equals_s3prl_per_utterance(tiny_pair):
    """S3PRL's group norm sees the padding; ours does not: ours on a padded batch equals S3PRL on
    each utterance alone."""
    model, config, student = tiny_pair
    lengths = [8000, 5000, 3200]
    wavs, lens = _batch(lengths, seed=1)
    with torch.inference_mode():
        out = student(wavs, lens, with_heads=False)
        for i, n in enumerate(lengths):
            _, _, _, _, hidden = model(wavs[i:i + 1, :n], torch.ones(1, n), get_hidden=True, no_pred=True)
            frames = int(out.lengths[i])
            assert hidden[-1].shape[1] == frames
            assert torch.allclose(hidden[-1][0], out.hidden_states[-1][i, :frames], atol=TOL)


def test_conversion_refuses_unknown_keys(tiny_pair):
    model, config, _ = tiny_pair
    state = dict(model.state_dict())
    state["encoder.something_new.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="something_new"):
        convert_s3prl_state_dict(state, config)


def test_int8_variant_close(tiny_pair):
    from s3prl_distill.benchmark.variants import make_variant

    _, _, student = tiny_pair
    base = student_candidate("distilhubert", student)
    quant = make_variant(base, "int8")
    wavs, lengths = _batch([8000, 6000], seed=2)
    with torch.inference_mode():
        ref, _ = base.hidden(wavs, lengths)
        got, _ = quant.hidden(wavs, lengths)
    for a, b in zip(ref[1:], got[1:]):
        # quantisation error relative to the activations' scale
        assert (a - b).abs().max() <= 0.1 * a.abs().max()
    assert quant.meta["macs_from"] == "distilhubert"


def test_bf16_variant_close(tiny_pair):
    from s3prl_distill.benchmark.variants import make_variant

    _, _, student = tiny_pair
    base = student_candidate("distilhubert", student)
    half = make_variant(base, "bf16")
    wavs, lengths = _batch([8000], seed=4)
    with torch.inference_mode():
        ref, _ = base.hidden(wavs, lengths)
        got, _ = half.hidden(wavs, lengths)
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.05 * a.abs().max() + 1e-3


def test_unknown_variant_is_named():
    from s3prl_distill.benchmark.variants import make_variant

    with pytest.raises(ValueError, match="fp4"):
        make_variant(student_candidate("x", torch.nn.Linear(1, 1)), "fp4")


# --------------------------------------------------------------------------- student fast paths


def _tiny_fit_cnn(bias: bool):
    from s3prl_distill.models.cnn import FeatureExtractor
    from s3prl_distill.models.config import CNNConfig, ConvLayerConfig

    spec = [(8, 10, 5), (16, 1, 1), (16, 3, 2), (16, 3, 2), (24, 1, 1), (24, 2, 2), (24, 2, 2), (24, 2, 2)]
    cfg = CNNConfig(layers=[ConvLayerConfig(*s) for s in spec], norm="group_norm_first", bias=bias)
    torch.manual_seed(0)
    return FeatureExtractor(cfg)


def _run(cnn, wavs, lengths, fast: bool, per_utt: bool):
    for block in cnn.conv_layers:
        block.fast_path = fast
    cnn.per_utterance = per_utt
    try:
        return cnn(wavs, lengths)
    finally:
        for block in cnn.conv_layers:
            block.fast_path = True
        cnn.per_utterance = True


@pytest.mark.parametrize("bias", [False, True])
def test_gemm_convs_and_per_utterance_cnn_equal_plain_path(bias):
    cnn = _tiny_fit_cnn(bias).eval()
    lengths = [6400, 3905, 2000]
    wavs, lens = _batch(lengths, seed=5)
    with torch.inference_mode():
        ref, ref_len = _run(cnn, wavs, lens, fast=False, per_utt=False)
        for fast, per_utt in ((True, False), (False, True), (True, True)):
            got, got_len = _run(cnn, wavs, lens, fast=fast, per_utt=per_utt)
            assert torch.equal(got_len, ref_len) and got.shape == ref.shape
            for i, n in enumerate(ref_len.tolist()):
                assert torch.allclose(got[i, :n], ref[i, :n], atol=TOL), (fast, per_utt)
            if per_utt:  # padded frames are exactly zero
                for i, n in enumerate(ref_len.tolist()):
                    assert torch.all(got[i, n:] == 0)


def test_fast_paths_give_the_same_gradients():
    cnn = _tiny_fit_cnn(True).train()
    wavs, lens = _batch([6400, 4100], seed=6)
    grads = []
    for fast in (False, True):
        cnn.zero_grad()
        out, out_len = _run(cnn, wavs, lens, fast=fast, per_utt=fast)
        mask = (torch.arange(out.shape[1])[None, :] < out_len[:, None]).float()[..., None]
        (out * mask).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in cnn.named_parameters()})
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-5), key


def test_student_padded_batch_equals_single_utterances_with_fast_paths():
    """The whole student (FitHuBERT-shaped, time reduction) with every fast path on."""
    from s3prl_distill.models import build_student
    from s3prl_distill.models.config import CNNConfig, ConvLayerConfig, EncoderConfig, HeadConfig, StudentConfig

    spec = [(8, 10, 5), (16, 1, 1), (16, 8, 4), (24, 1, 1), (24, 4, 4), (24, 2, 2), (24, 2, 2)]
    cfg = StudentConfig(
        family="fithubert", cnn=CNNConfig(layers=[ConvLayerConfig(*s) for s in spec]),
        encoder=EncoderConfig(dim=32, ffn_dim=32, num_heads=2, num_layers=2, pos_conv_kernel=8,
                              pos_conv_groups=4),
        time_reduction=2, heads=[HeadConfig(student_layer=2, teacher_layer=2, type="deconv_linear")],
        teacher_dim=16, teacher_layers=2,
    )
    torch.manual_seed(1)
    student = build_student(cfg).eval()
    lengths = [9600, 5000]
    wavs, lens = _batch(lengths, seed=7)
    with torch.inference_mode():
        batch = student(wavs, lens, with_heads=False)
        for i, n in enumerate(lengths):
            alone = student(wavs[i:i + 1, :n], lens[i:i + 1], with_heads=False)
            frames = int(alone.lengths[0])
            assert int(batch.lengths[i]) == frames
            for a, b in zip(alone.hidden_states, batch.hidden_states):
                assert torch.allclose(a[0, :frames], b[i, :frames], atol=TOL)
