"""Tiny corpora in the official layouts of the ten SUPERB tasks, and a runner for S3PRL's downstream.

Each ``make_<task>(root)`` writes a few short generated utterances plus the metadata files the
official corpus ships, and returns the paths a recipe needs. Audio is tones with noise (what the
tests check is the plumbing, not accuracy). Everything is deterministic.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from conftest import write_wave

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "downstream_recipes"

# Fast settings for every task: few steps, tiny batches, no worker processes.
RUNNER_FAST = [
    "config.runner.total_steps=4",
    "config.runner.log_step=2",
    "config.runner.eval_step=2",
    "config.runner.save_step=2",
    "config.runner.gradient_accumulate_steps=1",
]


def run_downstream(args: Sequence[str], cwd, timeout: int = 240) -> subprocess.CompletedProcess:
    """S3PRL's own ``python -m s3prl.run_downstream ARGS`` on CPU, our plugin found through the
    import hook installed with the package; raises with the log tail on failure."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "s3prl.run_downstream", *args, "--device", "cpu"]
    proc = subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        raise AssertionError(f"{' '.join(command)} failed ({proc.returncode}):\n{tail}")
    return proc


def overrides(*items: str) -> str:
    """S3PRL's ``-o`` syntax: assignments joined by ``,,``."""
    return ",,".join(items)


# ------------------------------------------------------------------------------ LibriSpeech
LIBRI_TEXT = ["HELLO WORLD", "GOOD MORNING WORLD", "HELLO GOOD DAY", "A DAY IN THE WORLD"]
LIBRI_LEXICON = {
    "HELLO": "HH AH0 L OW1", "WORLD": "W ER1 L D", "GOOD": "G UH1 D",
    "MORNING": "M AO1 R N IH0 NG", "DAY": "D EY1", "A": "AH0", "IN": "IH0 N", "THE": "DH AH0",
}


def make_librispeech(root, splits: Sequence[str] = ("train-clean-100", "dev-clean", "test-clean"),
                     per_split: int = 4) -> Dict[str, Path]:
    """``<root>/<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac`` + ``.trans.txt``; a lexicon."""
    root = Path(root)
    for s_index, split in enumerate(splits):
        spk, chapter = 100 + s_index, 200 + s_index
        folder = root / split / str(spk) / str(chapter)
        lines = []
        for n in range(per_split):
            uid = f"{spk}-{chapter}-{n:04d}"
            text = LIBRI_TEXT[n % len(LIBRI_TEXT)]
            write_wave(folder / f"{uid}.flac", seconds=0.6 + 0.1 * n, freq=150.0 + 40 * n,
                       seed=s_index * 10 + n)
            lines.append(f"{uid} {text}")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    lexicon = root / "lexicon.txt"
    lexicon.write_text("".join(f"{w} {p}\n" for w, p in LIBRI_LEXICON.items()))
    return {"root": root, "lexicon": lexicon}


# ---------------------------------------------------------------------------- Speech Commands
KS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed")
# Speaker ids whose SHA-1 puts them in S3PRL's hash split: s0/s1 -> train, s3 -> dev.
KS_TRAIN_SPEAKERS = ("s0", "s1")
KS_DEV_SPEAKERS = ("s3",)


def make_speech_commands(root) -> Dict[str, Path]:
    """v0.01 train folder (``<word>/<spk>_nohash_0.wav``, ``_background_noise_``) and test set."""
    root = Path(root)
    train, test = root / "speech_commands_v0.01", root / "speech_commands_test_set_v0.01"
    for w_index, word in enumerate(KS_WORDS):
        for spk in KS_TRAIN_SPEAKERS + KS_DEV_SPEAKERS:
            write_wave(train / word / f"{spk}_nohash_0.wav", seconds=1.0,
                       freq=200.0 + 50 * w_index, seed=w_index)
        if word != "bed":
            write_wave(test / word / "t0_nohash_0.wav", seconds=1.0, freq=200.0 + 50 * w_index,
                       seed=100 + w_index)
    (train / "validation_list.txt").write_text("")
    (train / "testing_list.txt").write_text("")
    write_wave(train / "_background_noise_" / "white_noise.wav", seconds=2.0, freq=40.0, seed=5)
    write_wave(test / "_unknown_" / "u0_nohash_0.wav", seconds=1.0, freq=900.0, seed=6)
    write_wave(test / "_silence_" / "s0_nohash_0.wav", seconds=1.0, freq=30.0, seed=7)
    return {"train": train, "test": test}


# ------------------------------------------------------------------------ Fluent Speech Commands
FSC_INTENTS = [("activate", "lights", "kitchen"), ("deactivate", "music", "none"),
               ("increase", "volume", "none")]


def make_fluent_commands(root, per_split: int = 6) -> Dict[str, Path]:
    """``data/{train,valid,test}_data.csv`` + ``wavs/speakers/<spk>/<n>.wav``."""
    root = Path(root) / "fluent_speech_commands_dataset"
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        lines = ["index,path,speakerId,transcription,action,object,location"]
        for n in range(per_split):
            action, obj, location = FSC_INTENTS[n % len(FSC_INTENTS)]
            rel = f"wavs/speakers/spk{n % 2}/{split}-{n}.wav"
            write_wave(root / rel, seconds=0.5, freq=200.0 + 100 * (n % 3), seed=n)
            lines.append(f"{n},{rel},spk{n % 2},some words,{action},{obj},{location}")
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return {"root": root}


# ------------------------------------------------------------------------------ Audio SNIPS
SNIPS_VOICES = {"train": ["Ivy", "Joanna"], "valid": ["Aditi"], "test": ["Brian"]}
SNIPS_UTTERANCES = [
    ("play some jazz", "O O B-genre"),
    ("weather in paris", "O O B-city"),
    ("play music now", "O O O"),
]


def make_snips(root) -> Dict[str, Path]:
    """``<split>/<Voice>-snips-<split>-<n>.wav``, ``all.iob.snips.txt``, ``all-trans.txt``, ``slots.txt``."""
    root = Path(root) / "SNIPS"
    iob, trans = [], []
    for split, voices in SNIPS_VOICES.items():
        for voice in voices:
            for n, (text, tags) in enumerate(SNIPS_UTTERANCES):
                uid = f"{voice}-snips-{split}-{n}"
                write_wave(root / split / f"{uid}.wav", seconds=0.6, freq=180.0 + 60 * n, seed=n)
                slots = " ".join(t[2:] if t.startswith("B-") else t for t in tags.split())
                iob.append(f"{uid} BOS {text.upper()} EOS\tO {slots} intent_{n}")
                trans.append(f"{uid} {text.upper()}")
    (root / "all.iob.snips.txt").write_text("\n".join(iob) + "\n")
    (root / "all-trans.txt").write_text("\n".join(trans) + "\n")
    (root / "slots.txt").write_text("O\ngenre\ncity\n")
    return {"root": root, "slots": root / "slots.txt"}


# ---------------------------------------------------------------------------------- VoxCeleb1
def make_voxceleb1(root, speakers: int = 3, per_speaker: int = 3, seconds: float = 2.5
                   ) -> Dict[str, Path]:
    """``{dev,test}/wav/id1XXXX/<video>/<n>.wav`` + ``iden_split.txt`` + ``veri_test2.txt``."""
    root = Path(root) / "VoxCeleb1"
    split_lines = []
    for s in range(speakers):
        spk = f"id{10001 + s}"
        for n in range(per_speaker):
            rel = f"{spk}/vid{n % 2}/{n + 1:05d}.wav"
            write_wave(root / "dev" / "wav" / rel, seconds=seconds, freq=120.0 + 70 * s,
                       seed=s * 10 + n)
            split_lines.append(f"{(n % 3) + 1} {rel}")
    test_files = []
    for s in range(2):
        spk = f"id{10270 + s}"
        for n in range(2):
            rel = f"{spk}/tvid/{n + 1:05d}.wav"
            write_wave(root / "test" / "wav" / rel, seconds=seconds, freq=300.0 + 90 * s,
                       seed=500 + s * 10 + n)
            test_files.append(rel)
    (root / "iden_split.txt").write_text("\n".join(split_lines) + "\n")
    trials = [f"1 {test_files[0]} {test_files[1]}", f"0 {test_files[0]} {test_files[2]}",
              f"1 {test_files[2]} {test_files[3]}", f"0 {test_files[1]} {test_files[3]}"]
    (root / "veri_test2.txt").write_text("\n".join(trials) + "\n")
    return {"root": root, "split": root / "iden_split.txt", "trials": root / "veri_test2.txt"}


# ------------------------------------------------------------------------------------ IEMOCAP
IEMOCAP_EMOS = ["neu", "hap", "ang", "sad", "exc", "fru"]


def make_iemocap(root, sessions: int = 5, per_session: int = 6) -> Dict[str, Path]:
    """``Session<k>/sentences/wav/<dialog>/<utt>.wav`` + ``dialog/EmoEvaluation/<dialog>.txt``."""
    root = Path(root) / "IEMOCAP_full_release"
    for k in range(1, sessions + 1):
        dialog = f"Ses0{k}F_impro01"
        base = root / f"Session{k}"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for n in range(per_session):
            utt = f"{dialog}_{'F' if n % 2 else 'M'}{n:03d}"
            write_wave(base / "sentences" / "wav" / dialog / f"{utt}.wav", seconds=0.6,
                       freq=150.0 + 50 * (n % 4), seed=k * 100 + n)
            lines.append(f"[{n:.4f} - {n + 0.6:.4f}]\t{utt}\t{IEMOCAP_EMOS[n % 6]}\t[2.5, 2.5, 2.5]")
        label_dir = base / "dialog" / "EmoEvaluation"
        label_dir.mkdir(parents=True, exist_ok=True)
        (label_dir / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return {"root": root}


# ------------------------------------------------------------------------------------ QUESST14
def make_quesst14(root, docs: int = 4, queries: int = 2) -> Dict[str, Path]:
    """``Audio/``, ``dev_queries/``, ``eval_queries/`` and ``scoring/language_key_*.lst``."""
    root = Path(root) / "quesst14Database"
    (root / "scoring").mkdir(parents=True, exist_ok=True)

    def listing(folder: str, stem: str, count: int, seed: int) -> List[str]:
        lines = []
        for n in range(count):
            name = f"{stem}_{n + 1:05d}.wav"
            write_wave(root / folder / name, seconds=1.0 if folder == "Audio" else 0.4,
                       freq=200.0 + 80 * n, seed=seed + n)
            lines.append(f"quesst14Database/{folder}/{name} nnenglish")
        return lines

    keys = {
        "utterances": listing("Audio", "quesst14", docs, 0),
        "dev": listing("dev_queries", "quesst14_dev", queries, 100),
        "eval": listing("eval_queries", "quesst14_eval", queries, 200),
    }
    for key, lines in keys.items():
        lines.append(f"quesst14Database/Audio/other_lang.wav nnother")
        (root / "scoring" / f"language_key_{key}.lst").write_text("\n".join(lines) + "\n")
    return {"root": root}


# ------------------------------------------------------------------------------- diarization
def make_diarization(root, recordings: int = 2, seconds: float = 4.0) -> Dict[str, Path]:
    """Kaldi-style ``<split>/{wav.scp,segments,utt2spk,rttm}`` (two speakers per recording)."""
    root = Path(root) / "diarization"
    for split in ("train", "dev", "test"):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        scp, segments, utt2spk, rttm = [], [], [], []
        for r in range(recordings):
            rec = f"{split}_mix{r}"
            wav = write_wave(root / "wav" / f"{rec}.wav", seconds=seconds, freq=160.0 + 50 * r,
                             seed=r)
            scp.append(f"{rec} {wav}")
            for spk, (start, end) in enumerate([(0.0, 2.5), (1.5, 4.0)]):
                utt = f"spk{r}{spk}_{rec}"
                segments.append(f"{utt} {rec} {start:.2f} {end:.2f}")
                utt2spk.append(f"{utt} spk{r}{spk}")
                rttm.append(f"SPEAKER {rec} 1 {start:.2f} {end - start:.2f} <NA> <NA> spk{r}{spk} <NA> <NA>")
        for name, lines in (("wav.scp", scp), ("segments", segments), ("utt2spk", utt2spk),
                            ("rttm", rttm)):
            (folder / name).write_text("\n".join(lines) + "\n")
    return {"root": root}


# --------------------------------------------------------------------------- plugin upstream
# HuBERT's conv arithmetic (stride 320, receptive field 400) with tiny widths: 20 ms frames.
TINY_CNN = ([{"channels": 8, "kernel": 10, "stride": 5}]
            + [{"channels": 8, "kernel": 3, "stride": 2}] * 4
            + [{"channels": 8, "kernel": 2, "stride": 2}] * 2)
TINY_ENCODER = {"dim": 16, "ffn_dim": 24, "num_heads": 2, "num_layers": 2, "pos_conv_kernel": 8,
                "pos_conv_groups": 2}


def make_student_checkpoint(path, family: str = "distilhubert", seed: int = 0) -> Path:
    """A tiny randomly initialised s3prl-distill student checkpoint (heads dropped on load)."""
    import torch

    from s3prl_distill.checkpoint import save_student
    from s3prl_distill.config import from_dict
    from s3prl_distill.models import StudentConfig, build_student

    if family == "fithubert":  # transformer at half the CNN rate: hidden states at 640 samples
        data = {"family": family, "cnn": {"layers": TINY_CNN}, "encoder": TINY_ENCODER,
                "time_reduction": 2, "teacher_dim": 16, "teacher_layers": 2,
                "heads": [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"}
                          for i in (1, 2)]}
    else:
        data = {"family": family, "cnn": {"layers": TINY_CNN}, "encoder": TINY_ENCODER,
                "teacher_dim": 16,
                "heads": [{"student_layer": 2, "teacher_layer": t} for t in (4, 8)]}
    torch.manual_seed(seed)
    student = build_student(from_dict(StudentConfig, data, where="tests/superb_corpora.py"))
    path = Path(path)
    save_student(path, student)
    return path


# --------------------------------------------------- S3PRL's original ctc configs (its schema)
def s3prl_libriphone_corpus(librispeech, lexicon, batch_size: int = 16) -> Dict:
    """``downstream_expert.corpus`` of S3PRL's ``downstream/ctc/libriphone.yaml``: its keys and
    values, with the paths pointed at ``librispeech`` / ``lexicon`` and no worker processes."""
    return {"name": "libriphone", "path": str(librispeech), "lexicon": [str(lexicon)],
            "train": ["train-clean-100"], "dev": ["dev-clean"], "test": ["test-clean"],
            "bucketing": True, "batch_size": batch_size, "num_workers": 0}


def s3prl_snips_corpus(snips_root, batch_size: int = 32) -> Dict:
    """``downstream_expert.corpus`` of S3PRL's ``downstream/ctc/snips.yaml`` (its keys; the voice
    lists are this tiny corpus's, one or two per split as SNIPS_VOICES)."""
    return {"name": "snips", "path": str(snips_root), "train": ["train"], "dev": ["valid"],
            "test": ["test"], "bucketing": True, "batch_size": batch_size,
            **{f"{split}_speakers": list(v) for split, v in SNIPS_VOICES.items()},
            "num_workers": 0}
