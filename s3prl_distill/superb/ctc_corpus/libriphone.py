"""PR (phoneme recognition) reader for S3PRL's ``ctc`` task: LibriSpeech words -> ARPAbet phones.

Reads what ``python -m s3prl_distill.superb.prepare pr`` writes (``downstream_recipes/pr``):

* ``<csv_dir>/<split>.csv`` with columns ``wav_path`` (absolute path of the audio file) and
  ``transcription`` (upper-case words separated by spaces),
* one or more lexicon files, lines ``WORD PH1 PH2 ...`` (tabs or spaces); the first entry of a word
  wins, so the phone sequence of every word is deterministic,
* the phone inventory through S3PRL's ``word`` tokenizer (``phoneme.txt``).
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Dict, List, Sequence

from s3prl_distill.superb.ctc_corpus import BucketedTextDataset

logger = logging.getLogger(__name__)

__all__ = ["LibriPhoneDataset", "read_lexicon", "read_split_csv"]


def read_lexicon(paths: Sequence[str], phones: Dict[str, int]) -> Dict[str, List[str]]:
    """``{WORD: [phones]}`` from lexicon files, keeping the first pronunciation of each word.

    Raises:
        FileNotFoundError: a lexicon file is missing.
        ValueError: a line has no phones, or a phone outside ``phones`` (names file and line).
    """
    if isinstance(paths, str):
        paths = [paths]
    lexicon: Dict[str, List[str]] = {}
    alternatives = 0
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: lexicon file not found (lines 'WORD PH1 PH2 ...')")
        with open(path, "r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 2:
                    raise ValueError(f"{path}:{number}: expected 'WORD PH1 PH2 ...', got {line!r}")
                word, pron = fields[0], fields[1:]
                unknown = [p for p in pron if p not in phones]
                if unknown:
                    raise ValueError(
                        f"{path}:{number}: phone(s) {unknown} of {word!r} are not in the phone "
                        f"inventory (the vocab_file of the task)"
                    )
                if word in lexicon:
                    alternatives += 1
                    continue
                lexicon[word] = pron
    if alternatives:
        logger.info("lexicon: kept the first of several pronunciations for %d entries", alternatives)
    return lexicon


def read_split_csv(path: str) -> List[Dict[str, str]]:
    """Rows of a split CSV with at least the columns ``wav_path`` and ``transcription``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: split CSV not found (run: python -m s3prl_distill.superb.prepare pr ...)"
        )
    with open(path, "r", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"wav_path", "transcription"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; has {reader.fieldnames}")
        return list(reader)


class LibriPhoneDataset(BucketedTextDataset):
    """S3PRL's ``LibriPhoneDataset`` interface: ``(split_csv, tokenizer, bucket_size, lexicon,
    csv_dir, ascending=False, **kwargs)``; items are ``(wav_path, phone_ids)``."""

    def __init__(self, split_csv: str, tokenizer, bucket_size: int, lexicon: Sequence[str],
                 csv_dir: str, ascending: bool = False, **kwargs):
        phones = dict(tokenizer._vocab2idx)
        word2phones = read_lexicon(lexicon, phones)
        path = os.path.join(csv_dir, split_csv)
        items = []
        for row_number, row in enumerate(read_split_csv(path), 2):
            pron: List[str] = []
            for word in row["transcription"].split():
                if word not in word2phones:
                    raise ValueError(
                        f"{path}:{row_number}: word {word!r} is in no lexicon file {list(lexicon)}"
                    )
                pron.extend(word2phones[word])
            items.append((row["wav_path"], tokenizer.encode(" ".join(pron))))
        if not items:
            raise ValueError(f"{path}: no utterances")
        logger.info("%s: %d utterances", path, len(items))
        super().__init__(items, bucket_size, ascending)
