"""VoxCeleb1 for SID (``-d voxceleb1``) and ASV (``-d sv_voxceleb1``)."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Dict, List, Optional

from s3prl_distill.io import atomic_write_bytes
from s3prl_distill.superb.prepare.common import PrepareError, need_dir, need_file, write_lines
from s3prl_distill.superb.s3prl_caches import sid_cache_dir

logger = logging.getLogger(__name__)

__all__ = ["prepare_sid", "prepare_asv"]


def _wav(root: Path, rel: str) -> Optional[Path]:
    for part in ("dev", "test"):
        path = root / part / "wav" / rel
        if path.is_file():
            return path
    return None


def prepare_sid(voxceleb1, split_file, out) -> Dict[str, Path]:
    """SID: checks ``iden_split.txt`` (``<1|2|3> idXXXXX/<video>/<n>.wav``), writes its copy.

    Also writes each split's file list where S3PRL's SID task looks for its cache under this
    plugin (:func:`s3prl_distill.superb.s3prl_caches.sid_cache_dir` of ``voxceleb1`` and the
    copy), so S3PRL skips its slow per-line search; nothing is written into S3PRL's package.

    Returns:
        ``{"meta_data": <out>/iden_split.txt (datarc.meta_data), "cache": <the cache folder>}``.
    """
    root = need_dir(voxceleb1, "VoxCeleb1")
    split_file = need_file(split_file, "VoxCeleb1 identification split (iden_split.txt)")
    lists: Dict[str, List[str]] = {"train": [], "dev": [], "test": []}
    names = {"1": "train", "2": "dev", "3": "test"}
    lines = []
    with open(split_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[0] not in names:
                raise PrepareError(f"{split_file}:{number}: expected '<1|2|3> idXXXXX/<video>/<n>.wav'")
            if not re.match(r"^id1\d{4}/", fields[1]):
                raise PrepareError(
                    f"{split_file}:{number}: speaker folder must be id1XXXX, got {fields[1]}")
            wav = _wav(root, fields[1])
            if wav is None:
                raise PrepareError(f"{split_file}:{number}: {fields[1]} not under {root}/(dev|test)/wav")
            lists[names[fields[0]]].append(str(wav))
            lines.append(f"{fields[0]} {fields[1]}")
    for split, files in lists.items():
        if not files:
            raise PrepareError(f"{split_file}: no utterance in the {split} split")
    meta = Path(out) / "iden_split.txt"
    write_lines(meta, lines)
    cache = sid_cache_dir(root, meta)
    for split, files in lists.items():
        atomic_write_bytes(pickle.dumps(files), cache / f"{split}.pkl")  # S3PRL's cache format
    logger.info("sid: %s; S3PRL's file lists in %s", meta, cache)
    return {"meta_data": meta, "cache": cache}


def prepare_asv(voxceleb1, trials, out) -> Dict[str, Path]:
    """ASV: checks the trial list (``<0|1> <enroll wav> <test wav>``, paths relative to
    ``<voxceleb1>/test/wav``) and ``<voxceleb1>/dev/wav``; copies the trials to ``out``.

    S3PRL's cached training lengths are kept per corpus under this plugin
    (:func:`s3prl_distill.superb.s3prl_caches.asv_cache_dir`), so no stale index of another corpus
    is ever reused and nothing needs clearing.
    """
    root = need_dir(voxceleb1, "VoxCeleb1")
    need_dir(root / "dev" / "wav", "VoxCeleb1 dev/wav")
    test = need_dir(root / "test" / "wav", "VoxCeleb1 test/wav")
    trials = need_file(trials, "VoxCeleb1 trial list (veri_test2.txt)")
    lines = []
    with open(trials, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise PrepareError(f"{trials}:{number}: expected '<0|1> <enroll wav> <test wav>'")
            for rel in fields[1:]:
                if not (test / rel).is_file():
                    raise PrepareError(f"{trials}:{number}: {test / rel} not found")
            lines.append(" ".join(fields))
    if not lines:
        raise PrepareError(f"{trials}: no trials")
    path = Path(out) / "veri_test2.txt"
    write_lines(path, lines)
    return {"trials": path}
