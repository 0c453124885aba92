"""Synthetic speakers: eSpeak NG accents x voice variants x pitch, pitch range and tempo.

:func:`speaker_pool` draws distinct speakers from a seed; the generator splits the pool into
voices seen in training and voices held out for dev/test.
"""

from __future__ import annotations

import random
from typing import List

from s3prl_distill.minisuperb.espeak import Voice

__all__ = ["ACCENTS", "VARIANTS", "speaker_pool"]

#: English accents shipped with eSpeak NG
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc")
#: human-sounding voice variants (robotic, whispered and novelty variants left out)
VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 f1 f2 f3 f4 f5 Alex Alicia Andrea Andy Annie Denis Diogo Gene Hugo "
    "Jacky Lee Marco Mario Michael Mike Nguyen Reed Storm adam anika announcer antonio aunty "
    "belinda benjamin boris caleb david ed edward grandma grandpa gustave ian iven iven2 john "
    "klatt klatt2 klatt3 klatt4 linda marcelo max michel miguel norbert pablo paul pedro quincy "
    "rob robert sandro shelby steph travis victor zac"
).split()


def speaker_pool(rng: random.Random, count: int) -> List[Voice]:
    """``count`` speakers with distinct (accent, variant) pairs and random pitch/range/tempo.

    Raises:
        ValueError: if more speakers are asked than accent x variant pairs exist.
    """
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    if count > len(pairs):
        raise ValueError(f"asked for {count} speakers; at most {len(pairs)} distinct voices exist")
    rng.shuffle(pairs)
    voices = []
    for accent, variant in pairs[:count]:
        voices.append(Voice(accent, variant, pitch=rng.randint(20, 80),
                            pitch_range=rng.randint(25, 85), rate=rng.randint(135, 215)))
    return voices
