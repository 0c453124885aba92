"""The on-disk layouts of the real SUPERB corpora, written and read back.

Writers produce exactly what S3PRL's dataset classes read; readers return, per split, the list of
``(audio path, label)`` pairs the proxy evaluator uses (with the same split rules as S3PRL).

============  =====================================================================================
task          layout under the corpus root
============  =====================================================================================
KS            ``speech_commands_v0.01/<word>/<spk>_nohash_<n>.wav``, ``_background_noise_/*.wav``,
              ``validation_list.txt``, ``testing_list.txt``; test set
              ``speech_commands_test_set_v0.01/<class>/*.wav`` incl. ``_silence_``, ``_unknown_``.
              Train/dev split by the SHA-1 of the speaker id (S3PRL's ``split_dataset`` rule).
IC            ``fluent_speech_commands_dataset/wavs/speakers/<spk>/<uuid>.wav``,
              ``data/{train,valid,test}_data.csv`` (index, path, speakerId, transcription,
              action, object, location).
SID           ``VoxCeleb1/dev/wav/id1xxxx/<video>/<nnnnn>.wav``, ``VoxCeleb1/iden_split.txt``
              (``1|2|3 id1xxxx/<video>/<nnnnn>.wav``).
PR / ASR      ``LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chap>/<spk>-<chap>-
              <utt>.flac`` + ``<spk>-<chap>.trans.txt`` (upper case), lexicon
              ``librispeech-lexicon.txt`` (``WORD<TAB>PH PH``, SUPERB phoneme.txt tokens);
              S3PRL's PR reader reads them directly (``python -m s3prl_distill.superb.prepare``
              checks every transcript word against the lexicon and writes ``phoneme.txt``).
============  =====================================================================================
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path
from typing import Dict, List, Tuple

from s3prl_distill.minisuperb.phones import PHONE_VOCAB
from s3prl_distill.errors import UserError

__all__ = [
    "KS_DIR", "KS_TEST_DIR", "IC_DIR", "SID_DIR", "LIBRI_DIR", "LEXICON",
    "PR_SPLITS", "LayoutError", "ks_split_of", "ks_speaker_id", "read_ks", "read_ic", "read_sid",
    "read_pr", "write_ic_csv", "write_sid_split", "write_librispeech_transcripts", "write_lexicon",
]

KS_DIR = "speech_commands_v0.01"
KS_TEST_DIR = "speech_commands_test_set_v0.01"
IC_DIR = "fluent_speech_commands_dataset"
SID_DIR = "VoxCeleb1"
LIBRI_DIR = "LibriSpeech"
LEXICON = "librispeech-lexicon.txt"
PR_SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
IC_COLUMNS = ["", "path", "speakerId", "transcription", "action", "object", "location"]
_KS_MAX = 2 ** 27 - 1

Item = Tuple[str, object]


class LayoutError(UserError):
    """A corpus folder does not hold the layout a task expects."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise LayoutError(f"{path}: missing ({what}); generate the corpus with "
                          f"`s3prl-distill demo` or s3prl_distill.minisuperb.generate_corpus")
    return path


# ----------------------------------------------------------------------------- KS
def ks_split_of(speaker: str) -> str:
    """Speech Commands split of a speaker id by the dataset's SHA-1 rule: valid, test or train."""
    digest = hashlib.sha1(speaker.encode("utf-8")).hexdigest()
    percent = (int(digest, 16) % (_KS_MAX + 1)) * (100.0 / _KS_MAX)
    return "valid" if percent < 10 else ("test" if percent < 20 else "train")


def ks_speaker_id(index: int, split: str) -> str:
    """Deterministic 8-hex-digit speaker id whose hash puts it in ``split`` (valid/test/train)."""
    n = 0
    while True:
        sid = hashlib.md5(f"speaker-{index}-{n}".encode()).hexdigest()[:8]
        if ks_split_of(sid) == split:
            return sid
        n += 1


def read_ks(root: Path, classes: List[str], segment: int = 16000) -> Dict[str, List[Item]]:
    """KS splits as S3PRL builds them: ``{"train"|"dev"|"test": [(path, class index)]}``.

    Words outside ``classes`` become ``_unknown_``. ``_silence_`` items of train/dev are
    ``(path#k, index)``: the k-th ``segment``-sample slice of a background-noise file (train
    gets even slices, dev odd ones).
    """
    root = Path(root)
    train_root = _need(root / KS_DIR, "Speech Commands training folder")
    test_root = _need(root / KS_TEST_DIR, "Speech Commands test folder")
    index = {c: i for i, c in enumerate(classes)}
    out: Dict[str, List[Item]] = {"train": [], "dev": [], "test": []}
    for folder in sorted(p for p in train_root.iterdir() if p.is_dir()):
        if folder.name == "_background_noise_":
            continue
        label = index.get(folder.name, index["_unknown_"])
        for wav in sorted(folder.glob("*.wav")):
            split = ks_split_of(re.sub(r"_nohash_.*$", "", wav.name))
            if split != "test":
                out["train" if split == "train" else "dev"].append((str(wav), label))
    import soundfile as sf

    for noise in sorted((train_root / "_background_noise_").glob("*.wav")):
        slices = sf.info(str(noise)).frames // segment
        for k in range(slices):
            out["train" if k % 2 == 0 else "dev"].append((f"{noise}#{k}", index["_silence_"]))
    for folder in sorted(p for p in test_root.iterdir() if p.is_dir()):
        if folder.name not in index:
            raise LayoutError(f"{folder}: unexpected class folder in the KS test set")
        out["test"].extend((str(w), index[folder.name]) for w in sorted(folder.glob("*.wav")))
    return out


# ----------------------------------------------------------------------------- IC
def write_ic_csv(path: Path, rows: List[Dict[str, str]]) -> None:
    """Write one Fluent Speech Commands split CSV (pandas-style unnamed index column)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(IC_COLUMNS)
        for i, row in enumerate(rows):
            writer.writerow([i] + [row[c] for c in IC_COLUMNS[1:]])


def read_ic(root: Path) -> Dict[str, List[Item]]:
    """IC splits: ``{"train"|"dev"|"test": [(path, (action, object, location))]}``."""
    base = _need(Path(root) / IC_DIR, "Fluent Speech Commands folder")
    out: Dict[str, List[Item]] = {}
    for split, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
        path = _need(base / "data" / f"{name}_data.csv", f"IC {name} list")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            for col in IC_COLUMNS[1:]:
                if col not in row:
                    raise LayoutError(f"{path}: missing column {col!r}")
        out[split] = [(str(base / r["path"]), (r["action"], r["object"], r["location"]))
                      for r in rows]
    return out


# ----------------------------------------------------------------------------- SID
def write_sid_split(path: Path, entries: List[Tuple[int, str]]) -> None:
    """Write VoxCeleb1's ``iden_split.txt``: lines ``<1|2|3> id1xxxx/<video>/<n>.wav``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s} {rel}\n" for s, rel in entries), encoding="utf-8")


def read_sid(root: Path) -> Dict[str, List[Item]]:
    """SID splits: ``{"train"|"dev"|"test": [(path, speaker index = int(id[2:]) - 10001)]}``."""
    base = _need(Path(root) / SID_DIR, "VoxCeleb1 folder")
    split_file = _need(base / "iden_split.txt", "VoxCeleb1 identification split")
    names = {"1": "train", "2": "dev", "3": "test"}
    out: Dict[str, List[Item]] = {"train": [], "dev": [], "test": []}
    for n, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or parts[0] not in names:
            raise LayoutError(f"{split_file}:{n}: expected '<1|2|3> idNNNNN/video/file.wav', "
                              f"got {line!r}")
        found = sorted(base.glob(f"*/wav/{parts[1]}"))
        if not found:
            raise LayoutError(f"{split_file}:{n}: {parts[1]} not found under {base}/*/wav/")
        label = int(parts[1].split("/")[0][2:]) - 10001
        out[names[parts[0]]].append((str(found[0]), label))
    return out


# ----------------------------------------------------------------------------- PR / ASR
def write_librispeech_transcripts(folder: Path, speaker: str, chapter: str,
                                  lines: List[Tuple[str, str]]) -> None:
    """Write ``<spk>-<chap>.trans.txt`` (``<utt id> <UPPER CASE TEXT>`` lines) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{uid} {words.upper()}\n" for uid, words in lines)
    (folder / f"{speaker}-{chapter}.trans.txt").write_text(text, encoding="utf-8")


def write_lexicon(path: Path, lexicon: Dict[str, List[str]]) -> None:
    """Write a LibriSpeech-style lexicon: ``WORD<TAB>PH PH ...`` sorted by word."""
    path.write_text("".join(f"{w}\t{' '.join(p)}\n" for w, p in sorted(lexicon.items())),
                    encoding="utf-8")


def read_pr(root: Path) -> Dict[str, List[Item]]:
    """PR splits from the LibriSpeech folders + lexicon: ``{split: [(flac, [phone tokens])]}``.

    Reads through the same code as SUPERB PR's preparation (:mod:`s3prl_distill.superb`).
    """
    from s3prl_distill.superb.ctc_corpus.libriphone import read_lexicon
    from s3prl_distill.superb.prepare import librispeech_transcripts

    root = Path(root)
    lexicon_path = _need(root / LEXICON, "phone lexicon")
    lexicon = read_lexicon([str(lexicon_path)], {p: i for i, p in enumerate(PHONE_VOCAB)})
    out: Dict[str, List[Item]] = {}
    for split, name in PR_SPLITS.items():
        _need(root / LIBRI_DIR / name, f"LibriSpeech {name}")
        items: List[Item] = []
        for audio, uid, words in librispeech_transcripts(root / LIBRI_DIR, name):
            phones: List[str] = []
            for word in words.split():
                if word not in lexicon:
                    raise LayoutError(f"{audio}: word {word!r} is not in {lexicon_path}")
                phones.extend(lexicon[word])
            items.append((str(audio), phones))
        out[split] = items
    return out
