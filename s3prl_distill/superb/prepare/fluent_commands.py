"""Fluent Speech Commands for IC (``-d fluent_commands``): checks only."""

from __future__ import annotations

import csv
from typing import Dict

from s3prl_distill.superb.prepare.common import PrepareError, need_dir, need_file

__all__ = ["check_ic"]


def check_ic(root) -> Dict[str, int]:
    """IC: ``data/{train,valid,test}_data.csv`` and the wavs they name; rows per split."""
    root = need_dir(root, "fluent_speech_commands_dataset")
    counts = {}
    for split in ("train", "valid", "test"):
        path = need_file(root / "data" / f"{split}_data.csv", f"Fluent Speech Commands {split} CSV")
        with open(path, "r", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"path", "action", "object", "location"} - set(reader.fieldnames or [])
            if missing:
                raise PrepareError(f"{path}: missing column(s) {sorted(missing)}")
            rows = list(reader)
        for number, row in enumerate(rows, 2):
            if not (root / row["path"]).is_file():
                raise PrepareError(f"{path}:{number}: audio {root / row['path']} not found")
        counts[split] = len(rows)
    return counts
