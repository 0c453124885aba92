"""pretrain/rng.py: a run's random state as plain data, and seeding as S3PRL seeds."""

import random

import numpy as np
import torch

from s3prl_distill.pretrain.rng import capture_rng, restore_rng, seed_everything


def _draw():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_restore_continues_every_generator_exactly():
    seed_everything(3)
    _draw()
    state = capture_rng()
    expected = [_draw() for _ in range(3)]
    seed_everything(99)  # another state in between
    _draw()
    restore_rng(state)
    assert [_draw() for _ in range(3)] == expected


def test_the_state_is_plain_data_that_loads_without_pickled_objects(tmp_path):
    seed_everything(5)
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    expected = _draw()
    seed_everything(0)
    restore_rng(loaded)
    assert _draw() == expected


def test_seed_everything_repeats_and_makes_cudnn_deterministic_as_s3prl(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    seed_everything(1337)
    first = _draw()
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    seed_everything(1337)
    assert _draw() == first
    seed_everything(1338)
    assert _draw() != first
