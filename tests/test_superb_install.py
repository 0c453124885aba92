"""s3prl_distill.superb: the PR/SF corpus readers, the catalyst stand-in and the ASV CPU fix."""

from __future__ import annotations

import csv
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
from superb_corpora import SNIPS_VOICES, make_snips


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


def test_libriphone_reads_csv_and_lexicon(tmp_path):
    tokenizer = _phone_tokenizer()
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("HELLO HH AH0 L OW1\nHELLO HH EH0 L OW1\nWORLD W ER1 L D\n")
    with open(tmp_path / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["wav_path", "transcription"])
        writer.writerow(["/a.flac", "HELLO WORLD"])
        writer.writerow(["/b.flac", "WORLD"])
    data = LibriPhoneDataset("train.csv", tokenizer, 1, [str(lexicon)], str(tmp_path))
    path, ids = data[0]
    assert path == "/a.flac"
    assert tokenizer.decode(ids) == "HH AH0 L OW1 W ER1 L D"  # first pronunciation wins
    (tmp_path / "bad.csv").write_text("wav_path,transcription\n/c.flac,GOODBYE\n")
    with pytest.raises(ValueError, match="bad.csv:2: word 'GOODBYE'"):
        LibriPhoneDataset("bad.csv", tokenizer, 1, [str(lexicon)], str(tmp_path))


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
