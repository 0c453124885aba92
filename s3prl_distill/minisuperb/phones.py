"""eSpeak NG phoneme names -> ARPAbet with stress digits (the tokens of SUPERB PR's phoneme.txt).

SUPERB's phoneme recognition reads a LibriSpeech-style lexicon (``WORD  PH PH ...``) whose vowels
carry stress digits (``AH0``, ``EY1``, ``AO2``) and whose consonants do not. :func:`to_arpabet`
turns the phonemes eSpeak NG reports for one word (stress marks ``'``/``,`` as prefixes) into
those tokens; :func:`build_lexicon` does it for a vocabulary.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List

__all__ = ["PhoneError", "VOWELS", "CONSONANTS", "PHONE_VOCAB", "to_arpabet", "build_lexicon"]

VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S",
              "SH", "T", "TH", "V", "W", "Y", "Z", "ZH")
#: SUPERB PR's token list (vocab/phoneme.txt order): SIL, SPN, stressed vowels, consonants
PHONE_VOCAB = tuple(["SIL", "SPN"] + sorted(
    [f"{v}{s}" for v in VOWELS for s in "012"] + list(CONSONANTS)))

# eSpeak NG (en) phoneme name -> ARPAbet base phones (vowel first where a vowel leads)
_MAP: Dict[str, tuple] = {
    "0": ("AA",), "3:": ("ER",), "3": ("ER",), "A@": ("AA", "R"), "A:": ("AA",), "A": ("AA",),
    "E": ("EH",), "e": ("EH",), "I": ("IH",), "I#": ("IH",), "I2": ("IH",), "O2": ("AO",),
    "O:": ("AO",), "O": ("AO",), "O@": ("AO", "R"), "OI": ("OY",), "U": ("UH",), "U@": ("UH", "R"),
    "V": ("AH",), "a": ("AE",), "a#": ("AH",), "aa": ("AE",), "aI": ("AY",), "aI3": ("AY", "ER"),
    "aI@": ("AY", "ER"), "aU": ("AW",), "aU@": ("AW", "ER"), "e@": ("EH", "R"), "eI": ("EY",),
    "i:": ("IY",), "i": ("IY",), "i@": ("IH", "R"), "i@3": ("IH", "R"), "o@": ("AO", "R"),
    "oU": ("OW",), "@U": ("OW",), "o": ("OW",), "u:": ("UW",), "u": ("UW",), "@": ("AH",),
    "@2": ("AH",), "@5": ("AH",), "@L": ("AH", "L"), "@r": ("ER",), "3r": ("ER",),
    "b": ("B",), "d": ("D",), "D": ("DH",), "dZ": ("JH",), "f": ("F",), "g": ("G",), "h": ("HH",),
    "j": ("Y",), "k": ("K",), "l": ("L",), "m": ("M",), "n": ("N",), "N": ("NG",), "p": ("P",),
    "r": ("R",), "s": ("S",), "S": ("SH",), "t": ("T",), "T": ("TH",), "tS": ("CH",), "v": ("V",),
    "w": ("W",), "z": ("Z",), "Z": ("ZH",), "x": ("K",), "?": ("T",),
}
_IGNORED = {";", "_", "_:", "_!", "||", "|", "-"}


class PhoneError(ValueError):
    """An eSpeak phoneme has no ARPAbet counterpart."""


def _lookup(name: str) -> tuple:
    if name in _MAP:
        return _MAP[name]
    trimmed = re.sub(r"[#0-9/\-]+$", "", name)  # eSpeak variants: t#, t2, l/, n-, r- ...
    if trimmed in _MAP:
        return _MAP[trimmed]
    raise PhoneError(f"eSpeak phoneme {name!r} has no ARPAbet mapping")


def to_arpabet(espeak_phones: Iterable[str], word: str = "?") -> List[str]:
    """eSpeak phoneme names of one word (e.g. ``["k", "'I", "tS", "@", "n"]``) -> ARPAbet tokens
    with stress digits on vowels (``["K", "IH1", "CH", "AH0", "N"]``)."""
    out: List[str] = []
    for raw in espeak_phones:
        stress = "0"
        name = raw
        while name and name[0] in "',%=":
            stress = {"'": "1", ",": "2", "%": "0", "=": "1"}[name[0]]
            name = name[1:]
        if not name or name in _IGNORED:
            continue
        try:
            phones = _lookup(name)
        except PhoneError as err:
            raise PhoneError(f"word {word!r}: {err}") from None
        for i, phone in enumerate(phones):
            if phone in VOWELS:
                out.append(phone + (stress if i == 0 else "0"))
            else:
                out.append(phone)
    if not out:
        raise PhoneError(f"word {word!r}: eSpeak gave no phonemes ({list(espeak_phones)})")
    return out


def build_lexicon(words: Iterable[str], engine, language: str = "en-us") -> Dict[str, List[str]]:
    """Upper-case word -> ARPAbet tokens for every word, transcribed by eSpeak (``engine``)."""
    return {w.upper(): to_arpabet(engine.phonemes(w, language), w) for w in sorted(set(words))}
