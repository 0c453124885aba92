"""Shared pytest fixtures (add yours here; keep them tiny and offline).

* ``make_wav(path, seconds=..., sr=..., channels=..., freq=..., seed=...)``: writes a real audio
  file (WAV or FLAC by extension) with a tone plus a little noise, returns the path.
* ``tiny_speech_commands(root)``: see :func:`make_speech_commands_layout`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import numpy as np
import pytest

import s3prl_distill  # noqa: F401  (torchaudio shim before anything imports torchaudio)


def synth_wave(seconds: float = 0.5, sr: int = 16000, channels: int = 1, freq: float = 220.0,
               seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """A tone with light noise, float32 [S] (channels == 1) or [S, C]; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    cols = []
    for c in range(channels):
        tone = amplitude * np.sin(2 * math.pi * freq * (c + 1) * t)
        cols.append(tone + 0.01 * rng.standard_normal(n))
    data = np.stack(cols, axis=1).astype(np.float32)
    return data[:, 0] if channels == 1 else data


def write_wave(path, seconds: float = 0.5, sr: int = 16000, channels: int = 1,
               freq: float = 220.0, seed: int = 0, subtype: Optional[str] = None) -> Path:
    """Write :func:`synth_wave` to ``path`` (format from the extension); returns the path."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), synth_wave(seconds, sr, channels, freq, seed), sr, subtype=subtype)
    return path


@pytest.fixture
def make_wav(tmp_path) -> Callable[..., Path]:
    """Factory fixture: ``make_wav("a.flac", seconds=1.0, sr=8000, channels=2)`` -> Path in tmp_path."""

    def _make(name: str = "audio.wav", **kwargs) -> Path:
        path = Path(name)
        if not path.is_absolute():
            path = tmp_path / path
        return write_wave(path, **kwargs)

    return _make


SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def speech_commands_split_of(speaker: str) -> str:
    """Which split Speech Commands' published rule puts ``speaker`` in: train / dev / test.

    The rule (also S3PRL's ``split_dataset``): SHA-1 of the speaker id, as a percentage of
    2**27 - 1; below 10 -> dev, below 20 -> test (discarded by S3PRL), else train.
    """
    import hashlib

    most = 2**27 - 1
    percent = (int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16) % (most + 1)) * (100.0 / most)
    return "dev" if percent < 10 else ("test" if percent < 20 else "train")


def _speakers(split: str, count: int):
    found, i = [], 0
    while len(found) < count:
        name = f"spk{i:04d}"
        if speech_commands_split_of(name) == split:
            found.append(name)
        i += 1
    return found


def make_speech_commands_layout(root, words: Iterable[str] = SPEECH_COMMANDS_WORDS,
                                per_word: int = 2, dev_per_word: int = 1, test_per_word: int = 1,
                                seconds: float = 0.5, sr: int = 16000) -> Dict[str, Path]:
    """Tiny Speech Commands v0.01 train + test folders in the layout S3PRL's KS task reads.

    ``<root>/train/<word>/<speaker>_nohash_0.wav`` with speakers chosen so that S3PRL's hash split
    puts ``per_word`` per word in train and ``dev_per_word`` in dev, a ``_background_noise_``
    folder (2 s, for ``_silence_``), and ``<root>/test/<word|_unknown_|_silence_>/*.wav``.
    Each word is a tone of its own pitch, so a classifier can learn it.
    Returns ``{"train": Path, "test": Path}``.
    """
    root = Path(root)
    train, test = root / "train", root / "test"
    train_spk, dev_spk = _speakers("train", per_word), _speakers("dev", dev_per_word)
    words = list(words)
    for w_i, word in enumerate(words):
        freq = 200.0 + 60 * w_i
        for i, spk in enumerate(train_spk + dev_spk):
            write_wave(train / word / f"{spk}_nohash_0.wav", seconds=seconds, sr=sr, freq=freq,
                       seed=w_i * 100 + i)
        for i in range(test_per_word):
            write_wave(test / word / f"t{i:02d}_nohash_0.wav", seconds=seconds, sr=sr, freq=freq,
                       seed=10_000 + w_i * 100 + i)
    write_wave(train / "_background_noise_" / "noise.wav", seconds=2.0, sr=sr, freq=50.0, seed=7)
    write_wave(test / "_unknown_" / "u00_nohash_0.wav", seconds=seconds, sr=sr, freq=900.0, seed=77)
    write_wave(test / "_silence_" / "s00_nohash_0.wav", seconds=seconds, sr=sr, freq=30.0, seed=78)
    return {"train": train, "test": test}


@pytest.fixture
def tiny_speech_commands(tmp_path) -> Dict[str, Path]:
    """Fixture form of :func:`make_speech_commands_layout` under ``tmp_path / "speech_commands"``."""
    return make_speech_commands_layout(tmp_path / "speech_commands")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory):
    """Length indexes, S3PRL's redirected SUPERB caches and other ``$XDG_CACHE_HOME`` files the
    tests cause go to a folder of this test session, never into the user's ``~/.cache``
    (subprocesses inherit it)."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
