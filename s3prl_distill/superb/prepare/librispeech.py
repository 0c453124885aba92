"""LibriSpeech for PR (``-d ctc``, libriphone) and ASR (``-d asr``).

Official layout: ``<root>/<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac`` beside
``<spk>-<chapter>.trans.txt`` (``<utterance id> <TRANSCRIPT>`` lines). The PR reader
(:mod:`s3prl_distill.superb.ctc_corpus.libriphone`) reads this layout directly, through
:func:`librispeech_transcripts`.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from s3prl_distill.superb.prepare.common import PrepareError, need_dir, need_file, num_frames, write_lines

logger = logging.getLogger(__name__)

__all__ = ["LIBRISPEECH_SPLITS", "ASR_SYMBOLS", "librispeech_transcripts", "prepare_pr",
           "prepare_asr"]

#: SUPERB's PR splits (S3PRL's libriphone.yaml: train / dev / test)
LIBRISPEECH_SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
#: letters of LibriSpeech transcripts; "|" is the word boundary of S3PRL's ASR dictionary
ASR_SYMBOLS = ["|"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]


def librispeech_transcripts(root, split: str) -> List[Tuple[Path, str, str]]:
    """``[(audio path, utterance id, TRANSCRIPT)]`` of ``<root>/<split>/<spk>/<chapter>/``.

    Reads every ``<spk>-<chapter>.trans.txt`` (sorted); audio is ``<id>.flac`` (or ``.wav``).

    Raises:
        PrepareError: the split folder, a transcript line or an audio file is missing or malformed.
    """
    folder = need_dir(Path(root) / split, f"LibriSpeech split '{split}'")
    items = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        with open(trans, "r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                uid, _, text = line.strip().partition(" ")
                if not uid:
                    continue
                if not text:
                    raise PrepareError(f"{trans}:{number}: expected '<utterance id> <TEXT>'")
                audio = next((trans.parent / f"{uid}{ext}" for ext in (".flac", ".wav")
                              if (trans.parent / f"{uid}{ext}").is_file()), None)
                if audio is None:
                    raise PrepareError(f"{trans}:{number}: audio {trans.parent / uid}.flac not found")
                items.append((audio, uid, text.upper()))
    if not items:
        raise PrepareError(f"{folder}: no <spk>/<chapter>/*.trans.txt transcripts found")
    return items


def prepare_pr(librispeech, lexicons: Sequence[str], out,
               splits: Optional[Dict[str, str]] = None) -> Dict[str, Path]:
    """PR (``-d ctc``, libriphone): checks LibriSpeech + the lexicons, writes ``phoneme.txt``.

    The reader takes S3PRL's original schema (``corpus.path`` = the LibriSpeech root,
    ``corpus.train/dev/test`` = split folder names, ``corpus.lexicon``) and reads the corpus
    itself; this checks up front that every word of every transcript of ``splits`` (default:
    :data:`LIBRISPEECH_SPLITS`) is in one of ``lexicons`` (``WORD PH1 PH2 ...`` lines, ARPAbet
    with stress, as SUPERB's LibriSpeech lexicons), listing the first missing words, and copies
    S3PRL's phone inventory to ``<out>/phoneme.txt`` (``text.vocab_file``).

    Returns:
        ``{"vocab": <out>/phoneme.txt, <name>: <split folder>}`` for each split.
    """
    from s3prl_distill.superb import data_file
    from s3prl_distill.superb.ctc_corpus.libriphone import read_lexicon

    out = Path(out)
    splits = dict(splits or LIBRISPEECH_SPLITS)
    phones_path = out / "phoneme.txt"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_file("phoneme.txt"), phones_path)
    with open(phones_path, encoding="utf-8") as handle:
        phones = {line.strip(): i for i, line in enumerate(handle) if line.strip()}
    try:
        lexicon = read_lexicon([str(need_file(p, "lexicon file")) for p in lexicons], phones)
    except ValueError as err:
        raise PrepareError(str(err)) from err
    written: Dict[str, Path] = {}
    for name, split in splits.items():
        items = librispeech_transcripts(librispeech, split)
        missing = sorted({w for _, _, text in items for w in text.split() if w not in lexicon})
        if missing:
            raise PrepareError(
                f"{Path(librispeech) / split}: {len(missing)} word(s) are in no lexicon "
                f"{list(lexicons)}, e.g. {missing[:10]}"
            )
        written[name] = Path(librispeech) / split
        logger.info("pr: %s: %d utterances, every word in the lexicon", split, len(items))
    written["vocab"] = phones_path
    return written


def prepare_asr(librispeech, out, splits: Sequence[str] = ("train-clean-100", "dev-clean",
                                                            "test-clean")) -> Dict[str, Path]:
    """ASR (``-d asr``): ``len_for_bucket/<split>.csv`` (``file_path,length``) and ``char.dict``.

    ``file_path`` is relative to the LibriSpeech root (the task joins it with ``libri_root``),
    ``length`` is in samples. ``char.dict`` is a fairseq dictionary (``SYMBOL COUNT`` lines) of
    S3PRL's 28 symbols (``|``, A-Z, ``'``) with counts from the first split.
    """
    out = Path(out)
    root = Path(librispeech)
    written = {}
    counts: Counter = Counter()
    for index, split in enumerate(splits):
        items = librispeech_transcripts(root, split)
        rows = []
        for audio, uid, text in items:
            bad = sorted(set(text.replace(" ", "")) - set(ASR_SYMBOLS))
            if bad:
                raise PrepareError(f"{audio}: transcript of {uid} has characters {bad} outside A-Z '")
            if index == 0:
                counts.update(text.replace(" ", "|") + "|")
            rows.append(f"{Path(audio).relative_to(root).as_posix()},{num_frames(audio)}")
        path = out / "len_for_bucket" / f"{split}.csv"
        write_lines(path, ["file_path,length"] + rows)
        written[split] = path
        logger.info("asr: %s -> %s (%d utterances)", split, path, len(rows))
    symbols = sorted(ASR_SYMBOLS, key=lambda s: (-counts[s], ASR_SYMBOLS.index(s)))
    dict_path = out / "char.dict"
    write_lines(dict_path, [f"{s} {max(counts[s], 1)}" for s in symbols])
    written["dict"] = dict_path
    return written
