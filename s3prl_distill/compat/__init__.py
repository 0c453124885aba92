"""Make S3PRL 0.4.18 import and run on current torch / torchaudio / numpy / huggingface_hub.

One module per thing patched; each patch is idempotent and a no-op where the real API exists:

==========================  ===========================================================
:mod:`.torchaudio_extension` ``import torchaudio`` without its compiled extension (needed at
                            ``import s3prl_distill``: :func:`ensure_torchaudio`)
:mod:`.torchaudio_io`        ``torchaudio.load/save/info/load_wav`` + backend switches
:mod:`.sox_effects`          ``torchaudio.sox_effects`` (the SoX effects S3PRL uses, in PyTorch)
:mod:`.hub_symbols`          ``huggingface_hub.HfFolder`` / ``Repository``
:mod:`.numpy_aliases`        ``numpy.int`` / ``numpy.complex``
:mod:`.weights_only`         S3PRL's checkpoint classes allowed in ``torch.load(weights_only=True)``
==========================  ===========================================================

:func:`apply` runs them all once (the import hook runs it when ``s3prl`` is imported). The
modules import nothing of each other except :mod:`._shim` (the stand-in marker), and read audio
only through :mod:`s3prl_distill.audio`.
"""

from __future__ import annotations

import logging
from typing import List

from s3prl_distill.compat import hub_symbols, numpy_aliases, sox_effects, torchaudio_io, weights_only
from s3prl_distill.compat._shim import is_shim
from s3prl_distill.compat.torchaudio_extension import ensure_torchaudio, torchaudio_extension_stubbed

logger = logging.getLogger(__name__)

__all__ = ["apply", "applied", "patch_torchaudio", "ensure_torchaudio",
           "torchaudio_extension_stubbed", "is_shim", "allow_s3prl_checkpoints"]

_APPLIED: List[str] = []
_APPLY_DONE = False

allow_s3prl_checkpoints = weights_only.allow_s3prl_checkpoints


def patch_torchaudio(torchaudio_module) -> List[str]:
    """The I/O, backend and sox-effects stand-ins on ``torchaudio_module`` where needed."""
    return torchaudio_io.patch(torchaudio_module) + sox_effects.patch(torchaudio_module)


def apply() -> List[str]:
    """Install every shim that is needed here; idempotent; a no-op where the real API exists.

    Returns:
        Names of the shims installed (by this call or an earlier one), e.g. ``["torchaudio.load",
        "torchaudio.sox_effects", "huggingface_hub.HfFolder", "torch.safe_globals"]``.
    """
    global _APPLY_DONE
    if _APPLY_DONE:
        return list(_APPLIED)
    ensure_torchaudio()
    import numpy
    import torchaudio

    _APPLIED.extend(patch_torchaudio(torchaudio))
    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover - s3prl depends on it
        huggingface_hub = None
    if huggingface_hub is not None:
        _APPLIED.extend(hub_symbols.patch(huggingface_hub))
    _APPLIED.extend(numpy_aliases.patch(numpy))
    _APPLIED.extend(weights_only.allow_s3prl_checkpoints())
    _APPLY_DONE = True
    if _APPLIED:
        logger.debug("s3prl_distill.compat applied: %s", ", ".join(_APPLIED))
    return list(_APPLIED)


def applied() -> List[str]:
    """Names of the shims :func:`apply` installed in this process (empty before it ran)."""
    return list(_APPLIED)
