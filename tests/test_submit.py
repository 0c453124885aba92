"""``s3prl-distill submit``: leaderboard layout, format checks, errors naming the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from s3prl_distill.cli import main as cli_main
from s3prl_distill.commands.submit import TASKS, SubmitError, collect, package

HDF5 = b"\x89HDF\r\n\x1a\n" + b"\0" * 24

QBE_XML = """<stdlist termlist_filename="benchmark.stdlist.xml" language="english">
  <detected_termlist termid="quesst14_dev_0001" term_search_time="1.0" oov_term_count="1">
    <term file="quesst14_00001" channel="1" tbeg="0.000" dur="0.00" score="2.5" decision="YES"/>
    <term file="quesst14_00002" channel="1" tbeg="0.000" dur="0.00" score="-0.5" decision="NO"/>
  </detected_termlist>
</stdlist>
"""


def fake_expdirs(root: Path):
    """One experiment folder per task with the prediction files S3PRL writes on test."""
    files = {
        "pr": {"test-hyp.ark": "1089-134686-0000 HH AH0 L OW1\n1089-134686-0001 W ER1\n"},
        "ks": {"test_predict.txt": "yes-t0_nohash_0 yes\nno-t0_nohash_0 _unknown_\n"},
        "ic": {"test_predict.csv": "utt1,activate,lights,kitchen\nutt2,increase,volume,none\n"},
        "sid": {"test_predict.txt": "id10270-x-00001 id10001\n"},
        "asr": {"test-clean-noLM-hyp.ark": "1089-134686-0000 HELLO WORLD\n"},
        "qbe": {"benchmark.stdlist.xml": QBE_XML},
        "sf": {"test-hyp.ark": "Brian-snips-test-0 PLAY B-genre JAZZ E-genre\n"},
        "asv": {"test_predict.txt": "id10270-a-00001_id10271-b-00001 0.7731\n"},
    }
    dirs = {}
    for task, content in files.items():
        folder = root / f"{task}_expdir"
        folder.mkdir(parents=True)
        for name, text in content.items():
            (folder / name).write_text(text)
        dirs[task] = folder
    for k in range(1, 6):
        folder = root / f"er_fold{k}_expdir"
        folder.mkdir()
        (folder / f"test_fold{k}_predict.txt").write_text("Ses01F_impro01_F000 neu\n")
        dirs[f"er_fold{k}"] = folder
    sd = root / "sd_expdir" / "scoring" / "predictions"
    sd.mkdir(parents=True)
    (sd / "mix1.h5").write_bytes(HDF5)
    (sd / "mix2.h5").write_bytes(HDF5)
    dirs["sd"] = root / "sd_expdir"
    return dirs


def test_all_tasks_packed_in_the_leaderboard_layout(tmp_path):
    dirs = fake_expdirs(tmp_path / "exps")
    packed = package(tmp_path / "out", dirs)
    assert packed == ["pr_public", "ks_public", "ic_public", "sid_public",
                      *[f"er_fold{k}_public" for k in range(1, 6)], "asr_public", "qbe_public",
                      "sf_public", "sv_public", "sd_public"]
    names = set(zipfile.ZipFile(tmp_path / "out" / "predict.zip").namelist())
    expected = {"predict/pr_public/predict.ark", "predict/ks_public/predict.txt",
                "predict/ic_public/predict.csv", "predict/sid_public/predict.txt",
                "predict/asr_public/predict.ark", "predict/qbe_public/benchmark.stdlist.xml",
                "predict/sf_public/predict.ark", "predict/sv_public/predict.txt",
                "predict/sd_public/mix1.h5", "predict/sd_public/mix2.h5",
                *[f"predict/er_fold{k}_public/predict.txt" for k in range(1, 6)]}
    assert expected <= names
    assert all(n.startswith("predict/") for n in names)
    with zipfile.ZipFile(tmp_path / "out" / "predict.zip") as archive:
        assert archive.read("predict/pr_public/predict.ark") == (
            dirs["pr"] / "test-hyp.ark").read_bytes()


def test_cli_accepts_s3prl_option_names(tmp_path, capsys):
    dirs = fake_expdirs(tmp_path / "exps")
    code = cli_main(["submit", "--output_dir", str(tmp_path / "o"), "--asr_no_lm", str(dirs["asr"]),
                     "--sv", str(dirs["asv"]), "--pr", str(dirs["pr"])])
    assert code == 0
    assert "packed 3 task(s): pr_public asr_public sv_public" in capsys.readouterr().out
    names = zipfile.ZipFile(tmp_path / "o" / "predict.zip").namelist()
    assert "predict/sv_public/predict.txt" in names


def test_asv_symlink_to_best_checkpoint_is_followed(tmp_path):
    exp = tmp_path / "asv"
    (exp / "states-20000").mkdir(parents=True)
    best = exp / "states-20000" / "test_predict.txt"
    best.write_text("a_b 0.5\n")
    (exp / "test_predict.txt").symlink_to(best)
    assert collect("asv", exp) == best.resolve()


@pytest.mark.parametrize("task,name,text,message", [
    ("ks", "test_predict.txt", "yes-0 yes extra\n", r"test_predict.txt:1: expected 2"),
    ("ic", "test_predict.csv", "utt1,activate,lights\n", r"test_predict.csv:1: expected 4"),
    ("asv", "test_predict.txt", "a_b [0.5]\n", r"field 2 must be a number"),
    ("pr", "test-hyp.ark", "u1 A\nu1 B\n", r"test-hyp.ark:2: utterance id 'u1' appears twice"),
    ("sid", "test_predict.txt", "\n", r"no predictions \(empty file\)"),
    ("qbe", "benchmark.stdlist.xml", "<stdlist></stdlist>", r"no <detected_termlist>"),
    ("qbe", "benchmark.stdlist.xml", "<stdlist", r"not valid XML"),
])
def test_bad_predictions_are_rejected_with_file_and_line(tmp_path, task, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SubmitError, match=message):
        collect(task, tmp_path)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(SubmitError, match="experiment folder of pr not found"):
        collect("pr", tmp_path / "nope")
    with pytest.raises(SubmitError, match="test-hyp.ark: pr prediction file not found"):
        collect("pr", tmp_path)
    with pytest.raises(SubmitError, match="sd prediction folder not found"):
        collect("sd", tmp_path)
    (tmp_path / "scoring" / "predictions").mkdir(parents=True)
    (tmp_path / "scoring" / "predictions" / "x.h5").write_text("not hdf5")
    with pytest.raises(SubmitError, match="x.h5: not an HDF5 file"):
        collect("sd", tmp_path)
    with pytest.raises(SubmitError, match="unknown task 'se'"):
        collect("se", tmp_path)
    with pytest.raises(SubmitError, match="nothing to submit"):
        package(tmp_path / "out", {})


def test_partial_er_warns(tmp_path, caplog):
    dirs = fake_expdirs(tmp_path / "exps")
    package(tmp_path / "out", {"er_fold1": dirs["er_fold1"]})
    assert "ER has 1 of 5 folds" in caplog.text


def test_cli_reports_errors(tmp_path, caplog):
    assert cli_main(["submit", "-o", str(tmp_path / "o"), "--ks", str(tmp_path)]) == 1
    assert "test_predict.txt: ks prediction file not found" in caplog.text
    assert set(TASKS) >= {"pr", "ks", "ic", "sid", "asr", "qbe", "sf", "asv", "sd", "er_fold5"}
