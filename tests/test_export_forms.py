"""The export forms of the length-dependent steps (``models.cnn.exporting()``) equal the eager ones.

An export traces the student once; these steps then take a tensor-only form that is right for
every batch size and length (the ONNX tests run the traced graphs on lengths never traced).
"""

from __future__ import annotations

import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.models.cnn import exporting
from s3prl_distill.models.log_mel import _batch_log_mel_gathered, batch_log_mel
from s3prl_distill.models.time_reduction import TimeReduction


def _padded(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return wavs, torch.tensor(lengths)


def test_not_exporting_in_eager_code():
    assert not exporting()


def test_log_mel_gathered_form_equals_the_per_utterance_stft():
    wavs, lengths = _padded([16000, 9001, 3215, 201])
    loop, frames = batch_log_mel(wavs, lengths)
    gathered = _batch_log_mel_gathered(wavs, lengths, 80)
    assert gathered.shape == loop.shape
    assert frames.tolist() == [100, 56, 20, 1]
    assert (loop - gathered).abs().max() < 1e-4
    assert gathered[1, :, 56:].abs().max() == 0  # zero past each utterance's frames


def test_time_reduction_gives_ceil_frames_for_every_length_with_one_pad():
    torch.manual_seed(0)
    for k in (2, 3):
        tr = TimeReduction(4, k)
        for t in range(1, 8):
            x = torch.randn(1, t, 4)
            y, lengths = tr(x, torch.tensor([t]))
            assert y.shape[1] == -(-t // k) == int(lengths[0])
            # the same as padding only to the next multiple of k
            ref = tr.conv(torch.nn.functional.pad(x.transpose(1, 2), (0, (-t) % k))).transpose(1, 2)
            assert torch.equal(y, ref)
