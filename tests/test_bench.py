"""The benchmark harness: timing, memory, targets, tables, and `s3prl-distill bench --quick`."""

from __future__ import annotations

import json

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.benchmark.candidates import Candidate
from s3prl_distill.benchmark.inference import InputSetting, make_batch, run_inference_bench
from s3prl_distill.benchmark.report import (
    default_targets, evaluate_targets, format_table, format_targets, rows_to_json,
)
from s3prl_distill.benchmark.timing import machine_info, peak_rss_delta_mb, time_interleaved
from s3prl_distill.cli import main


def test_time_interleaved_rotates_and_counts():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    timings = time_interleaved(calls, warmup=1, repeats=3)
    assert order[:3] == ["a", "b", "c"]            # warm-up
    assert order[3:6] == ["a", "b", "c"]
    assert order[6:9] == ["b", "c", "a"]           # rotated by one each round
    assert order[9:12] == ["c", "a", "b"]
    assert all(len(t.times_ms) == 3 for t in timings.values())
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved(calls, repeats=0)


def test_peak_rss_sees_a_large_temporary():
    def work():
        x = torch.ones(16 * 2**20)  # 64 MiB, freed on return
        x += 1
        return float(x[0])

    peak = peak_rss_delta_mb(work)
    if peak is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert peak >= 48


def test_machine_info_reports_threads_and_load():
    info = machine_info()
    info.finish()
    text = info.describe()
    assert f"threads {torch.get_num_threads()}" in text and "load avg" in text
    assert len(info.loadavg_start) == 3 and len(info.loadavg_end) == 3


def test_make_batch_pads_with_zeros():
    wavs, lengths = make_batch([0.5, 0.25])
    assert wavs.shape == (2, 8000) and lengths.tolist() == [8000, 4000]
    assert torch.all(wavs[1, 4000:] == 0) and wavs[1, :4000].abs().sum() > 0


def _fake(name, kind, ms, macs):
    """A candidate whose 'forward' does ``macs`` real MACs (a matmul) and sleeps nothing."""
    a = torch.zeros(1, macs)
    b = torch.zeros(macs, 1)
    return Candidate(name, lambda w, l: a @ b, params=macs, params_with_heads=macs + 1, kind=kind,
                     note=f"{ms}")


def test_inference_bench_rows_and_ratios():
    cands = [_fake("teacher", "teacher", 0, 64), _fake("small", "ours", 0, 16)]
    settings = [InputSetting("10s", (0.05,)), InputSetting("padded", (0.05, 0.02))]
    result = run_inference_bench(cands, settings, repeats=2, warmup=0)
    rows = {r["model"]: r for r in result.rows}
    for key in ("model", "params", "params_with_heads", "macs", "ms_10s", "ratio_10s", "ms_padded",
                "ratio_padded", "macs_ratio", "peak_mb"):
        assert key in rows["small"]
    assert rows["teacher"]["ratio_10s"] == 1.0
    assert rows["teacher"]["macs"] == 64 and rows["small"]["macs"] == 16
    assert rows["small"]["macs_ratio"] == 4.0
    with pytest.raises(ValueError, match="teacher"):
        run_inference_bench([_fake("x", "ours", 0, 4)], settings, repeats=1, warmup=0)


def test_targets_measured_shortfall_and_mac_limit():
    rows = [
        {"model": "teacher", "ms_10s": 1000.0, "macs": 70},
        {"model": "distilhubert", "ms_10s": 400.0, "macs": 35},
        {"model": "s3prl_distiller", "ms_10s": 450.0, "macs": 35},
        {"model": "distilhubert@s3prl", "ms_10s": 420.0, "macs": 35},
        {"model": "fithubert", "ms_10s": 250.0, "macs": 14},
    ]
    names = [r["model"] for r in rows]
    targets = default_targets(names)
    assert {(t.candidate, t.baseline) for t in targets} == {
        ("distilhubert", "teacher"), ("distilhubert@s3prl", "s3prl_distiller"), ("fithubert", "teacher"),
    }
    results = {(r["candidate"], r["baseline"]): r for r in evaluate_targets(rows, targets)}
    dh = results[("distilhubert", "teacher")]
    assert dh["measured"] == 2.5 and dh["met"] and dh["shortfall"] == 0 and dh["mac_ratio"] == 2.0
    fit = results[("fithubert", "teacher")]
    assert fit["measured"] == 4.0 and not fit["met"] and fit["shortfall"] == 0.5
    assert evaluate_targets([{k: v for k, v in r.items() if k != "ms_10s"} for r in rows], targets) == []
    text = format_targets(list(results.values()))
    assert "MISSED by 0.50x" in text and "MET" in text and "paper 2.80x" in text


def test_table_and_json():
    rows = [{"model": "teacher", "params": 94.4e6, "params_with_heads": 94.4e6, "macs": 74.1e9,
             "macs_ratio": 1.0, "ms_10s": 700.0, "ratio_10s": 1.0, "peak_mb": 150.0, "mem_ratio": 1.0},
            {"model": "distilhubert", "params": 23.5e6, "params_with_heads": 27.0e6, "macs": 34.9e9,
             "macs_ratio": 2.12, "ms_10s": 330.0, "ratio_10s": 2.12, "peak_mb": None, "mem_ratio": None}]
    table = format_table(rows, ["10s"], {"10s": "B=1 10 s"})
    assert "distilhubert" in table and "2.12x" in table and "74.1 G" in table and "23.50M" in table
    data = json.loads(rows_to_json([dict(rows[0], x=float("nan"))]))
    assert data[0]["x"] is None


@pytest.mark.slow
def test_bench_quick_cli_writes_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--tiny-models", "--settings", "10s,padded", "--repeats", "1",
                 "--models", "distilhubert.yaml,fithubert.yaml", "--variants", "int8",
                 "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "load avg" in text and "threads" in text and "MAC ratio" in text
    rows = json.loads(out.read_text())
    inference = {r["model"]: r for r in rows if r["section"] == "inference"}
    for name in ("teacher", "s3prl_distiller", "s3prl_distiller+heads", "distilhubert@s3prl",
                 "distilhubert", "fithubert", "distilhubert+int8"):
        assert name in inference, name
        for key in ("params", "params_with_heads", "macs", "ms_10s", "ratio_10s"):
            assert inference[name][key] is not None, (name, key)
    assert inference["teacher"]["ratio_10s"] == 1.0
    assert inference["distilhubert+int8"]["macs"] == inference["distilhubert"]["macs"]
    assert any(r["section"] == "target" for r in rows)


@pytest.mark.slow
def test_training_bench_tiny():
    from s3prl_distill.benchmark.training import format_training, run_training_bench

    result = run_training_bench(tiny=True, steps=1)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"s3prl_distiller_step", "ours_step", "ours_step-nofast", "ours_step+cache",
                         "ours_step+bucketing", "ours_step+bucketing+cache"}
    assert rows["s3prl_distiller_step"]["ratio_vs_s3prl"] == 1.0
    assert rows["ours_step+bucketing"]["padding_fraction"] < rows["ours_step"]["padding_fraction"]
    assert all(r["audio_s_per_s"] > 0 for r in rows.values())
    teachers = {r["model"]: r for r in result["teacher_rows"]}
    assert set(teachers) == {"s3prl_teacher", "ours_teacher", "ours_teacher-nofast", "ours_teacher+bfloat16"}
    assert teachers["s3prl_teacher"]["ratio_vs_s3prl"] == 1.0
    drift = result["drift"]
    assert {r["precision"] for r in drift} == {"bfloat16", "float16"}
    assert {r["layer"] for r in drift} == set(range(5))  # every layer of the tiny teacher
    assert all(0.9 < r["cosine"] <= 1.0 + 1e-6 and r["l1"] > 0 for r in drift)
    text = format_training(result)
    assert "target ours_step vs s3prl_distiller_step" in text
    assert "target ours_step+bucketing vs s3prl_distiller_step: >= 1.80x" in text
    assert "drift of the targets against float32" in text


def test_nofast_variant_turns_every_fast_path_off_and_keeps_outputs():
    from s3prl_distill.benchmark.candidates import student_candidate
    from s3prl_distill.benchmark.variants import make_variant
    from s3prl_distill.models import build_student
    from s3prl_distill.models.config import CNNConfig, ConvLayerConfig, EncoderConfig, StudentConfig

    spec = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2), (16, 2, 2), (16, 2, 2)]
    cfg = StudentConfig(
        family="distilhubert", cnn=CNNConfig(layers=[ConvLayerConfig(*s) for s in spec]),
        encoder=EncoderConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, pos_conv_kernel=16,
                              pos_conv_groups=4),
    )
    torch.manual_seed(0)
    base = student_candidate("distilhubert", build_student(cfg))
    plain = make_variant(base, "nofast")
    switches = [m for m in plain.module.modules() if hasattr(m, "fast_path")]
    kinds = {type(m).__name__ for m in switches}
    assert {"ConvLayerBlock", "ConvolutionalPositionalEmbedding", "SelfAttention"} <= kinds
    assert not any(m.fast_path for m in switches) and not plain.module.feature_extractor.per_utterance
    assert all(m.fast_path for m in base.module.modules() if hasattr(m, "fast_path"))
    wavs, lengths = make_batch((0.5, 0.3))
    with torch.inference_mode():
        a, b = base.run(wavs, lengths), plain.run(wavs, lengths)
    for x, y in zip(a.hidden_states, b.hidden_states):
        n = int(a.lengths[1])
        assert torch.allclose(x[1, :n], y[1, :n], atol=1e-4)


def test_onnx_rows_beside_pytorch_same_run_same_input(tmp_path, capsys):
    """``bench --onnx``: ONNX Runtime rows (fp32, int8) next to the PyTorch ones, timed in the same
    interleaved rounds on the same batches; the arithmetic (MACs) is the base model's."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--tiny-models", "--settings", "10s,padded", "--repeats", "1",
                 "--models", "distilhubert.yaml", "--no-s3prl", "--no-memory", "--onnx",
                 "--json", str(out)])
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out.read_text()) if r["section"] == "inference"}
    for name in ("distilhubert+onnx", "distilhubert+onnx-int8"):
        assert rows[name]["ms_10s"] > 0 and rows[name]["ms_padded"] > 0
        assert rows[name]["macs"] == rows["distilhubert"]["macs"]
    assert rows["distilhubert+onnx-int8"]["note"].startswith("ONNX Runtime int8")
    assert "distilhubert+onnx" in capsys.readouterr().out
