"""Generate the mini-SUPERB corpus: seeded synthetic speech in the real SUPERB layouts.

Speakers come from one seeded pool (:func:`speakers.speaker_pool`), split once into voices seen in
training and voices held out. KS, IC and PR train on seen voices and are tested on held-out ones
(as the real tasks are); SID is closed-set (same speakers everywhere, different sessions and
sentences per split, as VoxCeleb1's identification split). The distillation data
(:func:`distill_files`) is the training audio of every task: held-out voices never reach it.

Each utterance: eSpeak NG at 22,050 Hz with per-utterance tempo/pitch jitter, resampled to 16 kHz,
random gain and additive noise at a random SNR. Everything is drawn from ``random.Random`` /
``numpy`` generators seeded from ``(seed, task)``, so a seed gives the same corpus byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import random
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from s3prl_distill.audio import resample, write_audio
from s3prl_distill.config import ConfigError, to_dict
from s3prl_distill.minisuperb import layouts, text
from s3prl_distill.minisuperb.espeak import Voice, engine
from s3prl_distill.minisuperb.phones import build_lexicon
from s3prl_distill.minisuperb.speakers import speaker_pool

logger = logging.getLogger(__name__)

__all__ = ["CorpusConfig", "PRESETS", "generate_corpus", "distill_files", "KS_CLASSES"]

SAMPLE_RATE = 16000
KS_CLASSES = list(text.KEYWORDS) + ["_unknown_", "_silence_"]
MANIFEST = "minisuperb.json"


@dataclass
class CorpusConfig:
    """Sizes of the corpus (speakers are counted per task and split)."""

    seen_voices: int = 60            # pool of voices used for training splits (and SID)
    heldout_voices: int = 24         # pool of voices only in dev/test of KS, IC, PR
    ks_train_speakers: int = 50
    ks_dev_speakers: int = 10
    ks_test_speakers: int = 14
    ks_noise_files: int = 6          # _background_noise_ files, 20 s each
    ks_test_silence: int = 40        # 1 s noise clips in the test set's _silence_
    ic_train_speakers: int = 40
    ic_dev_speakers: int = 8
    ic_test_speakers: int = 12
    ic_utts_per_speaker: int = 12
    sid_speakers: int = 24
    sid_train_utts: int = 10         # per speaker (from 2 sessions)
    sid_dev_utts: int = 3            # per speaker (third session)
    sid_test_utts: int = 4           # per speaker (fourth session)
    pr_train_speakers: int = 40
    pr_dev_speakers: int = 8
    pr_test_speakers: int = 12
    pr_utts_per_speaker: int = 6
    snr_db: Tuple[float, float] = (15.0, 40.0)

    def validate(self) -> None:
        for split in ("dev", "test"):
            for task in ("ks", "ic", "pr"):
                if getattr(self, f"{task}_{split}_speakers") > self.heldout_voices:
                    raise ConfigError(f"{task}_{split}_speakers exceeds heldout_voices "
                                      f"({self.heldout_voices})")
        for task in ("ks", "ic", "pr"):
            if getattr(self, f"{task}_train_speakers") > self.seen_voices:
                raise ConfigError(f"{task}_train_speakers exceeds seen_voices ({self.seen_voices})")
        if self.ic_train_speakers * self.ic_utts_per_speaker < len(text.INTENTS):
            raise ConfigError(f"ic_train_speakers * ic_utts_per_speaker must cover all "
                              f"{len(text.INTENTS)} intents")
        if self.sid_speakers > self.seen_voices:
            raise ConfigError(f"sid_speakers exceeds seen_voices ({self.seen_voices})")


PRESETS: Dict[str, CorpusConfig] = {
    "full": CorpusConfig(),
    "quick": CorpusConfig(seen_voices=16, heldout_voices=7, ks_train_speakers=12,
                          ks_dev_speakers=3, ks_test_speakers=4, ks_noise_files=2,
                          ks_test_silence=8, ic_train_speakers=10, ic_dev_speakers=3,
                          ic_test_speakers=4, ic_utts_per_speaker=14, sid_speakers=10,
                          sid_train_utts=5, sid_dev_utts=2, sid_test_utts=2,
                          pr_train_speakers=10, pr_dev_speakers=3, pr_test_speakers=4,
                          pr_utts_per_speaker=5),
    "tiny": CorpusConfig(seen_voices=6, heldout_voices=3, ks_train_speakers=3, ks_dev_speakers=1,
                         ks_test_speakers=1, ks_noise_files=1, ks_test_silence=2,
                         ic_train_speakers=3, ic_dev_speakers=1, ic_test_speakers=1,
                         ic_utts_per_speaker=10, sid_speakers=3, sid_train_utts=2,
                         sid_dev_utts=1, sid_test_utts=1, pr_train_speakers=2,
                         pr_dev_speakers=1, pr_test_speakers=1, pr_utts_per_speaker=2),
}


def _rng(seed: int, task: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}/{task}".encode()).hexdigest()[:16], 16))


class _Speaker:
    """Synthesizes utterances of one voice with jitter, gain and noise (16 kHz float32)."""

    def __init__(self, voice: Voice, rng: random.Random, snr_db: Tuple[float, float]):
        self.voice = voice
        self.rng = rng
        self.np_rng = np.random.default_rng(rng.getrandbits(63))
        self.snr_db = snr_db

    def say(self, words: str, snr_db: Tuple[float, float] = None) -> np.ndarray:
        """Returns np.ndarray [S] float32, 16 kHz."""
        rng = self.rng
        v = self.voice
        jittered = replace(v, rate=max(80, int(v.rate * rng.uniform(0.92, 1.08))),
                           pitch=min(100, max(0, v.pitch + rng.randint(-5, 5))))
        eng = engine()
        wav = eng.synthesize(words, jittered, seed=rng.getrandbits(31))
        wav = resample(torch.from_numpy(wav), eng.sample_rate, SAMPLE_RATE).numpy()
        low, high = snr_db or self.snr_db
        power = float(np.mean(wav ** 2)) + 1e-10
        snr = rng.uniform(low, high)
        noise = self.np_rng.standard_normal(len(wav)).astype(np.float32)
        wav = wav + noise * np.sqrt(power / 10 ** (snr / 10))
        wav = wav * (rng.uniform(0.3, 0.9) / (np.abs(wav).max() + 1e-8))
        return wav.astype(np.float32)


def _noise(kind: str, samples: int, np_rng: np.random.Generator) -> np.ndarray:
    """Background noise [S] float32: white, pink, brown or hum (mains hum + hiss)."""
    white = np_rng.standard_normal(samples)
    if kind == "white":
        out = white
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        freqs = np.arange(len(spec)) + 1.0
        spec = spec / (np.sqrt(freqs) if kind == "pink" else freqs)
        out = np.fft.irfft(spec, n=samples)
    else:
        t = np.arange(samples) / SAMPLE_RATE
        base = np_rng.uniform(48, 62)
        out = sum(np.sin(2 * np.pi * base * h * t) / h for h in (1, 2, 3, 5)) + 0.2 * white
    out = out / (np.abs(out).max() + 1e-8) * np_rng.uniform(0.05, 0.5)
    return out.astype(np.float32)


def _fit_second(wav: np.ndarray, rng: random.Random) -> np.ndarray:
    """Place a word in a 1 s clip at a random offset (crop the centre if it is longer)."""
    if len(wav) >= SAMPLE_RATE:
        start = (len(wav) - SAMPLE_RATE) // 2
        return wav[start:start + SAMPLE_RATE]
    out = np.zeros(SAMPLE_RATE, dtype=np.float32)
    offset = rng.randint(0, SAMPLE_RATE - len(wav))
    out[offset:offset + len(wav)] = wav
    return out


def _write(path: Path, wav: np.ndarray) -> None:
    write_audio(path, torch.from_numpy(wav), SAMPLE_RATE)


def _gen_ks(root: Path, cfg: CorpusConfig, seen: List[Voice], held: List[Voice], seed: int):
    rng = _rng(seed, "ks")
    base, test_base = root / layouts.KS_DIR, root / layouts.KS_TEST_DIR
    words = list(text.KEYWORDS) + list(text.UNKNOWN_WORDS)
    splits = [("train", rng.sample(seen, cfg.ks_train_speakers)),
              ("valid", rng.sample(held, cfg.ks_dev_speakers))]
    lists = {"valid": [], "test": []}
    count = 0
    for split, voices in splits:
        for i, voice in enumerate(voices):
            spk = layouts.ks_speaker_id(count, split)
            count += 1
            talker = _Speaker(voice, rng, cfg.snr_db)
            for word in words:
                rel = f"{word}/{spk}_nohash_0.wav"
                _write(base / rel, _fit_second(talker.say(word), rng))
                if split == "valid":
                    lists["valid"].append(rel)
    (base / "validation_list.txt").write_text("".join(f"{r}\n" for r in lists["valid"]))
    np_rng = np.random.default_rng(rng.getrandbits(63))
    kinds = ["white", "pink", "brown", "hum"]
    for k in range(cfg.ks_noise_files):
        kind = kinds[k % len(kinds)]
        _write(base / "_background_noise_" / f"{kind}_noise_{k}.wav",
               _noise(kind, 20 * SAMPLE_RATE, np_rng))
    test_voices = [v for v in held if v not in splits[1][1]]
    if len(test_voices) < cfg.ks_test_speakers:
        test_voices = held
    for voice in rng.sample(test_voices, cfg.ks_test_speakers):
        spk = layouts.ks_speaker_id(count, "test")
        count += 1
        talker = _Speaker(voice, rng, cfg.snr_db)
        for word in words:
            label = word if word in text.KEYWORDS else "_unknown_"
            rel = f"{label}/{spk}_nohash_{0 if label == word else words.index(word)}.wav"
            clip = _fit_second(talker.say(word), rng)
            _write(test_base / rel, clip)
            # as in the real release, test speakers are also in the main folder, listed in
            # testing_list.txt (S3PRL's hash split drops them from train and dev)
            _write(base / word / f"{spk}_nohash_0.wav", clip)
            lists["test"].append(f"{word}/{spk}_nohash_0.wav")
    for k in range(cfg.ks_test_silence):
        _write(test_base / "_silence_" / f"silence_{k:04d}.wav",
               _noise(kinds[k % len(kinds)], SAMPLE_RATE, np_rng))
    (base / "testing_list.txt").write_text("".join(f"{r}\n" for r in lists["test"]))


def _voices_for(rng: random.Random, seen: List[Voice], held: List[Voice], n_train: int,
                n_dev: int, n_test: int) -> List[Tuple[str, List[Voice]]]:
    dev_test = rng.sample(held, min(len(held), n_dev + n_test))
    dev = dev_test[:n_dev]
    test = dev_test[n_dev:] if len(dev_test) >= n_dev + n_test else rng.sample(held, n_test)
    return [("train", rng.sample(seen, n_train)), ("dev", dev), ("test", test)]


def _gen_ic(root: Path, cfg: CorpusConfig, seen: List[Voice], held: List[Voice], seed: int):
    rng = _rng(seed, "ic")
    base = root / layouts.IC_DIR
    names = {"train": "train", "dev": "valid", "test": "test"}
    for split, voices in _voices_for(rng, seen, held, cfg.ic_train_speakers, cfg.ic_dev_speakers,
                                     cfg.ic_test_speakers):
        rows = []
        cycle: List[text.Intent] = []  # every intent once before any repeats (train covers all)
        for voice in voices:
            spk = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                          for _ in range(16))
            talker = _Speaker(voice, rng, cfg.snr_db)
            for _ in range(cfg.ic_utts_per_speaker):
                if not cycle:
                    cycle = rng.sample(list(text.INTENTS), len(text.INTENTS))
                intent = cycle.pop()
                phrase = rng.choice(intent.phrasings)
                rel = f"wavs/speakers/{spk}/{uuid.UUID(int=rng.getrandbits(128))}.wav"
                _write(base / rel, talker.say(phrase))
                rows.append({"path": rel, "speakerId": spk, "transcription": phrase.capitalize(),
                             "action": intent.action, "object": intent.object,
                             "location": intent.location})
        layouts.write_ic_csv(base / "data" / f"{names[split]}_data.csv", rows)


def _gen_sid(root: Path, cfg: CorpusConfig, seen: List[Voice], seed: int):
    rng = _rng(seed, "sid")
    base = root / layouts.SID_DIR
    entries = []
    per_split = [(1, cfg.sid_train_utts), (2, cfg.sid_dev_utts), (3, cfg.sid_test_utts)]
    total = sum(n for _, n in per_split)
    for k, voice in enumerate(rng.sample(seen, cfg.sid_speakers)):
        spk = f"id{10001 + k}"
        talker = _Speaker(voice, rng, cfg.snr_db)
        sents = text.sentences(rng, total)
        n = 0
        for split, count in per_split:
            # sessions ("videos"): train uses two, dev and test one each, with their own noise
            sessions = 2 if split == 1 else 1
            videos = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_-") for _ in range(11))
                      for _ in range(sessions)]
            snrs = [(lo, lo + 10.0) for lo in (rng.uniform(cfg.snr_db[0], cfg.snr_db[1] - 10)
                                                for _ in videos)]
            for j in range(count):
                v = j % sessions
                rel = f"{spk}/{videos[v]}/{n + 1:05d}.wav"
                _write(base / "dev" / "wav" / rel, talker.say(sents[n], snrs[v]))
                entries.append((split, rel))
                n += 1
    layouts.write_sid_split(base / "iden_split.txt", entries)


def _gen_pr(root: Path, cfg: CorpusConfig, seen: List[Voice], held: List[Voice], seed: int):
    rng = _rng(seed, "pr")
    base = root / layouts.LIBRI_DIR
    used_words = set()
    spk_number = 100
    for split, voices in _voices_for(rng, seen, held, cfg.pr_train_speakers, cfg.pr_dev_speakers,
                                     cfg.pr_test_speakers):
        name = layouts.PR_SPLITS[split]
        for voice in voices:
            spk_number += rng.randint(1, 97)
            spk, chapter = str(spk_number), str(rng.randint(1000, 99999))
            talker = _Speaker(voice, rng, cfg.snr_db)
            folder = base / name / spk / chapter
            lines = []
            for u, sentence in enumerate(text.sentences(rng, cfg.pr_utts_per_speaker)):
                uid = f"{spk}-{chapter}-{u:04d}"
                _write(folder / f"{uid}.flac", talker.say(sentence))
                lines.append((uid, sentence))
                used_words.update(sentence.split())
            layouts.write_librispeech_transcripts(folder, spk, chapter, lines)
    layouts.write_lexicon(root / layouts.LEXICON,
                          build_lexicon(set(text.vocabulary()) | used_words, engine()))


_JOBS = {"ks": _gen_ks, "ic": _gen_ic, "sid": _gen_sid, "pr": _gen_pr}


def _run_task(task: str, root: str, cfg: CorpusConfig, seen, held, seed: int) -> float:
    """Write one task (in a worker process); returns its wall time in seconds."""
    import s3prl_distill  # noqa: F401  (torchaudio importable in the spawned process)

    started = time.time()
    if task == "sid":
        _gen_sid(Path(root), cfg, seen, seed)
    else:
        _JOBS[task](Path(root), cfg, seen, held, seed)
    return time.time() - started


def generate_corpus(root, cfg: CorpusConfig, seed: int = 0, tasks=("ks", "ic", "sid", "pr"),
                    workers: int = 2):
    """Write the corpus for ``tasks`` under ``root`` (skipped if a manifest with the same
    config and seed is already there), ``workers`` tasks at a time. Returns the manifest dict.

    Raises:
        ValueError: if ``root`` holds a corpus generated with another config or seed.
    """
    root = Path(root)
    manifest_path = root / MANIFEST
    manifest = {"format": "s3prl_distill.minisuperb", "version": 1, "seed": seed,
                "config": to_dict(cfg), "tasks": sorted(tasks)}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in manifest} == manifest:
            logger.info("mini-SUPERB corpus already at %s (seed %d): reused", root, seed)
            return old
        raise ValueError(f"{root}: holds a mini-SUPERB corpus of another config/seed "
                         f"({manifest_path}); use an empty folder")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: not empty and holds no {MANIFEST}; use an empty folder")
    cfg.validate()
    pool = speaker_pool(_rng(seed, "speakers"), cfg.seen_voices + cfg.heldout_voices)
    seen, held = pool[:cfg.seen_voices], pool[cfg.seen_voices:]
    started = time.time()
    for task in tasks:
        if task not in _JOBS:
            raise ValueError(f"unknown mini-SUPERB task {task!r}; expected one of {sorted(_JOBS)}")
    root.mkdir(parents=True, exist_ok=True)
    # eSpeak NG carries hidden state from one utterance to the next (its output for the same
    # arguments drifts by a few samples within a process, whatever the seeds), so each task runs
    # in a fresh process: the same seed then gives the same bytes, and tasks run in parallel.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=max(1, min(workers, len(tasks))), maxtasksperchild=1) as pool:
        runs = [(task, pool.apply_async(_run_task, (task, str(root), cfg, seen, held, seed)))
                for task in tasks]
        for task, run in runs:
            logger.info("mini-SUPERB %s written in %.1f s", task.upper(), run.get())
    manifest["voices"] = {"seen": [v.__dict__ for v in seen], "heldout": [v.__dict__ for v in held]}
    logger.info("mini-SUPERB corpus written to %s in %.1f s", root, time.time() - started)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def distill_files(root) -> List[str]:
    """Audio of every task's training split (held-out voices excluded), sorted: [paths]."""
    root = Path(root)
    files: List[str] = []
    if (root / layouts.KS_DIR).exists():
        files += [p for p, _ in layouts.read_ks(root, KS_CLASSES)["train"] if "#" not in p]
    if (root / layouts.IC_DIR).exists():
        files += [p for p, _ in layouts.read_ic(root)["train"]]
    if (root / layouts.SID_DIR).exists():
        files += [p for p, _ in layouts.read_sid(root)["train"]]
    if (root / layouts.LIBRI_DIR).exists():
        files += [p for p, _ in layouts.read_pr(root)["train"]]
    return sorted(files)
