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
