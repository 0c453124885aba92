"""``s3prl-distill profile``: parameters and MACs as the SUPERB leaderboard counts them."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import s3prl_distill  # noqa: F401
from s3prl_distill.commands.profile import (
    BUCKETS,
    SUPERB_PROFILE_LENGTHS,
    profile_upstream,
)
from superb_corpora import make_student_checkpoint


class FrameLinear(nn.Module):
    """Toy upstream: frames of 160 samples -> Linear(160, 4); MACs = frames * 160 * 4."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(160, 4)

    def forward(self, wavs):
        frames = wavs[0][: len(wavs[0]) // 160 * 160].view(1, -1, 160)
        return {"hidden_states": [self.proj(frames)]}


def test_superb_lengths_are_the_32_sorted_profiling_inputs():
    assert len(SUPERB_PROFILE_LENGTHS) == 32
    assert list(SUPERB_PROFILE_LENGTHS) == sorted(SUPERB_PROFILE_LENGTHS)
    assert SUPERB_PROFILE_LENGTHS[0] == 20560 and SUPERB_PROFILE_LENGTHS[-1] == 326000


def test_macs_and_params_hand_computed():
    result = profile_upstream(FrameLinear(), "toy")
    assert result.params == 160 * 4 + 4
    expected = [n // 160 * 160 * 4 for n in SUPERB_PROFILE_LENGTHS]
    assert result.macs == sum(expected)
    assert list(result.buckets) == list(BUCKETS)
    assert result.buckets["short"] == sum(expected[:8])
    assert result.buckets["longer"] == sum(expected[24:])
    assert result.seconds == pytest.approx(sum(SUPERB_PROFILE_LENGTHS) / 16000)
    assert result.macs_per_second == pytest.approx(result.macs / result.seconds)


def test_custom_lengths_have_no_buckets_and_bad_lengths_fail():
    result = profile_upstream(FrameLinear(), "toy", lengths=[1600, 3200])
    assert result.macs == (10 + 20) * 160 * 4 and result.buckets == {}
    with pytest.raises(ValueError, match="positive sample counts"):
        profile_upstream(FrameLinear(), "toy", lengths=[0])


def test_student_upstream_heads_dropped_and_macs_grow_with_length(tmp_path):
    from s3prl_distill.upstream.hubconf import distill_student_local

    ckpt = make_student_checkpoint(tmp_path / "s.ckpt")
    model = distill_student_local(str(ckpt))
    assert not any("heads" in name for name, _ in model.named_parameters())
    short = profile_upstream(model, "s", lengths=[16000])
    long = profile_upstream(model, "s", lengths=[32000])
    assert short.params == sum(p.numel() for p in model.parameters())
    assert 2.0 < long.macs / short.macs < 4.0  # linear (conv, FFN) to quadratic (attention)


@pytest.mark.slow
def test_cli_profiles_a_plugin_upstream(tmp_path, capsys):
    from s3prl_distill.cli import main as cli_main

    ckpt = make_student_checkpoint(tmp_path / "s.ckpt")
    code = cli_main(["profile", "-u", "distill_student_local", "-k", str(ckpt), "--lengths",
                     "16000", "32000", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["upstream"] == "distill_student_local" and data["lengths"] == [16000, 32000]
    assert data["params"] > 0 and data["macs"] > 0
    assert cli_main(["profile", "-u", "no_such_upstream"]) == 1


# ---------------------------------------------------------------- the leaderboard's published rows
class _FairseqHubertUpstream(nn.Module):
    """S3PRL's own HuBERT Base model class behind the upstream call shape (a list of wavs), as the
    leaderboard profiled it: one utterance at a time, no padding to a multiple of frames (the
    2021 fairseq HuBERT has none; S3PRL 0.4.18's config default pads to 2)."""

    def __init__(self):
        super().__init__()
        from s3prl.upstream.hubert.hubert_model import (HubertConfig, HubertModel,
                                                         HubertPretrainingConfig)

        cfg = HubertConfig(label_rate=50.0, final_dim=256, required_seq_len_multiple=1)
        self.model = HubertModel(cfg, HubertPretrainingConfig(label_rate=50.0), [list(range(504))])

    def forward(self, wavs):
        features, _ = self.model.extract_features(torch.stack(wavs), padding_mask=None, mask=False)
        return {"hidden_states": [features]}


@pytest.mark.slow
def test_hubert_base_counts_exactly_the_published_leaderboard_row():
    """HuBERT Base (random weights, shapes only: FakeTensorMode) counts 94,697,600 parameters and
    1,669,156,022,848 MACs over the 32 profiling lengths, and each bucket of 8 as published."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from s3prl_distill.macs import SUPERB_REFERENCE

    ref = SUPERB_REFERENCE["HuBERT Base"]
    with FakeTensorMode():
        model = _FairseqHubertUpstream().eval()
        result = profile_upstream(model, "hubert_base")
        products = profile_upstream(model, "hubert_base", lengths=[20560], convention="products")
    assert result.params == ref["params"]
    assert result.macs == ref["macs"]
    assert tuple(result.buckets.values()) == ref["buckets"]
    # what the superb convention adds on top of the products: 1 per FFN activation element
    # (12 layers x 3072 x T) and 4 per attention probability (12 layers x 12 heads x T^2), T = 64
    t = 64
    assert result.lengths[0] == 20560
    assert result.per_input[0] - products.macs == 12 * 3072 * t + 4 * 12 * 12 * t * t


@pytest.mark.slow
def test_fbank_counts_exactly_the_published_leaderboard_row():
    """S3PRL's FBANK upstream: the mel product and the two delta convolutions, 479,126,160 MACs."""
    from s3prl_distill.commands.profile import load_upstream
    from s3prl_distill.macs import SUPERB_REFERENCE

    result = profile_upstream(load_upstream("fbank"), "fbank")
    assert result.params == SUPERB_REFERENCE["FBANK"]["params"]
    assert result.macs == SUPERB_REFERENCE["FBANK"]["macs"]
    assert tuple(result.buckets.values()) == SUPERB_REFERENCE["FBANK"]["buckets"]


def test_superb_convention_on_a_student_counts_ffn_activations_and_attention_probs(tmp_path):
    """On our student: superb - products = FFN activation elements + 4 x attention probabilities,
    and the profile runs the plain path (the FFT positional conv is not what is charged)."""
    from s3prl_distill.upstream.hubconf import distill_student_local

    ckpt = make_student_checkpoint(tmp_path / "s.ckpt")
    model = distill_student_local(str(ckpt))
    student = model.model
    cfg = student.config.encoder
    n = 16000
    t = int(student.output_lengths(torch.tensor([n]))[0])
    superb = profile_upstream(model, "s", lengths=[n]).macs
    products = profile_upstream(model, "s", lengths=[n], convention="products").macs
    expected = cfg.num_layers * (cfg.ffn_dim * t + 4 * cfg.num_heads * t * t)
    assert superb - products == expected
    assert not any("fast_path" in vars(m) or "per_utterance" in vars(m) for m in model.modules())
