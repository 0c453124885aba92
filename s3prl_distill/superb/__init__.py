"""What S3PRL 0.4.18's PyPI wheel lacks to run the ten SUPERB tasks, wired into S3PRL's modules.

* ``s3prl.downstream.ctc.corpus`` (PR and SF readers): :mod:`s3prl_distill.superb.ctc_corpus`.
* ``catalyst.data.sampler.DistributedSamplerWrapper`` (imported by the KS task) when catalyst is
  absent or cannot be imported on this Python (catalyst <= 22.2 fails on Python >= 3.10).
* The vocabularies of the ``ctc`` task (``phoneme.txt``, ``character.txt``): :func:`data_file`.

:func:`install` is idempotent and cheap; :func:`s3prl_distill.registry.register` calls it. The
task configs, data preparation and run scripts are in ``downstream_recipes/``; data preparation
is :mod:`s3prl_distill.superb.prepare`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types

logger = logging.getLogger(__name__)

__all__ = ["install", "data_file", "installed"]

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_CORPUS_MODULES = ("libriphone", "snips")
_INSTALLED = False


def data_file(name: str) -> str:
    """Absolute path of a file shipped in ``s3prl_distill/superb/data`` (e.g. ``phoneme.txt``)."""
    path = os.path.join(_DATA_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such data file in s3prl_distill.superb")
    return path


def _install_ctc_corpus() -> None:
    """Make ``s3prl.downstream.ctc.corpus.<name>`` resolve to our readers."""
    target = "s3prl.downstream.ctc.corpus"
    package = importlib.import_module("s3prl_distill.superb.ctc_corpus")
    existing = sys.modules.get(target)
    if existing is not None and existing is not package:
        logger.debug("%s already provided by %s; leaving it", target, existing)
        return
    sys.modules[target] = package
    for name in _CORPUS_MODULES:
        sys.modules[f"{target}.{name}"] = importlib.import_module(
            f"s3prl_distill.superb.ctc_corpus.{name}"
        )
    parent = sys.modules.get("s3prl.downstream.ctc")
    if parent is not None:
        setattr(parent, "corpus", package)


def _catalyst_importable() -> bool:
    try:
        importlib.import_module("catalyst.data.sampler")
        return True
    except Exception:  # ImportError, or AttributeError of old catalyst on Python >= 3.10
        for name in [m for m in sys.modules if m == "catalyst" or m.startswith("catalyst.")]:
            del sys.modules[name]
        return False


def _install_catalyst_sampler() -> None:
    """Provide ``catalyst.data.sampler.DistributedSamplerWrapper`` when catalyst cannot load."""
    if _catalyst_importable():
        return
    from s3prl_distill.superb.samplers import DistributedSamplerWrapper

    modules = {}
    for name in ("catalyst", "catalyst.data", "catalyst.data.sampler"):
        module = types.ModuleType(name)
        module.__doc__ = "s3prl_distill.superb stand-in: only what S3PRL's KS task imports."
        module.__path__ = []  # a package, so the submodules import
        modules[name] = module
    modules["catalyst.data.sampler"].DistributedSamplerWrapper = DistributedSamplerWrapper
    modules["catalyst"].data = modules["catalyst.data"]
    modules["catalyst.data"].sampler = modules["catalyst.data.sampler"]
    sys.modules.update(modules)
    logger.debug("catalyst not importable: provided catalyst.data.sampler.DistributedSamplerWrapper")


def install() -> None:
    """Wire the missing SUPERB pieces into S3PRL's module tree (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _install_ctc_corpus()
    _install_catalyst_sampler()
    _INSTALLED = True


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return _INSTALLED
