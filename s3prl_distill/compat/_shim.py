"""How compat's stand-ins are told apart from the libraries' own APIs (a marker attribute)."""

from __future__ import annotations

__all__ = ["SHIM_FLAG", "mark", "is_shim"]

#: attribute set on every stand-in that :mod:`s3prl_distill.compat` installs
SHIM_FLAG = "_s3prl_distill_shim"


def mark(obj):
    """Mark ``obj`` (function, class or module) as one of our stand-ins; returns it."""
    setattr(obj, SHIM_FLAG, True)
    return obj


def is_shim(obj) -> bool:
    """Whether ``obj`` is one of compat's stand-ins (not the library's own API)."""
    return bool(getattr(obj, SHIM_FLAG, False))
