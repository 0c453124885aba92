"""PR (phoneme recognition) reader for S3PRL's ``ctc`` task: LibriSpeech words -> ARPAbet phones.

S3PRL's signature and config schema (``downstream/ctc/libriphone.yaml``, unchanged)::

    corpus:
      name: libriphone
      path: /data/LibriSpeech                # the LibriSpeech root
      lexicon: [lexicon-1.txt, lexicon-2.txt]   # 'WORD PH1 PH2 ...' lines; the first entry wins
      train: ['train-clean-100']             # split folders under `path`
      dev: ['dev-clean']
      test: ['test-clean']
    text: {mode: word, vocab_file: phoneme.txt}   # the phone inventory (S3PRL's word tokenizer)

Items are S3PRL's: every utterance of the splits (``<split>/<spk>/<chapter>/<id>.flac`` with its
line in ``<spk>-<chapter>.trans.txt``), phone ids of its words, sorted by phone count (longest
first unless ``ascending``). Differences from S3PRL's reader, none of which changes what it
returns on the official corpus: utterances are listed in sorted order before the (stable) sort by
length (S3PRL: the file system's order), transcripts are read once per chapter, and a missing
word, phone or file is an error naming the file and line.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Union

from s3prl_distill.superb.ctc_corpus import BucketedTextDataset

logger = logging.getLogger(__name__)

__all__ = ["LibriPhoneDataset", "read_lexicon"]


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
            raise FileNotFoundError(
                f"{path}: lexicon file not found (lines 'WORD PH1 PH2 ...'; S3PRL's are in its "
                f"repository under downstream/ctc/lexicon/; relative paths are read from the "
                f"working folder, {os.getcwd()})")
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


class LibriPhoneDataset(BucketedTextDataset):
    """S3PRL's ``LibriPhoneDataset(split, tokenizer, bucket_size, path, lexicon, ascending=False,
    **kwargs)``: ``split`` lists LibriSpeech split folders under ``path``; items are
    ``(flac path, phone ids)``."""

    def __init__(self, split: Union[str, Sequence[str]], tokenizer, bucket_size: int,
                 path: Optional[str] = None, lexicon: Sequence[str] = (), ascending: bool = False,
                 **kwargs):
        from s3prl_distill.superb.prepare.common import PrepareError
        from s3prl_distill.superb.prepare.librispeech import librispeech_transcripts

        schema = ("the PR reader takes S3PRL's libriphone.yaml schema: corpus.path = the "
                  "LibriSpeech root, corpus.train/dev/test = split folder lists (e.g. "
                  "['train-clean-100']), corpus.lexicon = lexicon files")
        if path is None:
            raise ValueError(f"downstream_expert.corpus.path is missing: {schema}"
                             + ("; corpus.csv_dir (split CSVs) is no longer read"
                                if "csv_dir" in kwargs else ""))
        if "csv_dir" in kwargs:
            logger.warning("downstream_expert.corpus.csv_dir is ignored: %s", schema)
        if not lexicon:
            raise ValueError(f"downstream_expert.corpus.lexicon is missing or empty: {schema}")
        splits = [split] if isinstance(split, str) else list(split)
        word2phones = read_lexicon(lexicon, dict(tokenizer._vocab2idx))
        items = []
        for name in splits:
            try:
                utterances = librispeech_transcripts(path, name)
            except PrepareError as err:
                raise ValueError(f"corpus {name!r}: {err}") from None
            for audio, uid, text in utterances:
                pron: List[str] = []
                for word in text.split():
                    if word not in word2phones:
                        raise ValueError(f"{audio.parent}: word {word!r} of {uid} is in no lexicon "
                                         f"file {list(lexicon)}")
                    pron.extend(word2phones[word])
                items.append((str(audio), tokenizer.encode(" ".join(pron))))
            logger.info("%s: %d utterances", os.path.join(path, name), len(utterances))
        super().__init__(items, bucket_size, ascending)
