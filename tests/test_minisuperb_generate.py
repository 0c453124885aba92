"""mini-SUPERB generator: S3PRL's own dataset classes read its layouts; seeded determinism;
held-out voices; eSpeak -> ARPAbet phones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import s3prl_distill  # noqa: F401
from s3prl_distill import compat

pytest.importorskip("espeakng_loader")

from s3prl_distill.minisuperb import layouts, phones  # noqa: E402
from s3prl_distill.minisuperb.generate import (  # noqa: E402
    KS_CLASSES, PRESETS, distill_files, generate_corpus)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("minisuperb")
    generate_corpus(root, PRESETS["tiny"], seed=3)
    return root


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_ks_layout_read_by_s3prl(corpus):
    compat.apply()
    from s3prl_distill import superb

    superb.install()  # S3PRL's KS expert imports catalyst (broken on Python >= 3.10)
    from s3prl.downstream.speech_commands.dataset import (
        CLASSES, SpeechCommandsDataset, SpeechCommandsTestingDataset)
    from s3prl.downstream.speech_commands.expert import split_dataset

    train_list, valid_list = split_dataset(corpus / layouts.KS_DIR)
    ours = layouts.read_ks(corpus, KS_CLASSES)
    # same train/dev split as S3PRL's hash rule (noise slices aside)
    assert sorted(str(p) for _, p in train_list) == sorted(
        p for p, _ in ours["train"] if "#" not in p)
    assert sorted(str(p) for _, p in valid_list) == sorted(p for p, _ in ours["dev"] if "#" not in p)
    assert len(valid_list) > 0
    train = SpeechCommandsDataset(train_list, speech_commands_root=str(corpus / layouts.KS_DIR))
    labels = {train[i][1] for i in range(len(train))}
    assert CLASSES.index("_unknown_") in labels and CLASSES.index("_silence_") in labels
    wav, label, _ = train[len(train) - 1]  # a _silence_ crop of background noise
    assert wav.shape == (16000,) and label == CLASSES.index("_silence_")
    test = SpeechCommandsTestingDataset(
        speech_commands_test_root=str(corpus / layouts.KS_TEST_DIR))
    test_labels = {test[i][1] for i in range(len(test))}
    assert test_labels == set(range(len(CLASSES)))  # all 12 classes present
    assert test[0][0].shape == (16000,)


def test_ic_layout_read_by_s3prl(corpus):
    compat.apply()
    import pandas as pd
    from s3prl.downstream.fluent_commands.dataset import FluentCommandsDataset

    base = corpus / layouts.IC_DIR
    frames = {n: pd.read_csv(base / "data" / f"{n}_data.csv") for n in ("train", "valid", "test")}
    sy = {"action": {}, "object": {}, "location": {}}
    for slot in sy:  # as S3PRL's IC expert builds it
        for i, value in enumerate(dict.fromkeys(frames["train"][slot])):
            sy[slot][value] = i
    for name in ("valid", "test"):
        for slot in sy:
            assert set(frames[name][slot]) <= set(sy[slot]), (name, slot)
        # held-out speakers
        assert not set(frames[name]["speakerId"]) & set(frames["train"]["speakerId"])
    ds = FluentCommandsDataset(frames["test"], str(base), sy)
    wav, label, _ = ds[0]
    assert wav.ndim == 1 and wav.shape[0] > 4000 and label.shape == (3,)


def test_sid_layout_read_by_s3prl(corpus, tmp_path, monkeypatch):
    compat.apply()
    import s3prl.downstream.voxceleb1.dataset as vox

    monkeypatch.setattr(vox, "CACHE_PATH", str(tmp_path / "cache") + "/")
    base = corpus / layouts.SID_DIR
    sizes = {}
    for mode in ("train", "dev", "test"):
        ds = vox.SpeakerClassifiDataset(mode, base, str(base / "iden_split.txt"))
        sizes[mode] = len(ds)
        wav, label, _ = ds[0]
        assert wav.ndim == 1 and 0 <= label < PRESETS["tiny"].sid_speakers
    cfg = PRESETS["tiny"]
    assert sizes == {"train": cfg.sid_speakers * cfg.sid_train_utts,
                     "dev": cfg.sid_speakers * cfg.sid_dev_utts,
                     "test": cfg.sid_speakers * cfg.sid_test_utts}


def test_pr_layout_read_by_superb_reader(corpus, tmp_path):
    compat.apply()
    from s3prl.downstream.ctc.text import load_text_encoder
    from s3prl_distill.superb.ctc_corpus.libriphone import LibriPhoneDataset
    from s3prl_distill.superb.prepare import prepare_pr

    written = prepare_pr(corpus / layouts.LIBRI_DIR, [str(corpus / layouts.LEXICON)], tmp_path)
    tokenizer = load_text_encoder("word", str(written["vocab"]))
    ds = LibriPhoneDataset([layouts.PR_SPLITS["test"]], tokenizer, 1,
                           str(corpus / layouts.LIBRI_DIR), [str(corpus / layouts.LEXICON)])
    path, ids = ds[0]
    assert Path(path).suffix == ".flac" and Path(path).is_file() and len(ids) > 5
    ours = layouts.read_pr(corpus)
    spk = {s: {Path(p).parent.parent.name for p, _ in items} for s, items in ours.items()}
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["dev"]


def test_distill_files_are_training_audio_only(corpus):
    files = distill_files(corpus)
    held = set()
    for reader in (layouts.read_ic, layouts.read_pr):
        for split in ("dev", "test"):
            held |= {p for p, _ in reader(corpus)[split]}
    assert files and not set(files) & held
    assert not any(layouts.KS_TEST_DIR in f for f in files)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 5), (b, 5), (c, 6)):
        generate_corpus(root, PRESETS["tiny"], seed=seed, tasks=("sid",))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # regenerating into a folder holding the same corpus is a no-op; another seed is refused
    generate_corpus(a, PRESETS["tiny"], seed=5, tasks=("sid",))
    with pytest.raises(ValueError, match="another config/seed"):
        generate_corpus(a, PRESETS["tiny"], seed=7, tasks=("sid",))


def test_ks_speaker_ids_follow_the_hash_rule():
    for split in ("train", "valid", "test"):
        sid = layouts.ks_speaker_id(7, split)
        assert len(sid) == 8 and layouts.ks_split_of(sid) == split


def test_arpabet_mapping_and_vocab():
    from s3prl_distill.superb import data_file

    vocab = [l.strip() for l in open(data_file("phoneme.txt")) if l.strip()]
    assert list(phones.PHONE_VOCAB) == vocab
    assert phones.to_arpabet(["k", "'I", "tS", "@", "n"]) == ["K", "IH1", "CH", "AH0", "N"]
    assert phones.to_arpabet(["b", "'aI@", "t#"]) == ["B", "AY1", "ER0", "T"]
    with pytest.raises(phones.PhoneError, match="'Q!'"):
        phones.to_arpabet(["Q!"], "odd")


def test_lexicon_covers_every_word(corpus):
    from s3prl_distill.superb.ctc_corpus.libriphone import read_lexicon

    lex = read_lexicon([str(corpus / layouts.LEXICON)], {p: i for i, p in enumerate(phones.PHONE_VOCAB)})
    assert lex["KITCHEN"] == ["K", "IH1", "CH", "AH0", "N"] or "KITCHEN" not in lex
    assert all(tokens for tokens in lex.values())
