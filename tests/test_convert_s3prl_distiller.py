"""S3PRL's distiller checkpoints in (the released DistilHuBERT's format), compared with S3PRL's
own installed ``s3prl.upstream.distiller`` expert on the same file.

The file is written as S3PRL's pretraining runner writes it (``Distiller``, ``Config``,
``Optimizer``, ``Step`` and a pickled ``argparse.Namespace`` as ``Args``), with random weights.
Converted with ``--keep-heads --hidden-states layers+heads``, our hidden states are S3PRL's list
``[projection] + layers + predictions``: equal for each utterance alone, and in a padded batch
every utterance equals S3PRL's output for it alone (S3PRL's own padded batch differs for the
shorter ones: its first group norm spans the padding).
"""

from __future__ import annotations

import argparse

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill.benchmark.candidates import TINY_S3PRL
from s3prl_distill.benchmark.s3prl_distiller import (
    build_s3prl_distiller,
    build_s3prl_expert,
    s3prl_distiller_config,
)
from s3prl_distill.checkpoint import load_student
from s3prl_distill.cli import main

TOL = 1e-5  # measured 5.1e-6


def s3prl_checkpoint(tmp_path):
    config = s3prl_distiller_config(**dict(
        TINY_S3PRL, extractor_conv_feature_layers="[(40,10,5)] + [(40,8,4)] + [(40,4,4)] + [(40,2,2)] * 2"))
    model = build_s3prl_distiller(config, seed=7)
    with torch.no_grad():  # S3PRL's fresh heads and norms are near-trivial; make every part count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    path = tmp_path / "states-200.ckpt"
    torch.save({"Distiller": model.state_dict(), "Optimizer": optimizer.state_dict(), "Step": 200,
                "Args": argparse.Namespace(upstream="distiller", expdir=str(tmp_path)),
                "Config": {"distiller": config, "teacher": {"model": "hubert_base", "n_layers": 12},
                           "task": {"sequence_length": 250000}}}, path)
    return path, config


def test_converted_equals_s3prls_expert(tmp_path, capsys):
    compat.apply()
    path, config = s3prl_checkpoint(tmp_path)
    out = tmp_path / "distilhubert.ckpt"
    assert main(["convert", str(path), "-o", str(out), "--keep-heads", "--hidden-states", "layers+heads"]) == 0
    text = capsys.readouterr().out
    assert "S3PRL distiller checkpoint" in text and "dropped Args" in text
    ours, meta = load_student(out)
    assert meta["training"]["step"] == 200 and meta["teacher"]["model"] == "hubert_base"
    theirs = build_s3prl_expert(str(path))
    g = torch.Generator().manual_seed(0)
    lengths = [16000, 13013, 9601]
    wavs = [torch.randn(n, generator=g) for n in lengths]
    n_states = 1 + config["encoder_layers"] + len(config["pred_layer_id"])
    worst = 0.0
    with torch.no_grad():
        batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        ours_batch = ours(batch, torch.tensor(lengths))
        theirs_batch = theirs(wavs)["hidden_states"]
        for i, w in enumerate(wavs):
            alone_theirs = theirs([w])["hidden_states"]
            alone_ours = ours(w[None]).hidden_states
            t = int(ours_batch.lengths[i])
            assert len(alone_theirs) == len(alone_ours) == len(ours_batch.hidden_states) == n_states
            for j, (a, b, c) in enumerate(zip(alone_theirs, alone_ours, ours_batch.hidden_states)):
                assert a.shape == b.shape and a.shape[1] == t, (i, j)
                worst = max(worst, (a - b).abs().max().item(), (a[0] - c[i, :t]).abs().max().item())
        for j, (a, c) in enumerate(zip(theirs_batch, ours_batch.hidden_states)):  # the longest
            worst = max(worst, (a[0] - c[0]).abs().max().item())
    assert worst <= TOL, worst


def test_default_layout_is_our_distilhubert(tmp_path):
    path, config = s3prl_checkpoint(tmp_path)
    out = tmp_path / "d.ckpt"
    assert main(["convert", str(path), "-o", str(out)]) == 0
    student, _ = load_student(out)
    assert student.config.layer0 == "projection" and student.config.family == "distilhubert"
    assert len(student.heads) == 0 and student.num_hidden_states == 1 + config["encoder_layers"]
    kept, _ = load_student(out, keep_heads=True)
    assert len(kept.heads) == len(config["pred_layer_id"])


def test_unknown_and_own_formats_fail_in_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}}, junk)
    assert main(["convert", str(junk), "-o", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(junk) in err
    assert "official FitHuBERT" in err and "S3PRL distiller" in err and "Hugging Face" in err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["convert", str(text), "-o", str(tmp_path / "y.ckpt")]) == 2
    assert "cannot be read safely" in capsys.readouterr().err
    path, _ = s3prl_checkpoint(tmp_path)
    ours = tmp_path / "ours.ckpt"
    assert main(["convert", str(path), "-o", str(ours)]) == 0
    assert main(["convert", str(ours), "-o", str(tmp_path / "z.ckpt")]) == 2
    assert "already an s3prl-distill student checkpoint" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "w.ckpt")]) == 2
    assert not (tmp_path / "x.ckpt").exists() and not (tmp_path / "w.ckpt").exists()


def test_pickled_code_never_runs(tmp_path, capsys):
    """A checkpoint carrying a malicious reduce is refused; nothing it names is executed."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"Distiller": {}, "Config": {"distiller": {}}, "payload": Evil()}, path)
    assert main(["convert", str(path), "-o", str(tmp_path / "e.ckpt")]) == 2
    assert "cannot be read safely" in capsys.readouterr().err
    assert not marker.exists()
