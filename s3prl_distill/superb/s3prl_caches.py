"""S3PRL's speaker tasks cache corpus indexes inside their installed package; ours go elsewhere.

S3PRL 0.4.18 writes, and then reuses for ANY corpus whatever the config says:

* SID (``voxceleb1``): the file list of each split in
  ``<s3prl>/downstream/voxceleb1/.cache/<split>.pkl`` (module global ``CACHE_PATH``);
* ASV (``sv_voxceleb1``): the trimmed training lengths in
  ``<s3prl>/downstream/sv_voxceleb1/.wav_lengths/<key>_length.pt`` (beside the module's file).

:func:`s3prl_distill.superb.install` points both at a folder per corpus under
``$XDG_CACHE_HOME/s3prl_distill/superb/`` (:func:`sid_cache_dir`, :func:`asv_cache_dir`), so a cache
is only ever reused for the corpus it was built from, and nothing is written into S3PRL's
installed package. ``prepare sid`` writes the SID file lists there up front (S3PRL then skips its
slow per-line search). The file formats are S3PRL's (a pickled list of paths; a torch file).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence, Union

from s3prl_distill.paths import cache_dir

__all__ = ["SID_MODULE", "ASV_MODULE", "cache_root", "sid_cache_dir", "asv_cache_dir",
           "patch_sid_dataset", "patch_asv_dataset"]

SID_MODULE = "s3prl.downstream.voxceleb1.dataset"
ASV_MODULE = "s3prl.downstream.sv_voxceleb1.dataset"
_MARK = "_s3prl_distill_cache_redirect"


def cache_root() -> Path:
    """``<our cache dir>/superb``: the per-corpus folders of S3PRL's task caches."""
    return cache_dir() / "superb"


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def sid_cache_dir(file_path: Union[str, os.PathLike], meta_data: Union[str, os.PathLike]) -> Path:
    """SID's cache folder for a VoxCeleb1 root and the split list S3PRL reads (its content)."""
    with open(meta_data, "r", encoding="utf-8") as handle:
        lines = [" ".join(line.split()) for line in handle if line.strip()]
    return cache_root() / "voxceleb1" / _digest([os.path.realpath(file_path)] + lines)


def asv_cache_dir(roots: Sequence[Union[str, os.PathLike]]) -> Path:
    """ASV's cache folder for the training roots S3PRL scans (``<voxceleb1>/dev/wav``)."""
    return cache_root() / "sv_voxceleb1" / _digest(os.path.realpath(r) for r in roots)


def patch_sid_dataset(module) -> None:
    """Make ``SpeakerClassifiDataset`` use :func:`sid_cache_dir` as its ``CACHE_PATH``; idempotent."""
    cls = module.SpeakerClassifiDataset
    original = cls.__init__
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def __init__(self, mode, file_path, meta_data, *args, **kwargs):
        folder = sid_cache_dir(file_path, meta_data)
        folder.mkdir(parents=True, exist_ok=True)
        module.CACHE_PATH = str(folder) + os.sep  # read by the original __init__
        original(self, mode, file_path, meta_data, *args, **kwargs)

    setattr(__init__, _MARK, True)
    cls.__init__ = __init__


def patch_asv_dataset(module) -> None:
    """Make ``SpeakerVerifi_train`` keep ``.wav_lengths/`` in :func:`asv_cache_dir`; idempotent.

    S3PRL builds that folder from the module's ``__file__``; while the constructor runs,
    ``__file__`` names a file in our cache folder (restored afterwards).
    """
    cls = module.SpeakerVerifi_train
    original = cls.__init__
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def __init__(self, vad_config, key_list, file_path, *args, **kwargs):
        folder = asv_cache_dir(file_path)
        folder.mkdir(parents=True, exist_ok=True)
        saved = module.__file__
        module.__file__ = str(folder / os.path.basename(saved))
        try:
            original(self, vad_config, key_list, file_path, *args, **kwargs)
        finally:
            module.__file__ = saved

    setattr(__init__, _MARK, True)
    cls.__init__ = __init__
