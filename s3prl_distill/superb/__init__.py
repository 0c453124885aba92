"""What S3PRL 0.4.18's PyPI wheel lacks to run the ten SUPERB tasks, wired into S3PRL's modules.

* ``s3prl.downstream.ctc.corpus.libriphone`` / ``.snips`` (PR and SF readers; S3PRL's git checkout
  has them, its wheel does not): :mod:`s3prl_distill.superb.ctc_corpus`, with S3PRL's signatures
  and config schema, installed ONLY for the modules the installed S3PRL lacks
  (:func:`missing_ctc_readers`); where S3PRL ships its own, S3PRL's are used.
* ``catalyst.data.sampler.DistributedSamplerWrapper`` (imported by the KS task) when catalyst is
  absent or cannot be imported on this Python (catalyst <= 22.2 fails on Python >= 3.10).
* On machines without CUDA: the ASV expert (``sv_voxceleb1``) moves its attention mask with an
  unconditional ``.cuda()``; while its ``forward`` runs, ``Tensor.cuda`` then returns the tensor
  where it is (on a CUDA machine nothing changes). See :func:`_install_asv_cpu_fix`.
* The SID/ASV corpus caches S3PRL keeps inside its installed package: redirected to a folder per
  corpus of ours (:mod:`s3prl_distill.superb.s3prl_caches`).
* The vocabularies of the ``ctc`` task (``phoneme.txt``, ``character.txt``, identical to S3PRL's
  ``downstream/ctc/vocab/``): :func:`data_file`.

:func:`install` is idempotent and cheap; :func:`s3prl_distill.registry.register` calls it. The
task configs and run scripts are in ``downstream_recipes/``; data preparation is
:mod:`s3prl_distill.superb.prepare` (``s3prl-distill prepare``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import types
from typing import List

from s3prl_distill.superb import ctc_corpus, s3prl_caches
from s3prl_distill.superb.ctc_corpus import libriphone, snips
from s3prl_distill.superb.samplers import DistributedSamplerWrapper

logger = logging.getLogger(__name__)

__all__ = ["install", "data_file", "installed", "missing_ctc_readers", "CTC_CORPUS"]

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_READERS = {"libriphone": libriphone, "snips": snips}  # S3PRL module name -> our reader module
#: S3PRL's package of ctc corpus readers (a folder without ``__init__.py`` in S3PRL's repository)
CTC_CORPUS = "s3prl.downstream.ctc.corpus"
_INSTALLED = False


def data_file(name: str) -> str:
    """Absolute path of a file shipped in ``s3prl_distill/superb/data`` (e.g. ``phoneme.txt``)."""
    path = os.path.join(_DATA_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such data file in s3prl_distill.superb")
    return path


def _s3prl_ctc_folders() -> List[str]:
    """``<s3prl>/downstream/ctc`` of the installed S3PRL (found without importing S3PRL)."""
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.join(p, "downstream", "ctc") for p in spec.submodule_search_locations]


def missing_ctc_readers() -> List[str]:
    """The reader modules (``libriphone``, ``snips``) the installed S3PRL does not ship."""
    folders = _s3prl_ctc_folders()
    return [name for name in _READERS
            if not any(os.path.isfile(os.path.join(f, "corpus", f"{name}.py")) for f in folders)]


def _install_ctc_corpus() -> List[str]:
    """Make ``s3prl.downstream.ctc.corpus.<name>`` resolve to our reader for each reader S3PRL
    lacks; S3PRL's own readers (git checkout) are left alone. Returns the names installed."""
    missing = missing_ctc_readers()
    if not missing:
        logger.debug("%s: S3PRL's own PR/SF readers are installed; using them", CTC_CORPUS)
        return []
    package = ctc_corpus
    has_folder = any(os.path.isdir(os.path.join(f, "corpus")) for f in _s3prl_ctc_folders())
    if not has_folder:
        existing = sys.modules.get(CTC_CORPUS)
        if existing is not None and existing is not package:
            logger.debug("%s already provided by %s; leaving it", CTC_CORPUS, existing)
            return []
        sys.modules[CTC_CORPUS] = package
        parent = sys.modules.get("s3prl.downstream.ctc")
        if parent is not None:
            setattr(parent, "corpus", package)
    for name in missing:
        sys.modules[f"{CTC_CORPUS}.{name}"] = _READERS[name]
    logger.debug("%s: our readers for %s (missing from the installed S3PRL)", CTC_CORPUS, missing)
    return missing


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


_ASV_EXPERT = "s3prl.downstream.sv_voxceleb1.expert"


def _cpu_safe_forward(forward):
    """Wrap an expert's ``forward`` so that ``Tensor.cuda()`` inside it is a no-op without CUDA."""
    import functools

    import torch

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if torch.cuda.is_available():
            return forward(*args, **kwargs)
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self  # stays on CPU, where the model is
        try:
            return forward(*args, **kwargs)
        finally:
            torch.Tensor.cuda = original

    wrapped._s3prl_distill_cpu_safe = True
    return wrapped


def _patch_asv_expert(module: types.ModuleType) -> None:
    expert = getattr(module, "DownstreamExpert", None)
    if expert is not None and not getattr(expert.forward, "_s3prl_distill_cpu_safe", False):
        expert.forward = _cpu_safe_forward(expert.forward)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs a patch right after one named module is executed (found by the other finders)."""

    def __init__(self, name: str, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                original, patch = spec.loader, self.patch

                class _Loader(importlib.abc.Loader):
                    def create_module(self, spec_):
                        return original.create_module(spec_)

                    def exec_module(self, module):
                        original.exec_module(module)
                        patch(module)

                spec.loader = _Loader()
                return spec
        return None


def _after_import(name: str, patch) -> None:
    """Run ``patch(module)`` now if ``name`` is imported, else right after it is imported."""
    module = sys.modules.get(name)
    if module is not None:
        patch(module)
    elif not any(isinstance(f, _PostImportFinder) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder(name, patch))


def _install_asv_cpu_fix() -> None:
    _after_import(_ASV_EXPERT, _patch_asv_expert)


def _install_cache_redirects() -> None:
    _after_import(s3prl_caches.SID_MODULE, s3prl_caches.patch_sid_dataset)
    _after_import(s3prl_caches.ASV_MODULE, s3prl_caches.patch_asv_dataset)


def install() -> None:
    """Wire the missing SUPERB pieces into S3PRL's module tree (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _install_ctc_corpus()
    _install_catalyst_sampler()
    _install_asv_cpu_fix()
    _install_cache_redirects()
    _INSTALLED = True


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return _INSTALLED
