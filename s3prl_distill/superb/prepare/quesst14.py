"""QUESST 2014 for QbE (``-d quesst14_dtw``): checks only."""

from __future__ import annotations

import logging
import re
from typing import Dict

from s3prl_distill.superb.prepare.common import PrepareError, need_dir, need_file

logger = logging.getLogger(__name__)

__all__ = ["check_qbe"]


def check_qbe(root) -> Dict[str, int]:
    """QbE: ``scoring/language_key_{utterances,dev,eval}.lst`` and their English audio."""
    root = need_dir(root, "quesst14Database")
    counts = {}
    for key in ("utterances", "dev", "eval"):
        path = need_file(root / "scoring" / f"language_key_{key}.lst", "QUESST14 language key")
        n = 0
        with open(path, "r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise PrepareError(f"{path}:{number}: expected '<audio path> <language>'")
                if fields[1] != "nnenglish":
                    continue
                audio = root / re.sub(r"^.*?/", "", fields[0])
                if not audio.is_file():
                    raise PrepareError(f"{path}:{number}: audio {audio} not found")
                n += 1
        if n == 0:
            raise PrepareError(f"{path}: no English ('nnenglish') entries")
        counts[key] = n
    for ground in ("groundtruth_quesst14_dev", "groundtruth_quesst14_eval"):
        if not (root / "scoring" / ground).is_dir():
            logger.warning("%s: missing; the official scoring script needs it",
                           root / "scoring" / ground)
    return counts
