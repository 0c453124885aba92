"""ASV checkpoint sweep: every checkpoint evaluated once, best (lowest EER) kept for submission."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from s3prl_distill.superb.asv_sweep import checkpoints, sweep

EER = {"states-10": 0.31, "states-20": 0.12, "states-30": 0.2}


def fake_runner(calls):
    def run(args):
        calls.append(args)
        ckpt = Path(args[args.index("-e") + 1])
        out = Path(args[args.index("-o") + 1].split(",,")[0].split("=", 1)[1])
        (out / "test_predict.txt").write_text(f"a_b {EER[ckpt.stem]}\n")
        return types.SimpleNamespace(stdout=f"...\nsv-voxceleb1/test-EER: {EER[ckpt.stem]}\n")

    return run


def test_sweep_picks_lowest_eer_and_skips_finished(tmp_path):
    for name in ("states-20.ckpt", "states-10.ckpt", "states-30.ckpt", "dev-best.ckpt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in checkpoints(tmp_path)] == ["states-10.ckpt", "states-20.ckpt",
                                                        "states-30.ckpt"]
    calls = []
    best = sweep(tmp_path, runner=fake_runner(calls), voxceleb1="/data/vox")
    assert best.checkpoint.name == "states-20.ckpt" and best.eer == pytest.approx(0.12)
    assert len(calls) == 3 and "config.downstream_expert.datarc.file_path=/data/vox" in calls[0][-1]
    assert (tmp_path / "test_predict.txt").read_text() == "a_b 0.12\n"
    report = (tmp_path / "report.txt").read_text().splitlines()
    assert report[-1].startswith("states-20.ckpt") and report[0].startswith("states-10.ckpt")
    calls.clear()
    assert sweep(tmp_path, runner=fake_runner(calls)).checkpoint.name == "states-20.ckpt"
    assert calls == []  # already evaluated: results read back from the logs


def test_sweep_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no states-<step>.ckpt"):
        sweep(tmp_path, runner=fake_runner([]))
    (tmp_path / "states-10.ckpt").write_text("")
    silent = lambda args: types.SimpleNamespace(stdout="no metric here")  # noqa: E731
    with pytest.raises(RuntimeError, match="no 'test-EER'"):
        sweep(tmp_path, runner=silent)
