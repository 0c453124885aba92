"""SF (slot filling) reader for S3PRL's ``ctc`` task: the preprocessed Audio SNIPS corpus.

S3PRL's signature and config schema (``downstream/ctc/snips.yaml``, unchanged: ``corpus.path``,
``train/dev/test`` split folder lists, ``<split>_speakers`` voice lists). Layout (what SUPERB's
preprocessed Audio SNIPS unpacks to, checked by ``s3prl-distill prepare sf``)::

    <path>/train/<Speaker>-snips-train-<n>.wav   (also valid/, test/)
    <path>/all.iob.snips.txt   '<uid> BOS w1 .. wn EOS<TAB>O s1 .. sn <intent>'  (slot mode)
    <path>/all-trans.txt       '<uid> <words>'                                    (plain mode)
    <path>/slots.txt           slot names, one a line, the first line a header

A split (``['train']``) keeps the files whose utterance id starts with one of the speakers listed
under ``<split>_speakers`` in the config (SUPERB splits SNIPS by synthetic voice).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Sequence, Union

from s3prl_distill.superb.ctc_corpus import BucketedTextDataset

logger = logging.getLogger(__name__)

__all__ = ["SnipsDataset", "read_transcripts"]


def read_transcripts(path: str) -> Dict[str, str]:
    """``{utterance_id: rest of the line}`` from a SNIPS transcript file (lines stripped, as S3PRL)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: SNIPS transcript file not found")
    table: Dict[str, str] = {}
    with open(path, "r", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                uid, _, rest = line.partition(" ")
                table[uid] = rest
    return table


class SnipsDataset(BucketedTextDataset):
    """S3PRL's ``SnipsDataset`` interface: ``(split, tokenizer, bucket_size, path, num_workers=..,
    ascending=False, **kwargs)`` with ``kwargs['<split>_speakers']``; items ``(wav_path, ids)``."""

    def __init__(self, split: Union[str, Sequence[str]], tokenizer, bucket_size: int, path: str,
                 num_workers: int = 0, ascending: bool = False, **kwargs):
        splits = [split] if isinstance(split, str) else list(split)
        key = f"{splits[0]}_speakers"
        speakers = kwargs.get(key)
        if not speakers:
            raise ValueError(f"SNIPS: config key corpus.{key} (list of voices) is missing or empty")
        slot_mode = "-slot" in tokenizer.token_type
        transcript_file = os.path.join(path, "all.iob.snips.txt" if slot_mode else "all-trans.txt")
        transcripts = read_transcripts(transcript_file)
        items = []
        for name in splits:
            folder = Path(path) / name
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: SNIPS split folder not found")
            kept = unlabelled = 0
            for wav in sorted(folder.rglob("*.wav")):
                uid = wav.name[: -len(".wav")]
                if uid not in transcripts:
                    unlabelled += 1
                    continue
                if not any(uid.startswith(spk) for spk in speakers):
                    continue
                items.append((str(wav), tokenizer.encode(transcripts[uid])))
                kept += 1
            if unlabelled:
                logger.warning("%s: %d wav files have no line in %s", folder, unlabelled,
                               transcript_file)
            if kept == 0:
                raise ValueError(f"{folder}: no labelled audio of the voices {list(speakers)}")
            logger.info("%s: %d utterances of %d voices", folder, kept, len(speakers))
        super().__init__(items, bucket_size, ascending)
