"""Audio SNIPS (SUPERB's preprocessed wav copy) for SF (``-d ctc``, snips)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Sequence

from s3prl_distill.superb.prepare.common import PrepareError, need_dir, need_file

__all__ = ["prepare_sf"]


def prepare_sf(root, out, speakers: Dict[str, Sequence[str]]) -> Dict[str, Path]:
    """SF: checks Audio SNIPS and copies S3PRL's character vocabulary to ``<out>/character.txt``.

    ``speakers`` maps the split folders (``train``, ``valid``, ``test``) to their voices; each split
    needs at least one labelled wav of its voices.
    """
    from s3prl_distill.superb import data_file

    root = need_dir(root, "Audio SNIPS")
    iob = need_file(root / "all.iob.snips.txt", "SNIPS slot transcripts")
    need_file(root / "slots.txt", "SNIPS slot list")
    with open(iob, encoding="utf-8") as handle:
        uids = {line.split(" ", 1)[0] for line in handle if line.strip()}
    for split, voices in speakers.items():
        folder = need_dir(root / split, f"SNIPS split '{split}'")
        n = sum(1 for w in folder.rglob("*.wav")
                if w.stem in uids and any(w.stem.startswith(v) for v in voices))
        if n == 0:
            raise PrepareError(f"{folder}: no wav of the voices {list(voices)} with a line in {iob}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_file("character.txt"), out / "character.txt")
    return {"vocab": out / "character.txt"}
