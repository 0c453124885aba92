"""eSpeak NG driven through ctypes, from the ``espeakng-loader`` wheel (library + data, no apt).

One process-wide engine (eSpeak NG keeps global state): :func:`engine` returns it; the same
sequence of calls in a fresh process gives the same samples. It speaks text
with a :class:`Voice` (language/accent, variant, pitch, pitch range, speaking rate) into a float32
waveform at the engine's native rate (22,050 Hz), and transcribes words to eSpeak phoneme names.

Example:
    >>> eng = engine()
    >>> wav = eng.synthesize("turn on the lights", Voice("en-us", "m3", 50, 50, 170))
    >>> wav.dtype, eng.sample_rate
    (dtype('float32'), 22050)
    >>> eng.phonemes("kitchen")
    ["k", "'I", "tS", "@", "n"]
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["EspeakError", "Voice", "Espeak", "engine"]

# espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_PARAMETER
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
# espeak_Synth flags / TextToPhonemes modes
_CHARS_UTF8 = 1
_PHONEME_SEPARATOR_SPACE = ord(" ") << 8

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded, or refused a voice or a text."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Attributes:
        language: eSpeak language/accent name, e.g. ``en-us``, ``en-gb-scotland``.
        variant: voice variant file name (``m3``, ``f2``, ``klatt``...), ``""`` for none.
        pitch: base pitch 0..100 (eSpeak default 50).
        pitch_range: pitch range 0..100 (default 50; 0 = monotone).
        rate: speaking rate in words per minute (80..450, default 175).
    """

    language: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def name(self) -> str:
        """eSpeak voice name: ``language+variant``."""
        return f"{self.language}+{self.variant}" if self.variant else self.language


class Espeak:
    """ctypes binding of the few eSpeak NG calls the generator needs (not thread-safe; locked)."""

    def __init__(self, library_path: Optional[str] = None, data_path: Optional[str] = None):
        if library_path is None or data_path is None:
            try:
                import espeakng_loader
            except ImportError as err:
                raise EspeakError(
                    "the mini-SUPERB generator needs eSpeak NG: pip install espeakng-loader "
                    "(or: pip install 's3prl-distill[demo]')"
                ) from err
            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as err:
            raise EspeakError(f"{library_path}: cannot load the eSpeak NG library: {err}") from err
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int
        ]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data folder {data_path}): returned {rate}")
        self._lib = lib
        self.sample_rate: int = int(rate)
        self._chunks: List[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self._voice: Optional[str] = None
        logger.debug("eSpeak NG loaded from %s (%d Hz)", library_path, rate)

    def _collect(self, wav, num_samples: int, _events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def _set_voice(self, name: str) -> None:
        if name != self._voice:
            if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise EspeakError(f"eSpeak NG has no voice {name!r} (expected language+variant)")
            self._voice = name

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """Speak ``text`` with ``voice``; ``seed`` seeds eSpeak's own random numbers.

        eSpeak NG also keeps hidden state between utterances (the output for the same arguments
        drifts by a few samples within one process), so a reproducible sequence of utterances
        needs a fresh process (as :func:`~s3prl_distill.minisuperb.generate.generate_corpus` does).

        Returns:
            np.ndarray [S] float32 in [-1, 1] at :attr:`sample_rate`.
        """
        if not text.strip():
            raise EspeakError("refusing to synthesize an empty text")
        with self._lock:
            self._set_voice(voice.name)
            for param, value in ((_RATE, voice.rate), (_PITCH, voice.pitch),
                                 (_RANGE, voice.pitch_range), (_VOLUME, 100)):
                self._lib.espeak_SetParameter(param, int(value), 0)
            self._chunks = []
            self._lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
            data = text.encode("utf-8")
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if err != 0 or not chunks:
            raise EspeakError(f"eSpeak NG failed on {text!r} with voice {voice.name} (error {err})")
        return np.concatenate(chunks).astype(np.float32) / 32768.0

    def phonemes(self, word: str, language: str = "en-us") -> List[str]:
        """eSpeak phoneme names of ``word`` spoken alone (stress marks kept as prefixes)."""
        with self._lock:
            self._set_voice(language)
            ptr = ctypes.c_char_p(word.encode("utf-8"))
            parts: List[str] = []
            while ptr.value:
                out = self._lib.espeak_TextToPhonemes(
                    ctypes.byref(ptr), _CHARS_UTF8, _PHONEME_SEPARATOR_SPACE
                )
                if out:
                    parts.extend(out.decode("utf-8").split())
        return parts


_ENGINE: Optional[Espeak] = None


def engine() -> Espeak:
    """The process-wide eSpeak NG engine (loaded on first use)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return _ENGINE
