"""Data preparation for the ten SUPERB tasks: official corpus layout in, what S3PRL's task reads out.

``python -m s3prl_distill.superb.prepare TASK ...`` (one sub-command per task; the recipes in
``downstream_recipes/<task>/run.sh`` call it). Every function checks the official layout and
fails with an error naming the missing file or bad line; what a task reads that its corpus does not
ship (length index, dictionaries, split files, vocabularies) is written under ``--out``.

| task | corpus (official layout)                     | writes under --out                    |
|------|----------------------------------------------|---------------------------------------|
| pr   | LibriSpeech + a word->ARPAbet lexicon         | train/dev/test.csv, phoneme.txt       |
| asr  | LibriSpeech                                   | len_for_bucket/<split>.csv, char.dict |
| ks   | Speech Commands v0.01 + its test set          | (checks only)                         |
| ic   | Fluent Speech Commands                        | (checks only)                         |
| sf   | Audio SNIPS (SUPERB's preprocessed wav copy)  | character.txt                         |
| sid  | VoxCeleb1 + iden_split.txt                    | iden_split.txt; S3PRL's path cache    |
| asv  | VoxCeleb1 + veri_test2.txt trials             | trials copy; clears S3PRL's cache     |
| er   | IEMOCAP_full_release                          | meta_data/Session<k>/{train,test}_meta_data.json |
| qbe  | quesst14Database                              | (checks only)                         |
| sd   | Kaldi-style dirs from LibriMix's prepare_diarization.py | train/dev/test copies + reco2dur, spk2utt |
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import os
import pickle
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "PrepareError", "prepare_pr", "prepare_asr", "check_ks", "check_ic", "prepare_sf",
    "prepare_sid", "prepare_asv", "prepare_er", "check_qbe", "prepare_sd", "main",
    "librispeech_transcripts", "s3prl_task_dir",
]

LIBRISPEECH_SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
# Letters of LibriSpeech transcripts; "|" is the word boundary of S3PRL's ASR dictionary.
ASR_SYMBOLS = ["|"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]
IEMOCAP_EMOTIONS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
IEMOCAP_LABELS = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}


class PrepareError(UserError):
    """The corpus is not in the expected layout (the message names the file and what was expected)."""


def _need_dir(path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise PrepareError(f"{path}: {what} folder not found")
    return path


def _need_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found")
    return path


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
    os.replace(tmp, path)


def _frames(path: Path) -> int:
    from s3prl_distill.audio import audio_info

    return audio_info(path).num_frames


def s3prl_task_dir(task: str) -> Path:
    """Folder of ``s3prl/downstream/<task>`` in the installed S3PRL (without importing it)."""
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError("s3prl is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "downstream" / task


# --------------------------------------------------------------------------------- LibriSpeech
def librispeech_transcripts(root, split: str) -> List[Tuple[Path, str, str]]:
    """``[(audio path, utterance id, TRANSCRIPT)]`` of ``<root>/<split>/<spk>/<chapter>/``.

    Reads every ``<spk>-<chapter>.trans.txt``; audio is ``<id>.flac`` (or ``.wav``).
    """
    folder = _need_dir(Path(root) / split, f"LibriSpeech split '{split}'")
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


def prepare_pr(librispeech, lexicons: Sequence[str], out, splits: Optional[Dict[str, str]] = None
               ) -> Dict[str, Path]:
    """PR (``-d ctc``, libriphone): split CSVs (``wav_path,transcription``) + ``phoneme.txt``.

    Every word of every transcript must be in one of ``lexicons`` (``WORD PH1 PH2 ...`` lines,
    ARPAbet with stress, as SUPERB's LibriSpeech lexicons); the error lists the first missing words.
    """
    from s3prl_distill.superb import data_file
    from s3prl_distill.superb.ctc_corpus.libriphone import read_lexicon

    out = Path(out)
    splits = dict(splits or LIBRISPEECH_SPLITS)
    phones_path = out / "phoneme.txt"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_file("phoneme.txt"), phones_path)
    phones = {line.strip(): i for i, line in enumerate(open(phones_path)) if line.strip()}
    try:
        lexicon = read_lexicon([str(_need_file(p, "lexicon file")) for p in lexicons], phones)
    except ValueError as err:
        raise PrepareError(str(err)) from err
    written = {}
    for name, split in splits.items():
        items = librispeech_transcripts(librispeech, split)
        missing = sorted({w for _, _, text in items for w in text.split() if w not in lexicon})
        if missing:
            raise PrepareError(
                f"{Path(librispeech) / split}: {len(missing)} word(s) are in no lexicon "
                f"{list(lexicons)}, e.g. {missing[:10]}"
            )
        path = out / f"{name}.csv"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "wav_path", "transcription"])
            for audio, uid, text in items:
                writer.writerow([uid, str(Path(audio).resolve()), text])
        os.replace(tmp, path)
        written[name] = path
        logger.info("pr: %s -> %s (%d utterances)", split, path, len(items))
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
            rows.append(f"{Path(audio).relative_to(root).as_posix()},{_frames(audio)}")
        path = out / "len_for_bucket" / f"{split}.csv"
        _write_lines(path, ["file_path,length"] + rows)
        written[split] = path
        logger.info("asr: %s -> %s (%d utterances)", split, path, len(rows))
    symbols = sorted(ASR_SYMBOLS, key=lambda s: (-counts[s], ASR_SYMBOLS.index(s)))
    dict_path = out / "char.dict"
    _write_lines(dict_path, [f"{s} {max(counts[s], 1)}" for s in symbols])
    written["dict"] = dict_path
    return written


# ------------------------------------------------------------------------------ checks only
def check_ks(train_root, test_root) -> Dict[str, int]:
    """KS (``-d speech_commands``): Speech Commands v0.01 train folder and the separate test set.

    The train root holds ``<word>/*.wav`` folders and ``_background_noise_/*.wav`` (the source of
    the ``_silence_`` class); the test root holds ``<word|_unknown_|_silence_>/*.wav``. S3PRL splits
    train/dev by the hash of the speaker id, as the dataset's README prescribes.
    """
    train_root = _need_dir(train_root, "Speech Commands train")
    test_root = _need_dir(test_root, "Speech Commands test set")
    noise = list((train_root / "_background_noise_").glob("*.wav"))
    if not noise:
        raise PrepareError(f"{train_root / '_background_noise_'}: no *.wav (needed for _silence_)")
    words = [d for d in train_root.iterdir() if d.is_dir() and d.name != "_background_noise_"]
    n_train = sum(len(list(d.glob("*.wav"))) for d in words)
    n_test = sum(len(list(d.glob("*.wav"))) for d in test_root.iterdir() if d.is_dir())
    if n_train == 0 or n_test == 0:
        raise PrepareError(f"{train_root} / {test_root}: expected <word>/*.wav files in both")
    return {"train_files": n_train, "test_files": n_test, "noise_files": len(noise)}


def check_ic(root) -> Dict[str, int]:
    """IC (``-d fluent_commands``): ``data/{train,valid,test}_data.csv`` and the wavs they name."""
    root = _need_dir(root, "fluent_speech_commands_dataset")
    counts = {}
    for split in ("train", "valid", "test"):
        path = _need_file(root / "data" / f"{split}_data.csv", f"Fluent Speech Commands {split} CSV")
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


def check_qbe(root) -> Dict[str, int]:
    """QbE (``-d quesst14_dtw``): ``scoring/language_key_{utterances,dev,eval}.lst`` and audio."""
    root = _need_dir(root, "quesst14Database")
    counts = {}
    for key in ("utterances", "dev", "eval"):
        path = _need_file(root / "scoring" / f"language_key_{key}.lst", "QUESST14 language key")
        n = 0
        for number, line in enumerate(open(path, "r", encoding="utf-8"), 1):
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


# ------------------------------------------------------------------------------------- SNIPS
def prepare_sf(root, out, speakers: Dict[str, Sequence[str]]) -> Dict[str, Path]:
    """SF (``-d ctc``, snips): checks Audio SNIPS and writes ``character.txt``.

    ``speakers`` maps the split folders (``train``, ``valid``, ``test``) to their voices; each split
    needs at least one labelled wav of its voices.
    """
    from s3prl_distill.superb import data_file

    root = _need_dir(root, "Audio SNIPS")
    iob = _need_file(root / "all.iob.snips.txt", "SNIPS slot transcripts")
    _need_file(root / "slots.txt", "SNIPS slot list")
    uids = {line.split(" ", 1)[0] for line in open(iob, encoding="utf-8") if line.strip()}
    for split, voices in speakers.items():
        folder = _need_dir(root / split, f"SNIPS split '{split}'")
        n = sum(1 for w in folder.rglob("*.wav")
                if w.stem in uids and any(w.stem.startswith(v) for v in voices))
        if n == 0:
            raise PrepareError(f"{folder}: no wav of the voices {list(voices)} with a line in {iob}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_file("character.txt"), out / "character.txt")
    return {"vocab": out / "character.txt"}


# ---------------------------------------------------------------------------------- VoxCeleb1
def _voxceleb_wav(root: Path, rel: str) -> Optional[Path]:
    for part in ("dev", "test"):
        path = root / part / "wav" / rel
        if path.is_file():
            return path
    return None


def prepare_sid(voxceleb1, split_file, out, write_s3prl_cache: bool = True) -> Dict[str, Path]:
    """SID (``-d voxceleb1``): checks ``iden_split.txt`` (``<1|2|3> idXXXXX/<video>/<n>.wav``).

    S3PRL caches each split's file list in ``s3prl/downstream/voxceleb1/.cache/<split>.pkl`` and
    reuses it whatever ``file_path`` says; this writes those lists for ``voxceleb1`` (so a stale
    cache of another corpus is never used, and S3PRL skips its slow per-line glob).
    """
    root = _need_dir(voxceleb1, "VoxCeleb1")
    split_file = _need_file(split_file, "VoxCeleb1 identification split (iden_split.txt)")
    lists: Dict[str, List[str]] = {"train": [], "dev": [], "test": []}
    names = {"1": "train", "2": "dev", "3": "test"}
    lines = []
    for number, line in enumerate(open(split_file, encoding="utf-8"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in names:
            raise PrepareError(f"{split_file}:{number}: expected '<1|2|3> idXXXXX/<video>/<n>.wav'")
        if not re.match(r"^id1\d{4}/", fields[1]):
            raise PrepareError(f"{split_file}:{number}: speaker folder must be id1XXXX, got {fields[1]}")
        wav = _voxceleb_wav(root, fields[1])
        if wav is None:
            raise PrepareError(f"{split_file}:{number}: {fields[1]} not under {root}/(dev|test)/wav")
        lists[names[fields[0]]].append(str(wav))
        lines.append(f"{fields[0]} {fields[1]}")
    for split, files in lists.items():
        if not files:
            raise PrepareError(f"{split_file}: no utterance in the {split} split")
    out = Path(out)
    meta = out / "iden_split.txt"
    _write_lines(meta, lines)
    written = {"meta_data": meta}
    if write_s3prl_cache:
        cache = s3prl_task_dir("voxceleb1") / ".cache"
        cache.mkdir(parents=True, exist_ok=True)
        for split, files in lists.items():
            with open(cache / f"{split}.pkl", "wb") as handle:
                pickle.dump(files, handle)
        written["cache"] = cache
    return written


def clear_asv_cache() -> Optional[Path]:
    """Delete S3PRL's ``sv_voxceleb1/.wav_lengths/Voxceleb1_length.pt`` (a length index of one
    corpus that S3PRL reuses for any other); S3PRL rebuilds it on the next training run."""
    path = s3prl_task_dir("sv_voxceleb1") / ".wav_lengths" / "Voxceleb1_length.pt"
    if path.is_file():
        path.unlink()
        return path
    return None


def prepare_asv(voxceleb1, trials, out) -> Dict[str, Path]:
    """ASV (``-d sv_voxceleb1``): checks the trial list (``<0|1> <enroll wav> <test wav>``,
    paths relative to ``<voxceleb1>/test/wav``) and ``<voxceleb1>/dev/wav``; copies the trials
    to ``--out``; clears S3PRL's cached training-length index (see :func:`clear_asv_cache`)."""
    root = _need_dir(voxceleb1, "VoxCeleb1")
    _need_dir(root / "dev" / "wav", "VoxCeleb1 dev/wav")
    test = _need_dir(root / "test" / "wav", "VoxCeleb1 test/wav")
    trials = _need_file(trials, "VoxCeleb1 trial list (veri_test2.txt)")
    lines = []
    for number, line in enumerate(open(trials, encoding="utf-8"), 1):
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
    out = Path(out)
    path = out / "veri_test2.txt"
    _write_lines(path, lines)
    cleared = clear_asv_cache()
    if cleared:
        logger.info("asv: removed S3PRL's cached length index %s", cleared)
    return {"trials": path}


# ------------------------------------------------------------------------------------ IEMOCAP
def _iemocap_session(root: Path, session: str) -> List[Dict[str, str]]:
    """Utterances of one IEMOCAP session with a 4-class label (exc merged into hap)."""
    base = root / session
    wav_dir = _need_dir(base / "sentences" / "wav", f"IEMOCAP {session}/sentences/wav")
    label_dir = _need_dir(base / "dialog" / "EmoEvaluation", f"IEMOCAP {session}/dialog/EmoEvaluation")
    wavs = {p.stem: p for p in wav_dir.rglob("*.wav")}
    items = []
    for label_file in sorted(label_dir.glob("*.txt")):
        for line in open(label_file, encoding="utf-8", errors="replace"):
            if not line.startswith("["):
                continue
            fields = [f for f in re.split(r"[\t\n]", line) if f]
            if len(fields) < 3:
                raise PrepareError(f"{label_file}: expected '[start - end]<TAB>utt<TAB>emo<TAB>[v, a, d]'")
            utt, emotion = fields[1], fields[2]
            if emotion not in IEMOCAP_EMOTIONS or utt not in wavs:
                continue
            rel = wavs[utt].relative_to(root).as_posix()
            items.append({"path": rel, "label": IEMOCAP_EMOTIONS[emotion],
                          "speaker": utt.split("_")[0]})
    return items


def prepare_er(iemocap, out) -> Dict[str, Path]:
    """ER (``-d emotion``): ``<out>/Session<k>/{train,test}_meta_data.json`` for the 5 folds.

    Fold k tests on Session k and trains on the other four; labels neu/hap(+exc)/ang/sad; paths
    are relative to the IEMOCAP root (``datarc.root``).
    """
    root = _need_dir(iemocap, "IEMOCAP_full_release")
    sessions = sorted(p.name for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Session\d", p.name))
    if len(sessions) < 2:
        raise PrepareError(f"{root}: expected Session1..Session5 folders, found {sessions}")
    per_session = {s: _iemocap_session(root, s) for s in sessions}
    for session, items in per_session.items():
        if not items:
            raise PrepareError(f"{root / session}: no utterance with a neu/hap/exc/ang/sad label")
    out = Path(out)
    written = {}
    for session in sessions:
        train = [i for s in sessions if s != session for i in per_session[s]]
        for name, items in (("train", train), ("test", per_session[session])):
            path = out / session / f"{name}_meta_data.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"labels": IEMOCAP_LABELS, "meta_data": items}, handle)
        written[session] = out / session
    return written


# ----------------------------------------------------------------------------- diarization
def _read_table(path: Path, min_fields: int) -> List[List[str]]:
    rows = []
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < min_fields:
            raise PrepareError(f"{path}:{number}: expected at least {min_fields} fields, got {line!r}")
        rows.append(fields)
    return rows


def prepare_sd(source, out, splits: Sequence[str] = ("train", "dev", "test")) -> Dict[str, Path]:
    """SD (``-d diarization``): Kaldi-style ``wav.scp``, ``segments``, ``utt2spk`` per split.

    Copies them (and ``rttm`` if present) to ``<out>/<split>`` and derives what the task also reads:
    ``reco2dur`` (seconds, from the audio headers) and ``spk2utt``.
    """
    source = Path(source)
    out = Path(out)
    written = {}
    for split in splits:
        src = _need_dir(source / split, f"diarization '{split}' data")
        dst = out / split
        dst.mkdir(parents=True, exist_ok=True)
        wavs = _read_table(_need_file(src / "wav.scp", "wav.scp"), 2)
        segments = _read_table(_need_file(src / "segments", "segments"), 4)
        utt2spk = _read_table(_need_file(src / "utt2spk", "utt2spk"), 2)
        recordings = {}
        for rec, path in wavs:
            if not Path(path).is_file():
                raise PrepareError(f"{src / 'wav.scp'}: audio of {rec} ({path}) not found")
            recordings[rec] = path
        speakers = {u: s for u, s in utt2spk}
        for utt, rec, start, end in (row[:4] for row in segments):
            if rec not in recordings:
                raise PrepareError(f"{src / 'segments'}: {utt} names recording {rec} not in wav.scp")
            if utt not in speakers:
                raise PrepareError(f"{src / 'segments'}: {utt} has no line in utt2spk")
            if not float(start) < float(end):
                raise PrepareError(f"{src / 'segments'}: {utt} has start {start} >= end {end}")
        for name in ("wav.scp", "segments", "utt2spk", "rttm"):
            if (src / name).is_file() and src.resolve() != dst.resolve():
                shutil.copyfile(src / name, dst / name)
        from s3prl_distill.audio import audio_info

        durations = []
        for rec, path in wavs:
            info = audio_info(path)
            durations.append(f"{rec} {info.num_frames / info.sample_rate:.3f}")
        _write_lines(dst / "reco2dur", durations)
        spk2utt: Dict[str, List[str]] = {}
        for utt, spk in utt2spk:
            spk2utt.setdefault(spk, []).append(utt)
        _write_lines(dst / "spk2utt", [" ".join([s] + u) for s, u in sorted(spk2utt.items())])
        written[split] = dst
    return written


# ------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m s3prl_distill.superb.prepare",
                                     description="Prepare an official corpus for a SUPERB task.")
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("pr", help="LibriSpeech + lexicon -> split CSVs, phoneme.txt")
    p.add_argument("--librispeech", required=True)
    p.add_argument("--lexicon", required=True, nargs="+")
    p.add_argument("--out", required=True)
    p = sub.add_parser("asr", help="LibriSpeech -> len_for_bucket/*.csv, char.dict")
    p.add_argument("--librispeech", required=True)
    p.add_argument("--splits", nargs="+", default=["train-clean-100", "dev-clean", "test-clean"])
    p.add_argument("--out", required=True)
    p = sub.add_parser("ks", help="check Speech Commands v0.01")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p = sub.add_parser("ic", help="check Fluent Speech Commands")
    p.add_argument("--root", required=True)
    p = sub.add_parser("sf", help="check Audio SNIPS, write character.txt")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-speakers", nargs="+", required=True)
    p.add_argument("--valid-speakers", nargs="+", required=True)
    p.add_argument("--test-speakers", nargs="+", required=True)
    p = sub.add_parser("sid", help="VoxCeleb1 + iden_split.txt")
    p.add_argument("--voxceleb1", required=True)
    p.add_argument("--split-file", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("asv", help="VoxCeleb1 + trial list")
    p.add_argument("--voxceleb1", required=True)
    p.add_argument("--trials", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("er", help="IEMOCAP -> 5-fold meta data")
    p.add_argument("--iemocap", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("qbe", help="check quesst14Database")
    p.add_argument("--root", required=True)
    p = sub.add_parser("sd", help="Kaldi-style diarization dirs -> + reco2dur, spk2utt")
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.task == "pr":
            result = prepare_pr(args.librispeech, args.lexicon, args.out)
        elif args.task == "asr":
            result = prepare_asr(args.librispeech, args.out, args.splits)
        elif args.task == "ks":
            result = check_ks(args.train, args.test)
        elif args.task == "ic":
            result = check_ic(args.root)
        elif args.task == "sf":
            result = prepare_sf(args.root, args.out, {"train": args.train_speakers,
                                                      "valid": args.valid_speakers,
                                                      "test": args.test_speakers})
        elif args.task == "sid":
            result = prepare_sid(args.voxceleb1, args.split_file, args.out)
        elif args.task == "asv":
            result = prepare_asv(args.voxceleb1, args.trials, args.out)
        elif args.task == "er":
            result = prepare_er(args.iemocap, args.out)
        elif args.task == "qbe":
            result = check_qbe(args.root)
        else:
            result = prepare_sd(args.source, args.out)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for key, value in result.items():
        print(f"{key}\t{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
