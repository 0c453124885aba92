"""The words and sentences the mini-SUPERB corpus speaks (all generated from a seed).

* Keyword spotting: Speech Commands v0.01's ten command words and ten of its auxiliary words
  (spoken as ``_unknown_``), see :data:`KEYWORDS`, :data:`UNKNOWN_WORDS`.
* Intent classification: Fluent-Speech-Commands-like intents (action, object, location) with
  several phrasings each, see :data:`INTENTS`.
* Phoneme recognition / speaker identification: sentences from a small grammar over a vocabulary
  of a few hundred common English words, see :func:`sentences`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Tuple

__all__ = ["KEYWORDS", "UNKNOWN_WORDS", "Intent", "INTENTS", "sentences", "vocabulary"]

KEYWORDS: Tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS: Tuple[str, ...] = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
)


@dataclass(frozen=True)
class Intent:
    """One intent: its slot values and the phrasings that express it."""

    action: str
    object: str
    location: str
    phrasings: Tuple[str, ...]


def _intents() -> Tuple[Intent, ...]:
    items: List[Intent] = []
    for obj, names in (("lights", ("the lights", "the light")), ("lamp", ("the lamp",)),
                       ("music", ("the music",))):
        for action, verbs in (("activate", ("turn on", "switch on")),
                              ("deactivate", ("turn off", "switch off"))):
            for loc, where in (("none", ""), ("kitchen", " in the kitchen"),
                               ("bedroom", " in the bedroom"), ("washroom", " in the washroom")):
                if obj != "lights" and loc != "none":
                    continue
                phr = tuple(f"{v} {n}{where}" for v in verbs for n in names)
                items.append(Intent(action, obj, loc, phr))
    for action, verbs in (("increase", ("increase", "turn up")), ("decrease", ("decrease", "turn down"))):
        for obj, names in (("heat", ("the heat", "the temperature")), ("volume", ("the volume",))):
            locs = (("none", ""), ("kitchen", " in the kitchen"), ("bedroom", " in the bedroom")) \
                if obj == "heat" else (("none", ""),)
            for loc, where in locs:
                phr = tuple(f"{v} {n}{where}" for v in verbs for n in names)
                items.append(Intent(action, obj, loc, phr))
    for obj in ("newspaper", "juice", "socks", "shoes"):
        items.append(Intent("bring", obj, "none", (f"bring me the {obj}", f"get me the {obj}",
                                                   f"fetch the {obj}")))
    for obj in ("chinese", "korean", "english", "german"):
        items.append(Intent("change language", obj, "none",
                            (f"switch the language to {obj}", f"change language to {obj}",
                             f"set my language to {obj}")))
    return tuple(items)


INTENTS: Tuple[Intent, ...] = _intents()

_NOUNS = (
    "man woman child dog cat bird horse farmer teacher doctor captain sailor king queen student "
    "driver painter baker girl boy friend neighbour stranger soldier singer writer"
).split()
_THINGS = (
    "book letter house garden river mountain window table chair door road bridge train boat "
    "basket apple bottle candle coat hat ship wall field forest city village market kitchen "
    "picture song story ball box key lamp stone tree flower cup plate clock map"
).split()
_ADJ = (
    "old young small big quiet loud bright dark happy angry tired clever gentle strange "
    "heavy light warm cold green red blue yellow black white long short"
).split()
_VERBS_PAST = (
    "found opened closed carried painted watched followed cleaned bought sold broke fixed "
    "visited crossed helped called pushed pulled dropped lifted wanted needed liked shared"
).split()
_PLACES = (
    "near the river|in the morning|after dinner|before the storm|at the market|on the hill|"
    "by the window|in the garden|under the bridge|during the night|across the field|at noon|"
    "behind the house|in the village|along the road|after school"
).split("|")
_ADVERBS = "slowly quickly quietly carefully happily suddenly again together finally".split()
_SAYINGS = (
    "it was a long day|nobody knew the answer|the weather changed again|we should go home now|"
    "there is no time to lose|everyone was waiting outside|the music played all night|"
    "she smiled and said nothing|he never told the truth|they walked home together"
).split("|")


def _phrase(rng: random.Random, pool: List[str]) -> str:
    noun = rng.choice(pool)
    if rng.random() < 0.5:
        return f"the {rng.choice(_ADJ)} {noun}"
    return f"the {noun}"


def sentences(rng: random.Random, count: int) -> List[str]:
    """``count`` sentences (lower case, words separated by single spaces) drawn from ``rng``."""
    out: List[str] = []
    for _ in range(count):
        kind = rng.random()
        subject = _phrase(rng, _NOUNS)
        if kind < 0.55:
            text = f"{subject} {rng.choice(_VERBS_PAST)} {_phrase(rng, _THINGS)}"
            if rng.random() < 0.6:
                text += f" {rng.choice(_PLACES)}"
        elif kind < 0.8:
            text = (f"{subject} {rng.choice(_ADVERBS)} {rng.choice(_VERBS_PAST)} "
                    f"{_phrase(rng, _THINGS)} and {_phrase(rng, _THINGS)}")
        else:
            text = f"{rng.choice(_SAYINGS)} {rng.choice(_PLACES)}"
        out.append(text)
    return out


def vocabulary() -> List[str]:
    """Every word :func:`sentences` can produce, sorted."""
    words = set(_NOUNS) | set(_THINGS) | set(_ADJ) | set(_VERBS_PAST) | set(_ADVERBS)
    for group in (_PLACES, _SAYINGS):
        for phrase in group:
            words.update(phrase.split())
    words.update(("the", "and"))
    return sorted(words)
