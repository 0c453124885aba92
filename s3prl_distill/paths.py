"""Where the package finds the files that live beside it rather than inside it.

``upstream_configs/`` (one YAML per published model and ablation) sits at the top of the source
tree, as the design card asks. A wheel installs a copy under ``<prefix>/share/s3prl-distill/``
(``setup.cfg``'s ``data_files``), so commands that default to it work from any install.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List

__all__ = ["upstream_configs_dir", "upstream_configs_candidates", "cache_dir"]

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def upstream_configs_candidates() -> List[Path]:
    """Folders searched for ``upstream_configs/``, first match wins.

    1. ``./upstream_configs`` (a user's own copy in the working folder),
    2. the source checkout the package was imported from (editable installs),
    3. ``<sys.prefix>/share/s3prl-distill/upstream_configs`` (wheel installs).
    """
    return [
        Path.cwd() / "upstream_configs",
        _SOURCE_ROOT / "upstream_configs",
        Path(sys.prefix) / "share" / "s3prl-distill" / "upstream_configs",
    ]


def upstream_configs_dir() -> Path:
    """The ``upstream_configs/`` folder to use by default.

    Raises:
        FileNotFoundError: listing every place searched.
    """
    candidates = upstream_configs_candidates()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "upstream_configs/ not found; searched: " + ", ".join(str(c) for c in candidates)
        + " (pass the folder explicitly)"
    )


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/s3prl_distill`` (default ``~/.cache/s3prl_distill``): indexes this package
    builds once and reuses (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s3prl_distill"
