"""``s3prl-distill plan``: the estimate's pieces, the command on a tiny run, and that it leaves the
run's state untouched (issue 16.4)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from distill_fixtures import make_audio_dir, make_teacher, model_yaml, runner_config
from s3prl_distill.benchmark.plan import (cache_bytes, fit_line, fit_peak_memory, longest_for_memory,
                                          plan_summary)


def test_cache_bytes_is_frames_layers_dims_bytes():
    # one hour at 320 samples / frame, 3 layers x 768, float16: HuBERT Base targets for DistilHuBERT
    hour = 16000 * 3600
    assert cache_bytes([hour], 320, 3, 768, "float16") == 180000 * 3 * 768 * 2  # 0.83 GB
    assert cache_bytes([639, 640], 320, 2, 4, "float32") == (1 + 2) * 2 * 4 * 4


def test_fits():
    assert fit_line([1, 2, 3], [3, 5, 7]) == pytest.approx((1.0, 2.0))
    assert fit_line([2, 2], [4, 6]) == (0.0, 2.5)  # one size: proportional
    assert fit_line([1, 2], [5, 4]) == (0.0, 3.0)  # a falling line is not trusted
    m0, m1, m2 = fit_peak_memory([(1, 10 + 5 + 1), (2, 10 + 10 + 4), (4, 10 + 20 + 16)])
    assert (m0, m1, m2) == pytest.approx((10, 5, 1))
    longest = longest_for_memory((10, 5, 1), 2, 10 + 2 * (5 * 6 + 36))  # L = 6 exactly
    assert longest == pytest.approx(6.0)
    assert longest_for_memory((10, 5, 0), 1, 35) == pytest.approx(5.0)
    assert longest_for_memory((100, 5, 0), 1, 50) == 0.0


@pytest.mark.slow
def test_plan_command_on_a_tiny_run(tmp_path, capsys):
    from s3prl_distill.cli import main

    teacher = make_teacher(tmp_path / "teacher.pt")
    audio = tmp_path / "audio"
    make_audio_dir(audio, count=10, seconds=(0.5, 1.5))
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, audio, total_steps=40, batch_size=4, crop_seconds=0.0,
                           extra_datarc={"teacher_cache": str(tmp_path / "never_built")})
    out_json = tmp_path / "plan.json"
    code = main(["plan", "-g", str(model), "-c", str(runner), "--updates", "3", "--probe-seconds", "0.5,1,2",
                 "-o", "config.runner.total_steps=50", "--json", str(out_json)])
    assert code == 0
    text = capsys.readouterr().out
    assert "updates: 50 (" in text and "time per update:" in text and "total:" in text
    assert "teacher cache:" in text and "longest utterance a batch of 4 can hold" in text
    assert not (tmp_path / "never_built").exists()  # the plan never builds the configured cache
    est = json.loads(out_json.read_text())
    assert est["total_updates"] == 50 and est["batches_per_epoch"] == 3
    assert len(est["timed"]) == 3 and all(t["seconds"] > t["teacher_s"] > 0 for t in est["timed"])
    assert est["total_seconds"] == pytest.approx(est["seconds_per_update"] * 50)
    assert est["total_seconds_cached"] < est["total_seconds"]
    assert est["cache_bytes"] > 0 and est["cache_layers"] == 2 and est["cache_dim"] == 32
    assert est["peak_mb"] is not None and len(est["probes"]) == 3
    assert est["longest_seconds"] is not None and est["longest_seconds"] > 2


@pytest.mark.slow
def test_estimate_leaves_the_run_untouched(tmp_path):
    from s3prl_distill.config import from_dict, load_yaml
    from s3prl_distill.distill.config import DistillConfig
    from s3prl_distill.pretrain.build import build_run
    from s3prl_distill.pretrain.config import DataConfig, PretrainConfig

    teacher = make_teacher(tmp_path / "teacher.pt")
    audio = tmp_path / "audio"
    make_audio_dir(audio, count=6)
    runner = load_yaml(runner_config(tmp_path, audio, total_steps=4, batch_size=2, crop_seconds=0.0))
    cfg = PretrainConfig.from_data(runner)
    run_ = build_run(DistillConfig.from_yaml(model_yaml(tmp_path, teacher)),
                     from_dict(DataConfig, runner["pretrain_expert"]["datarc"]),
                     device=torch.device("cpu"), seed=3)
    weights = {k: v.clone() for k, v in run_.student.state_dict().items()}
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    est = plan_summary(run_, cfg, "cpu", updates=2, probe_seconds=(0.5,))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert all(torch.equal(v, run_.student.state_dict()[k]) for k, v in weights.items())
    assert est.total_updates == 4 and math.isfinite(est.total_seconds)
    assert any("time per update" in line for line in est.lines())


def test_a_fresh_run_logs_its_plan_and_trains_as_without_it(tmp_path, caplog):
    """runner.plan_at_start: the estimate is in the log of a new run (not of a resume), and the
    run ends with the same parameters as without it (the estimate works on copies)."""
    import yaml

    from s3prl_distill.checkpoint import read_checkpoint
    from s3prl_distill.run_pretrain import parse_args, run

    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=6)
    model = model_yaml(tmp_path, teacher)
    runner = runner_config(tmp_path, tmp_path / "audio", total_steps=3, save_step=3, batch_size=3)
    with_plan = tmp_path / "runner_plan.yaml"
    data = yaml.safe_load(runner.read_text())
    data["runner"]["plan_at_start"] = True
    with_plan.write_text(yaml.safe_dump(data))

    def go(config, name):
        return run(parse_args(["-u", "distiller", "-g", str(model), "-c", str(config),
                               "-p", str(tmp_path / name), "--device", "cpu", "--seed", "5"]))

    with caplog.at_level("INFO"):
        planned = go(with_plan, "a")
    assert "plan (s3prl-distill plan" in caplog.text and "time per update:" in caplog.text
    plain = go(runner, "b")
    a, b = read_checkpoint(planned)["state_dict"], read_checkpoint(plain)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    caplog.clear()
    with caplog.at_level("INFO"):
        go(with_plan, "a")  # finished: nothing to plan
    assert "plan (s3prl-distill plan" not in caplog.text
