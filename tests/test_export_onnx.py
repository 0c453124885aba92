"""ONNX export of every student family: ONNX Runtime equals PyTorch on padded batches of mixed
lengths the trace never saw; the int8 copy is smaller and close."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.export.onnx import OnnxRunner, compare_onnx, example_batch, export_onnx
from s3prl_distill.models import build_student
from s3prl_distill.paths import upstream_configs_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

FAMILIES = ["distilhubert.yaml", "fithubert_k1.yaml", "fithubert.yaml", "fithubert_k3.yaml",
            "whisper_tiny_distilhubert.yaml", "whisper_tiny_fithubert.yaml"]


def tiny_student(yaml: str, keep_heads: bool = False):
    """The published config of ``yaml`` with a thin, 2-layer encoder (same front end, same
    time reduction, same positions, same layer-0 and layout rules)."""
    cfg = DistillConfig.from_yaml(os.path.join(upstream_configs_dir(), yaml)).student
    enc = cfg.encoder
    small = dataclasses.replace(enc, dim=48, ffn_dim=64, num_heads=4, num_layers=2,
                                pos_conv_kernel=16 if enc.pos_conv_kernel else 0, pos_conv_groups=4)
    if cfg.front_end == "log_mel" and not enc.feature_projection:
        layers = [dataclasses.replace(l) for l in cfg.log_mel.layers]
        layers[-1] = dataclasses.replace(layers[-1], channels=48)
        cfg = dataclasses.replace(cfg, log_mel=dataclasses.replace(cfg.log_mel, layers=layers))
    heads = [dataclasses.replace(h, student_layer=min(h.student_layer, 2)) for h in cfg.heads][:2]
    cfg = dataclasses.replace(cfg, encoder=small, heads=heads, teacher_dim=48,
                              keep_heads=keep_heads and bool(heads),
                              hidden_states=cfg.hidden_states if keep_heads else "layers")
    torch.manual_seed(0)
    student = build_student(cfg)
    if not keep_heads:
        student.drop_heads(force=True)
    return student.eval()


@pytest.mark.parametrize("yaml", FAMILIES)
def test_onnx_runtime_equals_pytorch_on_unseen_padded_lengths(tmp_path, yaml):
    student = tiny_student(yaml)
    info = export_onnx(student, str(tmp_path / "s.onnx"))
    assert info.max_abs_diff < 1e-4
    assert info.outputs[-1] == "output_lengths"
    assert len(info.outputs) == student.num_hidden_states + 1
    runner = OnnxRunner(info.path, threads=1)
    # batch sizes and lengths the trace never saw, incl. the shortest input the student takes
    shortest = int(student.receptive_field)
    batches = [[7777, 3001, 12345, shortest], [shortest + 1], [16000] * 3]
    assert compare_onnx(runner, student, batches) < 1e-4
    # output frames for S > max(lengths): the graph computes over all S samples; valid frames equal
    wavs, lengths = example_batch([5000, 3000], seed=9)
    padded = torch.cat([wavs, torch.zeros(2, 700)], 1)
    states, out_lengths = runner(padded, lengths)
    with torch.inference_mode():
        ref = student(wavs, lengths, with_heads=False)
    assert out_lengths.tolist() == ref.lengths.tolist()
    for got, want in zip(states, ref.hidden_states):
        for b, n in enumerate(ref.lengths.tolist()):
            assert (got[b, :n] - want[b, :n]).abs().max() < 1e-4
    # the int8 copy: smaller, same outputs and lengths, small difference (reported, not hidden)
    assert info.int8_bytes < info.bytes
    assert info.int8_max_abs_diff is not None and np.isfinite(info.int8_max_abs_diff)
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["versions"]["opset"] == "17" and meta["downsample_rate"] == student.downsample_rate


def test_exported_graph_does_not_depend_on_the_fast_paths(tmp_path):
    """The trace takes the plain path whatever the student's fast-path switches say, and the
    student in memory keeps its switches and mode."""
    student = tiny_student("distilhubert.yaml")
    info = export_onnx(student, str(tmp_path / "s.onnx"), int8=False)
    assert info.int8_path is None and not (tmp_path / "s.int8.onnx").exists()
    assert not student.training
    assert not any("fast_path" in vars(m) for m in student.modules())


def test_heads_in_the_hidden_states_are_exported(tmp_path):
    student = tiny_student("distilhubert_keep_heads.yaml", keep_heads=True)
    assert student.hidden_states_layout != "layers"
    info = export_onnx(student, str(tmp_path / "s.onnx"), int8=False)
    assert info.num_hidden_states == student.num_hidden_states
    assert info.max_abs_diff < 1e-4


def test_bad_or_taken_output_name_is_one_clear_error(tmp_path):
    from s3prl_distill.export import ExportError

    with pytest.raises(ExportError, match="must end in .onnx"):
        export_onnx(tiny_student("distilhubert.yaml"), str(tmp_path / "s.bin"))
    (tmp_path / "s.json").write_text("mine")
    with pytest.raises(ExportError, match="exists; choose a new -o"):
        export_onnx(tiny_student("distilhubert.yaml"), str(tmp_path / "s.onnx"))
    assert (tmp_path / "s.json").read_text() == "mine" and not (tmp_path / "s.onnx").exists()
