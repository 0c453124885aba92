"""s3prl_distill.superb: the PR/SF corpus readers, the catalyst stand-in and the ASV CPU fix."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import superb
from s3prl_distill.superb.ctc_corpus import BucketedTextDataset
from s3prl_distill.superb.ctc_corpus.libriphone import LibriPhoneDataset, read_lexicon
from s3prl_distill.superb.ctc_corpus.snips import SnipsDataset
from s3prl_distill.superb.samplers import DistributedSamplerWrapper
from superb_corpora import (
    LIBRI_LEXICON,
    LIBRI_TEXT,
    SNIPS_VOICES,
    make_librispeech,
    make_snips,
    s3prl_libriphone_corpus,
    s3prl_snips_corpus,
)


def _phone_tokenizer():
    from s3prl.downstream.ctc.text import load_text_encoder

    return load_text_encoder("word", superb.data_file("phoneme.txt"))


def test_install_is_idempotent_and_wires_ctc_corpus():
    superb.install()
    superb.install()
    assert superb.installed()
    data = importlib.import_module("s3prl.downstream.ctc.data")
    libriphone = importlib.import_module("s3prl.downstream.ctc.corpus.libriphone")
    assert libriphone.LibriPhoneDataset is LibriPhoneDataset
    assert importlib.import_module("s3prl.downstream.ctc.corpus.snips").SnipsDataset is SnipsDataset
    assert data.create_dataset  # S3PRL's module imports our package by relative import


def test_catalyst_sampler_importable_and_splits_a_weighted_sampler():
    superb.install()
    from catalyst.data.sampler import DistributedSamplerWrapper as Wrapper

    weights = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    base = torch.utils.data.WeightedRandomSampler(weights, num_samples=6, replacement=True)
    shares = []
    for rank in range(2):
        sampler = Wrapper(base, num_replicas=2, rank=rank, shuffle=False)
        drawn = list(iter(sampler))
        assert len(drawn) == 3 and set(drawn) <= {1, 3, 5}
        shares.append(drawn)
    assert Wrapper is DistributedSamplerWrapper or Wrapper.__name__ == "DistributedSamplerWrapper"


def test_asv_expert_forward_is_cpu_safe():
    superb.install()
    from s3prl_distill import compat

    compat.apply()
    module = importlib.import_module("s3prl.downstream.sv_voxceleb1.expert")
    assert getattr(module.DownstreamExpert.forward, "_s3prl_distill_cpu_safe", False)
    if not torch.cuda.is_available():
        wrapped = superb._cpu_safe_forward(lambda x: x.cuda())
        x = torch.ones(2)
        assert wrapped(x) is x
        with pytest.raises((AssertionError, RuntimeError)):
            x.cuda()  # restored afterwards


def test_bucketed_dataset_buckets_stay_in_range():
    items = [(f"f{i}", [0] * i) for i in range(1, 6)]
    single = BucketedTextDataset(items, bucket_size=1)
    assert single[0] == ("f5", [0] * 5)  # longest first
    buckets = BucketedTextDataset(items, bucket_size=2, ascending=True)
    assert [p for p, _ in buckets[4]] == ["f4", "f5"]
    with pytest.raises(ValueError):
        BucketedTextDataset(items, bucket_size=0)


def test_libriphone_reads_librispeech_with_s3prl_signature(tmp_path):
    tokenizer = _phone_tokenizer()
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("HELLO HH AH0 L OW1\nHELLO HH EH0 L OW1\n" + "".join(
        f"{w} {p}\n" for w, p in LIBRI_LEXICON.items() if w != "HELLO"))
    # S3PRL's call: LibriPhoneDataset(split, tokenizer, bucket_size, path=..., lexicon=..., **corpus)
    data = LibriPhoneDataset(["dev-clean"], tokenizer, 1, path=str(corpus["root"]),
                             lexicon=[str(lexicon)], name="libriphone", bucketing=True)
    assert len(data) == 4 and all(p.endswith(".flac") for p in data.file_list)
    decoded = sorted(tokenizer.decode(ids) for ids in data.text)
    expected = sorted(" ".join(p for w in text.split() for p in
                               ("HH AH0 L OW1" if w == "HELLO" else LIBRI_LEXICON[w]).split())
                      for text in LIBRI_TEXT)
    assert decoded == expected  # first pronunciation wins
    assert [len(t) for t in data.text] == sorted((len(t) for t in data.text), reverse=True)
    small = tmp_path / "small.txt"
    small.write_text("HELLO HH AH0 L OW1\nWORLD W ER1 L D\n")
    with pytest.raises(ValueError, match=r"word 'GOOD' of 101-201-0001 is in no lexicon"):
        LibriPhoneDataset(["dev-clean"], tokenizer, 1, path=str(corpus["root"]), lexicon=[str(small)])
    with pytest.raises(ValueError, match="corpus.path is missing.*csv_dir.*no longer read"):
        LibriPhoneDataset("dev.csv", tokenizer, 1, lexicon=[str(lexicon)], csv_dir=str(tmp_path))
    with pytest.raises(ValueError, match="LibriSpeech split 'train-other-500' folder not found"):
        LibriPhoneDataset(["train-other-500"], tokenizer, 1, path=str(corpus["root"]),
                          lexicon=[str(lexicon)])


def _first_batch(split, tokenizer, corpus):
    """S3PRL's own ctc data pipeline (load_dataset -> our reader -> collect_audio_batch)."""
    from s3prl.downstream.ctc.data import load_dataset

    loader = load_dataset(split, tokenizer, dict(corpus))
    return loader, next(iter(loader))


def test_s3prl_original_libriphone_schema_through_s3prl_data_pipeline(tmp_path):
    superb.install()
    compat_apply()
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    tokenizer = _phone_tokenizer()
    config = s3prl_libriphone_corpus(corpus["root"], corpus["lexicon"], batch_size=2)
    loader, (wavs, texts, names) = _first_batch("train", tokenizer, config)
    assert len(loader.dataset) == 4 and len(wavs) == 2 and len(texts) == 2  # one bucket of 2
    assert all(w.ndim == 1 and w.shape[0] >= 9600 for w in wavs)
    assert all(n.startswith("100-200-") for n in names)
    _, (wavs, texts, names) = _first_batch("test", tokenizer, config)
    assert len(wavs) == 1 and names[0].startswith("102-202-")


def test_s3prl_original_snips_schema_through_s3prl_data_pipeline(tmp_path):
    from s3prl.downstream.ctc.text import load_text_encoder

    superb.install()
    compat_apply()
    corpus = make_snips(tmp_path)
    tokenizer = load_text_encoder("character-slot", superb.data_file("character.txt"),
                                  str(corpus["slots"]))
    config = s3prl_snips_corpus(corpus["root"], batch_size=2)
    loader, (wavs, texts, names) = _first_batch("train", tokenizer, config)
    assert len(loader.dataset) == 6 and len(wavs) == 2
    assert all(n.split("-")[0] in SNIPS_VOICES["train"] for n in names)
    loader, _ = _first_batch("dev", tokenizer, config)
    assert sorted(p.rsplit("/", 1)[1].split("-")[0] for p in loader.dataset.file_list) == ["Aditi"] * 3


def compat_apply():
    from s3prl_distill import compat

    compat.apply()


def test_only_readers_missing_from_s3prl_are_installed(tmp_path, monkeypatch):
    """A git checkout of S3PRL ships corpus/libriphone.py and snips.py: then S3PRL's are used."""
    ctc = tmp_path / "s3prl" / "downstream" / "ctc"
    (ctc / "corpus").mkdir(parents=True)
    monkeypatch.setattr(superb, "_s3prl_ctc_folders", lambda: [str(ctc)])
    for name in ("s3prl.downstream.ctc.corpus", "s3prl.downstream.ctc.corpus.libriphone",
                 "s3prl.downstream.ctc.corpus.snips"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (ctc / "corpus" / "libriphone.py").write_text("")
    assert superb.missing_ctc_readers() == ["snips"]
    assert superb._install_ctc_corpus() == ["snips"]
    assert sys.modules["s3prl.downstream.ctc.corpus.snips"].SnipsDataset is SnipsDataset
    assert "s3prl.downstream.ctc.corpus.libriphone" not in sys.modules  # S3PRL's file wins
    assert "s3prl.downstream.ctc.corpus" not in sys.modules  # S3PRL's folder is the package
    (ctc / "corpus" / "snips.py").write_text("")
    monkeypatch.delitem(sys.modules, "s3prl.downstream.ctc.corpus.snips")
    assert superb.missing_ctc_readers() == [] and superb._install_ctc_corpus() == []
    assert "s3prl.downstream.ctc.corpus.snips" not in sys.modules


def test_lexicon_rejects_unknown_phone(tmp_path):
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("HELLO HH AH0 L OW9\n")
    with pytest.raises(ValueError, match=r"lex.txt:1: phone\(s\) \['OW9'\]"):
        read_lexicon([str(lexicon)], {"HH": 0, "AH0": 1, "L": 2})


def test_snips_reader_splits_by_voice(tmp_path):
    from s3prl.downstream.ctc.text import load_text_encoder

    corpus = make_snips(tmp_path)
    tokenizer = load_text_encoder("character-slot", superb.data_file("character.txt"),
                                  str(corpus["slots"]))
    speakers = {f"{k}_speakers": v for k, v in SNIPS_VOICES.items()}
    train = SnipsDataset(["train"], tokenizer, 1, str(corpus["root"]), **speakers)
    assert len(train) == 6 and all("/train/" in p for p in train.file_list)
    decoded = [tokenizer.decode(t) for t in train.text]
    assert "PLAY SOME B-genre JAZZ E-genre" in decoded
    plain = load_text_encoder("character", superb.data_file("character.txt"))
    test = SnipsDataset(["test"], plain, 1, str(corpus["root"]), **speakers)
    assert sorted(plain.decode(t) for t in test.text) == ["PLAY MUSIC NOW", "PLAY SOME JAZZ",
                                                           "WEATHER IN PARIS"]
    with pytest.raises(ValueError, match="valid_speakers"):
        SnipsDataset(["valid"], plain, 1, str(corpus["root"]), train_speakers=["Ivy"])


def test_data_files():
    phones = open(superb.data_file("phoneme.txt")).read().split()
    assert len(phones) == 71 and phones[:3] == ["SIL", "SPN", "AA0"] and phones[-1] == "ZH"
    chars = [line.rstrip("\n") for line in open(superb.data_file("character.txt"))]
    assert chars[0] == " " and chars[1] == "A" and chars[-1] == "'" and len(chars) == 28
    with pytest.raises(FileNotFoundError):
        superb.data_file("nope.txt")
