"""Validation during distillation: the dev-set loss, the best checkpoint, early stopping, resume."""

from __future__ import annotations

import math
import os

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml, runner_config
from s3prl_distill.checkpoint import read_checkpoint
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.io import safe_load
from s3prl_distill.pretrain.build import build_run
from s3prl_distill.pretrain.checkpoints import list_checkpoints
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.validation import EarlyStopping, evaluate
from s3prl_distill.run_pretrain import main, parse_args, run


@pytest.fixture
def setup(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8)
    make_audio_dir(tmp_path / "dev", count=5, seed=7)
    return tmp_path, teacher


def _runner(tmp_path, name="runner.yaml", **runner):
    path = runner_config(tmp_path, tmp_path / "audio", name=name, total_steps=runner.pop("total_steps", 8),
                         save_step=2, extra_datarc={"dev_audio_dir": str(tmp_path / "dev"),
                                                    "dev_batch_size": 2})
    data = yaml.safe_load(path.read_text())
    data["runner"].update(runner)
    path.write_text(yaml.safe_dump(data))
    return path


def _argv(tmp_path, model, runner, expdir):
    return ["-u", "distiller", "-g", str(model), "-c", str(runner), "-p", str(tmp_path / expdir),
            "--device", "cpu", "--seed", "4"]


def test_early_stopping_counts_evaluations_without_a_new_best():
    early = EarlyStopping(patience=2, min_delta=0.1)
    assert early.update(1.0, 2) and early.best == 1.0 and early.best_step == 2
    assert not early.update(0.95, 4)  # not better by more than min_delta
    assert not early.should_stop
    assert not early.update(float("nan"), 6)
    assert early.should_stop and early.bad_evals == 2
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(early.state_dict())
    assert restored.state_dict() == early.state_dict()
    assert EarlyStopping(patience=0, bad_evals=99).should_stop is False  # 0: never stops


def test_dev_loss_is_the_frame_weighted_mean_over_the_whole_dev_set(setup):
    tmp_path, teacher = setup
    datarc = {"train_batch_size": 4, "audio_dir": str(tmp_path / "audio"), "crop_seconds": 0.5,
              "length_index": str(tmp_path / "lengths.tsv"), "dev_audio_dir": str(tmp_path / "dev"),
              "dev_batch_size": 2}
    torch.manual_seed(0)
    run_ = build_run(DistillConfig.from_yaml(model_yaml(tmp_path, teacher)),
                     from_dict(DataConfig, datarc), device=torch.device("cpu"), seed=1)
    assert len(run_.dev_dataset) == 5 and run_.dev_loader is not None
    run_.task.train()
    dev = evaluate(run_, run_.dev_loader)
    assert run_.task.training and run_.student.training  # the mode it found is restored
    # the same figure from one batch holding the whole dev set
    from s3prl_distill.pretrain.dataset import collate_batch

    whole = collate_batch([run_.dev_dataset[i] for i in range(len(run_.dev_dataset))])
    run_.task.eval()
    with torch.no_grad():
        loss, records = run_.step(run_.task, whole, dev=True)
    assert dev["frames"] == float(records["frames"])
    assert dev["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert dev["l1/layer1"] == pytest.approx(float(records["l1/layer1"]), rel=1e-5)


def test_validation_keeps_the_best_student_and_stops_early(setup, caplog):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    # a rate so high that the dev loss stops improving quickly: patience 1 ends the run early
    runner = _runner(tmp_path, total_steps=40, eval_step=2, early_stopping_patience=1,
                     early_stopping_min_delta=1e9)
    with caplog.at_level("INFO"):
        final = run(parse_args(_argv(tmp_path, model, runner, "exp")))
    ckpt = safe_load(final)
    assert ckpt["step"] == 4 and ckpt["validation"]["stopped"]  # best at 2, no better at 4: stop
    assert ckpt["validation"]["best_step"] == 2 and math.isfinite(ckpt["validation"]["best"])
    best = read_checkpoint(tmp_path / "exp" / "best.ckpt")
    assert best["training"]["step"] == 2 and best["training"]["dev_metric"] == "loss"
    assert best["training"]["dev"]["loss"] == pytest.approx(ckpt["validation"]["best"])
    assert "early stopping at update 4" in caplog.text
    # rerunning the finished run does not train again
    again = run(parse_args(_argv(tmp_path, model, runner, "exp")))
    assert again == final and [s for s, _ in list_checkpoints(str(tmp_path / "exp"))] == [2, 4]


def test_resume_continues_the_validation_state_exactly(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = _runner(tmp_path, total_steps=8, eval_step=2, early_stopping_patience=50)
    full = run(parse_args(_argv(tmp_path, model, runner, "full")))
    run(parse_args(_argv(tmp_path, model, runner, "part")))
    for step, path in list_checkpoints(str(tmp_path / "part")):
        if step != 4:
            os.remove(path)
    resumed = run(parse_args(_argv(tmp_path, model, runner, "part")))
    a, b = safe_load(full), safe_load(resumed)
    assert a["validation"] == b["validation"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_metric_and_dev_set_errors_name_the_key(setup, capsys):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = _runner(tmp_path, name="r1.yaml", eval_step=2, early_stopping_metric="feat")
    capsys.readouterr()
    assert main(_argv(tmp_path, model, runner, "e1")) == 2
    err = capsys.readouterr().err
    assert "early_stopping_metric: 'feat'" in err and "l1/layer1" in err
    no_dev = runner_config(tmp_path, tmp_path / "audio", name="r2.yaml")
    data = yaml.safe_load(no_dev.read_text())
    data["runner"]["eval_step"] = 2
    no_dev.write_text(yaml.safe_dump(data))
    assert main(_argv(tmp_path, model, no_dev, "e2")) == 2
    assert "no dev set" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="early_stopping_patience needs evaluations"):
        from s3prl_distill.pretrain.config import RunnerSection
        from_dict(RunnerSection, {"early_stopping_patience": 3})


def test_ranking_keeps_the_k_lowest_evaluations_as_modelcheckpoint_save_top_k():
    early = EarlyStopping(keep_best=3)
    assert early.rank(5.0, 1) == (True, [])
    assert early.rank(4.0, 2) == (True, [])
    assert early.rank(6.0, 3) == (True, [])
    assert early.rank(7.0, 4) == (False, [])  # worse than the three kept
    assert early.rank(6.0, 5) == (False, [])  # equal to the worst: not strictly lower
    assert early.rank(float("nan"), 6) == (False, [])
    assert early.rank(1.0, 7) == (True, [3])  # the worst leaves
    assert early.top == [[1.0, 7], [4.0, 2], [5.0, 1]]
    restored = EarlyStopping(keep_best=3)
    restored.load_state_dict(early.state_dict())
    assert restored.top == early.top
    assert restored.rank(4.5, 8) == (True, [1])


def test_keep_best_keeps_the_students_of_the_k_lowest_dev_evaluations(setup):
    tmp_path, teacher = setup
    model = model_yaml(tmp_path, teacher)
    runner = _runner(tmp_path, total_steps=10, eval_step=2, keep_best=2)
    final = safe_load(run(parse_args(_argv(tmp_path, model, runner, "exp"))))
    top = final["validation"]["top"]
    assert len(top) == 2 and top == sorted(top)
    kept = sorted(int(n[len("best-"):-len(".ckpt")]) for n in os.listdir(tmp_path / "exp")
                  if n.startswith("best-"))
    assert kept == sorted(step for _, step in top)  # exactly the ranked ones, the rest pruned
    for value, step in top:
        student = read_checkpoint(tmp_path / "exp" / f"best-{step}.ckpt")
        assert student["training"]["step"] == step
        assert student["training"]["dev"]["loss"] == pytest.approx(value)
    best = read_checkpoint(tmp_path / "exp" / "best.ckpt")
    assert best["training"]["step"] == top[0][1]
    with pytest.raises(ConfigError, match="keep_best"):
        from s3prl_distill.pretrain.config import RunnerSection

        from_dict(RunnerSection, {"keep_best": 0}).validate()


def test_pruning_a_ranked_student_removes_only_a_regular_file_of_that_name(tmp_path, caplog):
    from s3prl_distill.pretrain.checkpoints import remove_ranked_student, write_ranked_student

    path = write_ranked_student({"x": torch.zeros(1)}, str(tmp_path), 4)
    assert os.path.basename(path) == "best-4.ckpt"
    remove_ranked_student(str(tmp_path), 4)
    assert not os.path.exists(path)
    remove_ranked_student(str(tmp_path), 4)  # already gone: nothing to do
    (tmp_path / "best-6.ckpt").mkdir()
    target = tmp_path / "mine.ckpt"
    target.write_text("user data")
    os.symlink(target, tmp_path / "best-8.ckpt")
    with caplog.at_level("WARNING"):
        remove_ranked_student(str(tmp_path), 6)
        remove_ranked_student(str(tmp_path), 8)
    assert (tmp_path / "best-6.ckpt").is_dir() and target.read_text() == "user data"
    assert os.path.islink(tmp_path / "best-8.ckpt") and caplog.text.count("left alone") == 2
