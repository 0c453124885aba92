"""``import torchaudio`` where its compiled extension cannot be loaded (the one shim needed at import).

The PyPI torchaudio >= 2.9 links CUDA libraries that a CPU-only torch lacks, so importing it
raises ``OSError``. :func:`ensure_torchaudio` then stubs ``torchaudio._extension`` (reporting the
extension as unavailable) and imports torchaudio again: its pure-Python parts (``models``,
``compliance.kaldi``, ``functional.resample``, transforms) keep working; only ops that need the
extension raise.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types

logger = logging.getLogger(__name__)

__all__ = ["ensure_torchaudio", "torchaudio_extension_stubbed"]

_STUBBED = False


def _extension_stub() -> types.ModuleType:
    """A stand-in for ``torchaudio._extension`` that reports the extension as unavailable."""
    stub = types.ModuleType("torchaudio._extension")

    def _fail(*_args, **_kwargs):
        raise RuntimeError(
            "this torchaudio operation needs torchaudio's compiled extension, which cannot be "
            "loaded beside this torch build (s3prl_distill.compat stubbed it)"
        )

    def fail_if_no_align(func):
        def wrapped(*args, **kwargs):
            _fail()

        return wrapped

    stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
    stub._IS_ALIGN_AVAILABLE = False
    stub.fail_if_no_align = fail_if_no_align
    stub._check_cuda_version = lambda: None
    stub._load_lib = lambda lib: False
    stub._init_dll_path = lambda: None
    stub.__all__ = ["_check_cuda_version", "_IS_TORCHAUDIO_EXT_AVAILABLE"]
    return stub


def ensure_torchaudio() -> bool:
    """Import torchaudio, stubbing its compiled extension if it cannot be loaded; idempotent.

    Returns:
        ``True`` if the real extension loaded (nothing was changed), ``False`` if it was stubbed.
    """
    global _STUBBED
    if "torchaudio" in sys.modules and hasattr(sys.modules["torchaudio"], "models"):
        return not _STUBBED
    try:
        importlib.import_module("torchaudio")
        return True
    except OSError as err:
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio._extension"] = _extension_stub()
        importlib.import_module("torchaudio")
        _STUBBED = True
        logger.debug("torchaudio's compiled extension could not be loaded (%s); stubbed it", err)
        return False


def torchaudio_extension_stubbed() -> bool:
    """Whether :func:`ensure_torchaudio` had to stub torchaudio's compiled extension."""
    return _STUBBED
