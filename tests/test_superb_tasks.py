"""The ten SUPERB tasks through S3PRL's own, unchanged downstream runner with a plugin upstream.

For each task: a tiny corpus in the official layout, our data preparation, S3PRL's
``python -m s3prl.run_downstream`` (train a few steps with the recipe's config, SUPERB's
hyperparameters overridden only to be tiny; evaluate the best dev checkpoint on test), then the
prediction files the leaderboard reads are checked with ``s3prl-distill submit``'s collectors.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from s3prl_distill.superb import prepare
from s3prl_distill.superb.expdir import best_dev_checkpoint
from superb_corpora import (
    RECIPES,
    RUNNER_FAST,
    SNIPS_VOICES,
    make_diarization,
    make_fluent_commands,
    make_iemocap,
    make_librispeech,
    make_quesst14,
    make_snips,
    make_speech_commands,
    make_student_checkpoint,
    make_voxceleb1,
    overrides,
    run_downstream,
    s3prl_libriphone_corpus,
    s3prl_snips_corpus,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """S3PRL's SID/ASV corpus caches (redirected to our cache folder) inside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """``-u/-k`` of a tiny plugin student (distill_student_local)."""
    ckpt = make_student_checkpoint(tmp_path_factory.mktemp("upstream") / "student.ckpt")
    return ["-u", "distill_student_local", "-k", str(ckpt)]


def train(task_dir: str, downstream: str, expdir: Path, upstream, *extra: str, cwd,
          config=None) -> None:
    config = config or RECIPES / task_dir / "config.yaml"
    run_downstream(["-m", "train", *upstream, "-d", downstream, "-c", str(config), "-p",
                    str(expdir), "-o", overrides(*RUNNER_FAST, *extra)], cwd)


def evaluate(ckpt: Path, split: str, cwd, *extra: str) -> None:
    args = ["-m", "evaluate", "-e", str(ckpt), "-t", split]
    if extra:
        args += ["-o", overrides(*extra)]
    run_downstream(args, cwd)


def submit(tmp_path, **expdirs) -> zipfile.ZipFile:
    from s3prl_distill.commands import submit as submit_cmd

    out = tmp_path / "submission"
    names = submit_cmd.package(out, {k: Path(v) for k, v in expdirs.items()})
    assert names
    return zipfile.ZipFile(out / "predict.zip")


def _with_s3prl_corpus(task_dir: str, corpus: dict, path: Path) -> Path:
    """The recipe's config with its ``corpus`` block in S3PRL's original schema (libriphone.yaml /
    snips.yaml keys), so S3PRL's original configs are what this runs."""
    import yaml

    config = yaml.safe_load((RECIPES / task_dir / "config.yaml").read_text())
    config["downstream_expert"]["corpus"] = corpus
    path.write_text(yaml.safe_dump(config))
    return path


def test_pr(tmp_path, upstream):
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    prep = prepare.prepare_pr(corpus["root"], [str(corpus["lexicon"])], tmp_path / "prep")
    exp = tmp_path / "exp"
    config = _with_s3prl_corpus("pr", s3prl_libriphone_corpus(corpus["root"], corpus["lexicon"],
                                                              batch_size=2), tmp_path / "pr.yaml")
    train("pr", "ctc", exp, upstream, f"config.downstream_expert.text.vocab_file={prep['vocab']}",
          cwd=tmp_path, config=config)
    evaluate(best_dev_checkpoint(exp), "test", tmp_path)
    hyp = (exp / "test-hyp.ark").read_text().splitlines()
    assert len(hyp) == 4 and hyp[0].split()[0].startswith("102-202-")
    archive = submit(tmp_path, pr=exp)
    assert "predict/pr_public/predict.ark" in archive.namelist()


def test_sf(tmp_path, upstream):
    corpus = make_snips(tmp_path)
    prep = prepare.prepare_sf(corpus["root"], tmp_path / "prep", SNIPS_VOICES)
    exp = tmp_path / "exp"
    config = _with_s3prl_corpus("sf", s3prl_snips_corpus(corpus["root"], batch_size=2),
                                tmp_path / "sf.yaml")
    train("sf", "ctc", exp, upstream, f"config.downstream_expert.text.vocab_file={prep['vocab']}",
          f"config.downstream_expert.text.slots_file={corpus['slots']}",
          "config.downstream_expert.model.project_dim=8",
          "config.downstream_expert.model.RNNs.dim=[8,8]", cwd=tmp_path, config=config)
    evaluate(best_dev_checkpoint(exp), "test", tmp_path)
    assert len((exp / "test-hyp.ark").read_text().splitlines()) == 3
    archive = submit(tmp_path, sf=exp)
    assert "predict/sf_public/predict.ark" in archive.namelist()


def test_ic(tmp_path, upstream):
    corpus = make_fluent_commands(tmp_path)
    assert prepare.check_ic(corpus["root"]) == {"train": 6, "valid": 6, "test": 6}
    exp = tmp_path / "exp"
    train("ic", "fluent_commands", exp, upstream,
          f"config.downstream_expert.datarc.file_path={corpus['root']}",
          "config.downstream_expert.datarc.num_workers=0",
          "config.downstream_expert.datarc.train_batch_size=2",
          "config.downstream_expert.datarc.eval_batch_size=2", cwd=tmp_path)
    evaluate(best_dev_checkpoint(exp), "test", tmp_path)
    rows = (exp / "test_predict.csv").read_text().splitlines()
    assert len(rows) == 6 and len(rows[0].split(",")) == 4
    archive = submit(tmp_path, ic=exp)
    assert "predict/ic_public/predict.csv" in archive.namelist()


def test_ks(tmp_path, upstream):
    corpus = make_speech_commands(tmp_path)
    prepare.check_ks(corpus["train"], corpus["test"])
    exp = tmp_path / "exp"
    train("ks", "speech_commands", exp, upstream,
          f"config.downstream_expert.datarc.speech_commands_root={corpus['train']}",
          f"config.downstream_expert.datarc.speech_commands_test_root={corpus['test']}",
          "config.downstream_expert.datarc.num_workers=0",
          "config.downstream_expert.datarc.batch_size=4", cwd=tmp_path)
    evaluate(best_dev_checkpoint(exp), "test", tmp_path)
    rows = (exp / "test_predict.txt").read_text().splitlines()
    assert len(rows) == 12
    archive = submit(tmp_path, ks=exp)
    assert "predict/ks_public/predict.txt" in archive.namelist()


def test_sid(tmp_path, upstream):
    corpus = make_voxceleb1(tmp_path)
    prep = prepare.prepare_sid(corpus["root"], corpus["split"], tmp_path / "prep")
    exp = tmp_path / "exp"
    train("sid", "voxceleb1", exp, upstream,
          f"config.downstream_expert.datarc.file_path={corpus['root']}",
          f"config.downstream_expert.datarc.meta_data={prep['meta_data']}",
          "config.downstream_expert.datarc.num_workers=0",
          "config.downstream_expert.datarc.train_batch_size=2", cwd=tmp_path)
    evaluate(best_dev_checkpoint(exp), "test", tmp_path)
    rows = (exp / "test_predict.txt").read_text().splitlines()
    assert len(rows) == 3
    assert all(re.fullmatch(r"id1\d{4}-vid\d-\d{5} id1\d{4}", row) for row in rows), rows
    archive = submit(tmp_path, sid=exp)
    assert "predict/sid_public/predict.txt" in archive.namelist()


def run_recipe(task: str, tmp_path, upstream, timeout: int = 400, **env_vars: str):
    """``bash downstream_recipes/<task>/run.sh`` with tiny settings; returns the completed process."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable, DEVICE="cpu",
               UPSTREAM=upstream[1], UPSTREAM_CKPT=upstream[3],
               EXP_ROOT=str(tmp_path / "result"), **env_vars)
    proc = subprocess.run(["bash", str(RECIPES / task / "run.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def test_er_recipe_two_folds(tmp_path, upstream):
    """er/run.sh: one training per fold (test session held out), mean accuracy, per-fold files."""
    corpus = make_iemocap(tmp_path)
    proc = run_recipe("er", tmp_path, upstream, IEMOCAP=str(corpus["root"]), EXP_NAME="er",
                      FOLDS="fold1 fold2",
                      EXTRA_OVERRIDE=overrides(*RUNNER_FAST,
                                               "config.downstream_expert.datarc.num_workers=0",
                                               "config.downstream_expert.datarc.train_batch_size=2"))
    assert re.search(r"ER mean test accuracy over 2 folds: [01]\.\d{4}", proc.stdout), proc.stdout
    expdirs = {}
    for k in (1, 2):
        exp = tmp_path / "result" / f"er_fold{k}"
        rows = (exp / f"test_fold{k}_predict.txt").read_text().splitlines()
        assert len(rows) == 5  # 6 utterances per session, one 'fru' dropped
        assert all(row.split()[0].startswith(f"Ses0{k}F_impro01_") for row in rows)
        expdirs[f"er_fold{k}"] = exp
    archive = submit(tmp_path, **expdirs)
    assert {"predict/er_fold1_public/predict.txt", "predict/er_fold2_public/predict.txt"} <= set(
        archive.namelist())


def test_asr(tmp_path, upstream):
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    prep = prepare.prepare_asr(corpus["root"], tmp_path / "prep")
    exp = tmp_path / "exp"
    train("asr", "asr", exp, upstream,
          f"config.downstream_expert.datarc.libri_root={corpus['root']}",
          f"config.downstream_expert.datarc.bucket_file={tmp_path / 'prep' / 'len_for_bucket'}",
          f"config.downstream_expert.datarc.dict_path={prep['dict']}",
          "config.downstream_expert.datarc.num_workers=0",
          "config.downstream_expert.datarc.train_batch_size=2",
          "config.downstream_expert.datarc.batch_size=2",
          "config.downstream_expert.modelrc.project_dim=8",
          "config.downstream_expert.modelrc.RNNs.dim=[8,8]", cwd=tmp_path)
    evaluate(best_dev_checkpoint(exp), "test-clean", tmp_path)
    assert len((exp / "test-clean-noLM-hyp.ark").read_text().splitlines()) == 4
    archive = submit(tmp_path, asr=exp)
    assert "predict/asr_public/predict.ark" in archive.namelist()


FAKE_QUESST_SCORER = """#!/usr/bin/env bash
# stand-in for QUESST's scorer: needs the system's stdlist, writes score.out like the real one
set -e
test -f "$1/benchmark.stdlist.xml"
test -d "$2"
case "$(basename "$1")" in
  *_1_dev) twv=0.0500 ;;
  *_2_dev) twv=0.0200 ;;
  *) twv=0.0100 ;;
esac
echo "actTWV: 0.0000 maxTWV: $twv Threshold: 2.0" > "$1/score.out"
"""


def test_qbe_recipe_layer_sweep(tmp_path, upstream):
    """qbe/run.sh: every layer on dev, scored, the best dev layer run on eval (the submission)."""
    corpus = make_quesst14(tmp_path)
    scorer = corpus["root"] / "scoring" / "score-TWV-Cnxe.sh"
    scorer.write_text(FAKE_QUESST_SCORER)
    scorer.chmod(0o755)
    (corpus["root"] / "scoring" / "groundtruth_quesst14_dev").mkdir()
    proc = run_recipe("qbe", tmp_path, upstream, QUESST14=str(corpus["root"]), NUM_LAYERS="3",
                      EXP_NAME="qbe",
                      EXTRA_OVERRIDE=overrides("config.downstream_expert.datarc.num_workers=0",
                                               "config.downstream_expert.max_workers=1"))
    assert "best layer on dev: 1" in proc.stdout
    result = tmp_path / "result"
    assert sorted(p.name for p in result.iterdir()) == ["qbe_0_dev", "qbe_1_dev", "qbe_1_test",
                                                        "qbe_2_dev"]
    xml = (result / "qbe_1_test" / "benchmark.stdlist.xml").read_text()
    assert xml.count("<detected_termlist") == 2 and xml.count("<term ") == 8  # 2 queries x 4 docs
    archive = submit(tmp_path, qbe=result / "qbe_1_test")
    assert "predict/qbe_public/benchmark.stdlist.xml" in archive.namelist()


def test_asv_recipe_checkpoint_sweep(tmp_path, upstream):
    """asv/run.sh: train, then every saved checkpoint on the test trials, best EER kept."""
    corpus = make_voxceleb1(tmp_path)
    proc = run_recipe("asv", tmp_path, upstream, timeout=500, VOXCELEB1=str(corpus["root"]),
                      TRIALS=str(corpus["trials"]), EXP_NAME="asv",
                      EXTRA_OVERRIDE=overrides(
                          *RUNNER_FAST, "config.downstream_expert.datarc.num_workers=0",
                          "config.downstream_expert.datarc.train_batch_size=2",
                          "config.downstream_expert.modelrc.input_dim=8",
                          "config.downstream_expert.modelrc.module_config.XVector.agg_dim=8"))
    exp = tmp_path / "result" / "asv"
    assert "2 checkpoints evaluated; best states-" in proc.stderr  # the sweep's log line
    report = (exp / "report.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in report) == ["states-2.ckpt", "states-4.ckpt"]
    best = report[-1].split()[0]
    assert all(0.0 <= float(line.split()[1]) <= 1.0 for line in report)
    assert (exp / "test_predict.txt").read_text() == (
        exp / best.replace(".ckpt", "") / "test_predict.txt").read_text()
    assert len((exp / "test_predict.txt").read_text().splitlines()) == 4
    archive = submit(tmp_path, asv=exp)
    assert "predict/sv_public/predict.txt" in archive.namelist()


@pytest.fixture(params=["distilhubert", "fithubert"])
def sd_upstream(request, tmp_path_factory):
    """Students at 320 and at 640 samples per frame: SD's label rate must follow each."""
    ckpt = make_student_checkpoint(tmp_path_factory.mktemp("sd_upstream") / "student.ckpt",
                                   family=request.param)
    rate = {"distilhubert": "320", "fithubert": "640"}[request.param]
    return ["-u", "distill_student_local", "-k", str(ckpt)], rate


def test_sd(tmp_path, sd_upstream):
    upstream, rate = sd_upstream
    corpus = make_diarization(tmp_path)
    prep = prepare.prepare_sd(corpus["root"], tmp_path / "prep")
    exp = tmp_path / "exp"
    train("sd", "diarization", exp, upstream,
          f"config.downstream_expert.loaderrc.train_dir={prep['train']}",
          f"config.downstream_expert.loaderrc.dev_dir={prep['dev']}",
          f"config.downstream_expert.loaderrc.test_dir={prep['test']}",
          "config.downstream_expert.loaderrc.num_workers=0",
          "config.downstream_expert.loaderrc.train_batchsize=2",
          "config.downstream_expert.datarc.chunk_size=100",
          "config.downstream_expert.modelrc.hidden_size=8", cwd=tmp_path)
    assert (exp / "frame_shift").read_text().strip() == rate  # the upstream's true rate
    evaluate(best_dev_checkpoint(exp), "test", tmp_path)
    predictions = sorted((exp / "scoring" / "predictions").glob("*.h5"))
    assert [p.stem for p in predictions] == ["test_mix0", "test_mix1"]
    archive = submit(tmp_path, sd=exp)
    assert {"predict/sd_public/test_mix0.h5", "predict/sd_public/test_mix1.h5"} <= set(
        archive.namelist())
