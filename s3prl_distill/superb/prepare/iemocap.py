"""IEMOCAP for ER (``-d emotion``): the five leave-one-session-out folds' meta data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

from s3prl_distill.io import atomic_write_text
from s3prl_distill.superb.prepare.common import PrepareError, need_dir

__all__ = ["IEMOCAP_EMOTIONS", "IEMOCAP_LABELS", "prepare_er"]

#: IEMOCAP's labels kept by SUPERB's ER (excited merged into happy)
IEMOCAP_EMOTIONS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
IEMOCAP_LABELS = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}


def _session(root: Path, session: str) -> List[Dict[str, str]]:
    """Utterances of one IEMOCAP session with a 4-class label (exc merged into hap)."""
    base = root / session
    wav_dir = need_dir(base / "sentences" / "wav", f"IEMOCAP {session}/sentences/wav")
    label_dir = need_dir(base / "dialog" / "EmoEvaluation", f"IEMOCAP {session}/dialog/EmoEvaluation")
    wavs = {p.stem: p for p in wav_dir.rglob("*.wav")}
    items = []
    for label_file in sorted(label_dir.glob("*.txt")):
        with open(label_file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.startswith("["):
                    continue
                fields = [f for f in re.split(r"[\t\n]", line) if f]
                if len(fields) < 3:
                    raise PrepareError(
                        f"{label_file}: expected '[start - end]<TAB>utt<TAB>emo<TAB>[v, a, d]'")
                utt, emotion = fields[1], fields[2]
                if emotion not in IEMOCAP_EMOTIONS or utt not in wavs:
                    continue
                rel = wavs[utt].relative_to(root).as_posix()
                items.append({"path": rel, "label": IEMOCAP_EMOTIONS[emotion],
                              "speaker": utt.split("_")[0]})
    return items


def prepare_er(iemocap, out) -> Dict[str, Path]:
    """ER: ``<out>/Session<k>/{train,test}_meta_data.json`` for the 5 folds.

    Fold k tests on Session k and trains on the other four; labels neu/hap(+exc)/ang/sad; paths
    are relative to the IEMOCAP root (``datarc.root``).
    """
    root = need_dir(iemocap, "IEMOCAP_full_release")
    sessions = sorted(p.name for p in root.iterdir()
                      if p.is_dir() and re.fullmatch(r"Session\d", p.name))
    if len(sessions) < 2:
        raise PrepareError(f"{root}: expected Session1..Session5 folders, found {sessions}")
    per_session = {s: _session(root, s) for s in sessions}
    for session, items in per_session.items():
        if not items:
            raise PrepareError(f"{root / session}: no utterance with a neu/hap/exc/ang/sad label")
    out = Path(out)
    written = {}
    for session in sessions:
        train = [i for s in sessions if s != session for i in per_session[s]]
        for name, items in (("train", train), ("test", per_session[session])):
            atomic_write_text(json.dumps({"labels": IEMOCAP_LABELS, "meta_data": items}),
                              out / session / f"{name}_meta_data.json")
        written[session] = out / session
    return written
