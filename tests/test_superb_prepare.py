"""Data preparation of the SUPERB recipes: official layout in, task files out, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import s3prl_distill  # noqa: F401
from s3prl_distill.commands import prepare as prepare_command
from s3prl_distill.superb import prepare, s3prl_caches
from s3prl_distill.superb.expdir import best_dev_checkpoint
from s3prl_distill.superb.prepare import PrepareError
from superb_corpora import (
    SNIPS_VOICES,
    make_diarization,
    make_fluent_commands,
    make_iemocap,
    make_librispeech,
    make_quesst14,
    make_snips,
    make_speech_commands,
    make_voxceleb1,
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Our cache folder (S3PRL's SID/ASV caches) inside the test's temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def test_pr_checks_words_and_writes_vocab(tmp_path):
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    out = prepare.prepare_pr(corpus["root"], [str(corpus["lexicon"])], tmp_path / "prep")
    assert out["train"] == corpus["root"] / "train-clean-100"  # what corpus.path/train name
    assert out["vocab"].read_text().split()[:2] == ["SIL", "SPN"]
    small = tmp_path / "small.txt"
    small.write_text("HELLO HH AH0 L OW1\n")
    with pytest.raises(PrepareError, match=r"word\(s\) are in no lexicon.*'GOOD'"):
        prepare.prepare_pr(corpus["root"], [str(small)], tmp_path / "prep2")


def test_asr_length_index_and_dictionary(tmp_path):
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    out = prepare.prepare_asr(corpus["root"], tmp_path / "prep")
    lines = out["dev-clean"].read_text().splitlines()
    assert lines[0] == "file_path,length"
    assert lines[1] == "dev-clean/101/201/101-201-0000.flac,9600"  # 0.6 s at 16 kHz
    symbols = [line.split()[0] for line in out["dict"].read_text().splitlines()]
    assert symbols[0] == "|" and sorted(symbols) == sorted(prepare.ASR_SYMBOLS)
    bad = tmp_path / "LibriSpeech" / "train-clean-100" / "100" / "200" / "100-200.trans.txt"
    bad.write_text("100-200-0000 HELLO W0RLD\n")
    with pytest.raises(PrepareError, match=r"characters \['0'\]"):
        prepare.prepare_asr(corpus["root"], tmp_path / "prep")


def test_librispeech_missing_audio_named(tmp_path):
    corpus = make_librispeech(tmp_path / "LibriSpeech", splits=["dev-clean"])
    (tmp_path / "LibriSpeech" / "dev-clean" / "100" / "200" / "100-200-0001.flac").unlink()
    with pytest.raises(PrepareError, match=r"100-200.trans.txt:2: audio .*100-200-0001.flac"):
        prepare.librispeech_transcripts(corpus["root"], "dev-clean")
    with pytest.raises(PrepareError, match="LibriSpeech split 'test-clean' folder not found"):
        prepare.librispeech_transcripts(corpus["root"], "test-clean")


def test_checks_of_ks_ic_qbe(tmp_path):
    ks = make_speech_commands(tmp_path)
    assert prepare.check_ks(ks["train"], ks["test"])["noise_files"] == 1
    for wav in (ks["train"] / "_background_noise_").glob("*.wav"):
        wav.unlink()
    with pytest.raises(PrepareError, match="_background_noise_: no"):
        prepare.check_ks(ks["train"], ks["test"])
    ic = make_fluent_commands(tmp_path)
    (ic["root"] / "wavs" / "speakers" / "spk0" / "test-0.wav").unlink()
    with pytest.raises(PrepareError, match=r"test_data.csv:2: audio .*test-0.wav not found"):
        prepare.check_ic(ic["root"])
    qbe = make_quesst14(tmp_path)
    assert prepare.check_qbe(qbe["root"]) == {"utterances": 4, "dev": 2, "eval": 2}
    (qbe["root"] / "Audio" / "quesst14_00001.wav").unlink()
    with pytest.raises(PrepareError, match=r"language_key_utterances.lst:1: audio"):
        prepare.check_qbe(qbe["root"])


def test_sf_checks_voices(tmp_path):
    corpus = make_snips(tmp_path)
    out = prepare.prepare_sf(corpus["root"], tmp_path / "prep", SNIPS_VOICES)
    assert out["vocab"].read_text().startswith(" \nA\n")
    with pytest.raises(PrepareError, match=r"valid: no wav of the voices \['Nobody'\]"):
        prepare.prepare_sf(corpus["root"], tmp_path / "prep", {"valid": ["Nobody"]})


def test_sid_writes_split_and_s3prl_file_lists_in_our_cache(tmp_path):
    corpus = make_voxceleb1(tmp_path)
    out = prepare.prepare_sid(corpus["root"], corpus["split"], tmp_path / "prep")
    assert out["meta_data"].read_text().splitlines()[0] == "1 id10001/vid0/00001.wav"
    assert out["cache"] == s3prl_caches.sid_cache_dir(corpus["root"], out["meta_data"])
    assert str(out["cache"]).startswith(str(tmp_path / "xdg-cache" / "s3prl_distill" / "superb"))
    train = pickle.load(open(out["cache"] / "train.pkl", "rb"))
    assert len(train) == 3 and all(p.endswith("00001.wav") for p in train)
    corpus["split"].write_text("4 id10001/vid0/00001.wav\n")
    with pytest.raises(PrepareError, match=r"iden_split.txt:1: expected '<1\|2\|3>"):
        prepare.prepare_sid(corpus["root"], corpus["split"], tmp_path / "prep")
    corpus["split"].write_text("1 id10009/vid0/00001.wav\n")
    with pytest.raises(PrepareError, match=r"id10009/vid0/00001.wav not under"):
        prepare.prepare_sid(corpus["root"], corpus["split"], tmp_path / "prep")


def _s3prl_task_dir(task):
    import importlib.util

    spec = importlib.util.find_spec("s3prl")
    return Path(list(spec.submodule_search_locations)[0]) / "downstream" / task


def test_s3prl_sid_dataset_reads_our_cache_not_its_package(tmp_path, capsys):
    from s3prl_distill import compat, superb

    compat.apply()
    superb.install()
    from s3prl.downstream.voxceleb1 import dataset as sid

    package_cache = _s3prl_task_dir("voxceleb1") / ".cache"
    existed = package_cache.exists()
    corpus = make_voxceleb1(tmp_path)
    out = prepare.prepare_sid(corpus["root"], corpus["split"], tmp_path / "prep")
    data = sid.SpeakerClassifiDataset("dev", Path(corpus["root"]), str(out["meta_data"]))
    assert f"Loading file paths from {out['cache'] / 'dev.pkl'}" in capsys.readouterr().out
    assert data.dataset == pickle.load(open(out["cache"] / "dev.pkl", "rb"))
    # another corpus (other split list) gets its own cache: S3PRL builds it there itself
    other = tmp_path / "other_split.txt"
    other.write_text("\n".join(out["meta_data"].read_text().splitlines()[:-1]) + "\n")
    data = sid.SpeakerClassifiDataset("dev", Path(corpus["root"]), str(other))
    folder = s3prl_caches.sid_cache_dir(corpus["root"], other)
    assert folder != out["cache"] and (folder / "dev.pkl").is_file()
    assert package_cache.exists() == existed  # nothing written into S3PRL's package


def test_s3prl_asv_length_cache_lives_in_our_cache(tmp_path):
    from s3prl_distill import compat, superb

    compat.apply()
    superb.install()
    from s3prl.downstream.sv_voxceleb1 import dataset as asv

    package_cache = _s3prl_task_dir("sv_voxceleb1") / ".wav_lengths"
    existed = package_cache.exists()
    corpus = make_voxceleb1(tmp_path)
    root = corpus["root"] / "dev" / "wav"
    data = asv.SpeakerVerifi_train(vad_config={"min_sec": 0.5}, key_list=["Voxceleb1"],
                                   file_path=[root], meta_data=None, n_jobs=1)
    assert len(data.dataset) == 9
    cached = s3prl_caches.asv_cache_dir([root]) / ".wav_lengths" / "Voxceleb1_length.pt"
    assert cached.is_file() and asv.__file__.startswith(str(_s3prl_task_dir("sv_voxceleb1")))
    assert package_cache.exists() == existed


def test_asv_trials(tmp_path):
    corpus = make_voxceleb1(tmp_path)
    out = prepare.prepare_asv(corpus["root"], corpus["trials"], tmp_path / "prep")
    assert len(out["trials"].read_text().splitlines()) == 4
    corpus["trials"].write_text("1 id10270/tvid/00001.wav id10270/tvid/00009.wav\n")
    with pytest.raises(PrepareError, match=r"veri_test2.txt:1: .*00009.wav not found"):
        prepare.prepare_asv(corpus["root"], corpus["trials"], tmp_path / "prep")


def _snapshot(folder: Path):
    return {(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_preparing_every_corpus_leaves_the_installed_s3prl_unchanged(tmp_path):
    """Nothing of any preparer lands in (or is deleted from) S3PRL's installed package."""
    package = _s3prl_task_dir("x").parent.parent
    before = _snapshot(package)
    ls = make_librispeech(tmp_path / "LibriSpeech")
    prepare.prepare_pr(ls["root"], [str(ls["lexicon"])], tmp_path / "pr")
    prepare.prepare_asr(ls["root"], tmp_path / "asr")
    ks = make_speech_commands(tmp_path)
    prepare.check_ks(ks["train"], ks["test"])
    prepare.check_ic(make_fluent_commands(tmp_path)["root"])
    prepare.prepare_sf(make_snips(tmp_path)["root"], tmp_path / "sf", SNIPS_VOICES)
    vox = make_voxceleb1(tmp_path)
    prepare.prepare_sid(vox["root"], vox["split"], tmp_path / "sid")
    prepare.prepare_asv(vox["root"], vox["trials"], tmp_path / "asv")
    prepare.prepare_er(make_iemocap(tmp_path)["root"], tmp_path / "er")
    prepare.check_qbe(make_quesst14(tmp_path)["root"])
    prepare.prepare_sd(make_diarization(tmp_path)["root"], tmp_path / "sd")
    assert _snapshot(package) == before


def test_er_five_folds(tmp_path):
    corpus = make_iemocap(tmp_path)
    out = prepare.prepare_er(corpus["root"], tmp_path / "meta")
    assert sorted(out) == [f"Session{k}" for k in range(1, 6)]
    test = json.load(open(out["Session2"] / "test_meta_data.json"))
    train = json.load(open(out["Session2"] / "train_meta_data.json"))
    assert test["labels"] == {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
    assert len(test["meta_data"]) == 5 and len(train["meta_data"]) == 20  # 'fru' dropped
    assert all(item["path"].startswith("Session2/") for item in test["meta_data"])
    assert {item["label"] for item in test["meta_data"]} == {"neu", "hap", "ang", "sad"}  # exc->hap
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="expected Session1..Session5"):
        prepare.prepare_er(tmp_path / "empty", tmp_path / "x")
    with pytest.raises(PrepareError, match="Session1/sentences/wav folder not found"):
        prepare.prepare_er(tmp_path / "meta", tmp_path / "x")


def test_sd_derives_reco2dur_and_spk2utt(tmp_path):
    corpus = make_diarization(tmp_path)
    out = prepare.prepare_sd(corpus["root"], tmp_path / "prep")
    assert (out["dev"] / "reco2dur").read_text().splitlines() == ["dev_mix0 4.000", "dev_mix1 4.000"]
    assert (out["dev"] / "spk2utt").read_text().splitlines()[0] == "spk00 spk00_dev_mix0"
    assert (out["dev"] / "rttm").is_file()
    (corpus["root"] / "test" / "segments").write_text("u1 nowhere 0.0 1.0\n")
    with pytest.raises(PrepareError, match="u1 names recording nowhere not in wav.scp"):
        prepare.prepare_sd(corpus["root"], tmp_path / "prep")


def test_best_dev_checkpoint(tmp_path, caplog):
    with pytest.raises(FileNotFoundError):
        best_dev_checkpoint(tmp_path)
    (tmp_path / "states-2.ckpt").write_text("")
    (tmp_path / "states-10.ckpt").write_text("")
    assert best_dev_checkpoint(tmp_path).name == "states-10.ckpt"
    assert "never improved" in caplog.text
    (tmp_path / "dev-clean-best.ckpt").write_text("")
    assert best_dev_checkpoint(tmp_path).name == "dev-clean-best.ckpt"


def test_cli_reports_errors(tmp_path, capsys):
    assert prepare_command.main(["ic", "--root", str(tmp_path / "none")]) == 1
    assert "fluent_speech_commands_dataset folder not found" in capsys.readouterr().err


def test_prepare_command_and_module_entry_point(tmp_path):
    """``s3prl-distill prepare`` (exit 2 on a corpus error) and what the recipes call."""
    from s3prl_distill import cli

    corpus = make_fluent_commands(tmp_path)
    assert cli.main(["prepare", "ic", "--root", str(tmp_path / "none")]) == 2
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "s3prl_distill.superb.prepare", "ic", "--root",
                           str(corpus["root"])], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["train\t6", "valid\t6", "test\t6"]


def test_read_mtwv_from_quesst_score_out(tmp_path):
    from s3prl_distill.superb.expdir import main, read_mtwv

    with pytest.raises(FileNotFoundError, match="score.out: not found"):
        read_mtwv(tmp_path)
    (tmp_path / "score.out").write_text("actTWV: 0.0100 maxTWV: 0.0523 Threshold: 2.1\n")
    assert read_mtwv(tmp_path) == pytest.approx(0.0523)
    assert main(["qbe-mtwv", str(tmp_path)]) == 0
    (tmp_path / "score.out").write_text("Cnxe only\n")
    with pytest.raises(ValueError, match="no 'maxTWV"):
        read_mtwv(tmp_path)
