"""``numpy.int`` / ``numpy.complex``: removed in numpy 1.24/2.0, still used by S3PRL 0.4.18.

(``np.int`` in its wav2vec2/WavLM masking code, ``np.complex`` in ``utility/audio.py``.) Only
these aliases, only when missing.
"""

from __future__ import annotations

from typing import List

__all__ = ["ALIASES", "patch"]

ALIASES = {"int": int, "complex": complex}


def patch(numpy_module) -> List[str]:
    """Add the missing :data:`ALIASES` to ``numpy_module``; idempotent."""
    applied = []
    for name, obj in ALIASES.items():
        try:
            getattr(numpy_module, name)
        except AttributeError:
            setattr(numpy_module, name, obj)
            applied.append(f"numpy.{name}")
    return applied
