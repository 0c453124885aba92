"""Speech Commands v0.01 for KS (``-d speech_commands``): checks only."""

from __future__ import annotations

from typing import Dict

from s3prl_distill.superb.prepare.common import PrepareError, need_dir

__all__ = ["check_ks"]


def check_ks(train_root, test_root) -> Dict[str, int]:
    """KS: the Speech Commands v0.01 train folder and the separate test set.

    The train root holds ``<word>/*.wav`` folders and ``_background_noise_/*.wav`` (the source of
    the ``_silence_`` class); the test root holds ``<word|_unknown_|_silence_>/*.wav``. S3PRL splits
    train/dev by the hash of the speaker id, as the dataset's README prescribes.
    """
    train_root = need_dir(train_root, "Speech Commands train")
    test_root = need_dir(test_root, "Speech Commands test set")
    noise = list((train_root / "_background_noise_").glob("*.wav"))
    if not noise:
        raise PrepareError(f"{train_root / '_background_noise_'}: no *.wav (needed for _silence_)")
    words = [d for d in train_root.iterdir() if d.is_dir() and d.name != "_background_noise_"]
    n_train = sum(len(list(d.glob("*.wav"))) for d in words)
    n_test = sum(len(list(d.glob("*.wav"))) for d in test_root.iterdir() if d.is_dir())
    if n_train == 0 or n_test == 0:
        raise PrepareError(f"{train_root} / {test_root}: expected <word>/*.wav files in both")
    return {"train_files": n_train, "test_files": n_test, "noise_files": len(noise)}
