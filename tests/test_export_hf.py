"""Hugging Face export: the folder loads with plain ``transformers`` (4.57) and its
``output_hidden_states`` equal our upstream's hidden states; students it cannot express are
refused with one line."""

from __future__ import annotations

import json

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.config import from_dict
from s3prl_distill.export import ExportError
from s3prl_distill.export.hf import HEADS_FILE, HEADS_META, export_hf, hf_refusal
from s3prl_distill.export.onnx import example_batch
from s3prl_distill.models import StudentConfig, build_student

transformers = pytest.importorskip("transformers")

CNN = [[32, 10, 5], [32, 3, 2], [48, 1, 1], [48, 2, 2]]  # a pointwise layer too; stride 20


def _student(norm="group_norm_first", pre_ln=False, layer0="transformer_input", feat_ln=True,
             heads=False, bias=False, seed=0):
    data = {"family": "distilhubert", "layer0": layer0,
            "cnn": {"layers": [{"channels": c, "kernel": k, "stride": s} for c, k, s in CNN],
                    "norm": norm, "bias": bias},
            "encoder": {"dim": 32, "ffn_dim": 48, "num_heads": 4, "num_layers": 2,
                        "layer_norm_first": pre_ln, "pos_conv_kernel": 8, "pos_conv_groups": 4,
                        "feature_layer_norm": feat_ln},
            "teacher_dim": 32}
    if heads:
        data.update(heads=[{"student_layer": 2, "teacher_layer": 4}], keep_heads=True)
    torch.manual_seed(seed)
    student = build_student(from_dict(StudentConfig, data, where="test"))
    with torch.no_grad():  # non-trivial norms (their default init is the identity)
        for name, p in student.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return student.eval()


def _hf_states(model, wavs, mask=None):
    with torch.inference_mode():
        out = model(wavs, attention_mask=mask, output_hidden_states=True)
        # HubertModel's own modules: the projection of the CNN features (our layer 0 when it is
        # the projection; HF's hidden_states[0] is the transformer input)
        projection = model.feature_projection(model.feature_extractor(wavs).transpose(1, 2))
    return list(out.hidden_states), projection


def _check(student, folder, lengths, batched):
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    assert type(model).__name__ == "HubertModel"
    wavs, wav_lengths = example_batch(lengths, seed=3)
    with torch.inference_mode():
        ours = student(wavs, wav_lengths, with_heads=False)
    mask = (torch.arange(wavs.shape[1])[None] < wav_lengths[:, None]).long()
    worst = 0.0
    for b, n in enumerate(ours.lengths.tolist()):
        if batched:  # the padded batch as HF takes it for this CNN
            states, projection = _hf_states(model, wavs, mask)
            index = b
        else:  # one utterance alone
            states, projection = _hf_states(model, wavs[b:b + 1, : lengths[b]])
            index = 0
        theirs = list(states)
        if student.config.layer0 == "projection":
            theirs[0] = projection
        assert len(theirs) == len(ours.hidden_states)
        for mine, hf in zip(ours.hidden_states, theirs):
            worst = max(worst, float((mine[b, :n] - hf[index, :n]).abs().max()))
    return worst


def test_post_ln_distilhubert_group_norm_projection_layer0(tmp_path):
    """DistilHuBERT as S3PRL published it: group-norm CNN, no feature LayerNorm, layer 0 = the
    projection. Each utterance alone equals ours; in HF's padded batch the longest one does (HF's
    group norm sees the padding of the shorter ones, by design)."""
    student = _student(layer0="projection", feat_ln=False)
    files = export_hf(student, tmp_path / "hf")
    assert sorted(str(p).rsplit("/", 1)[1] for p in files) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is False and pre["return_attention_mask"] is False
    assert _check(student, tmp_path / "hf", [4321, 2000, 3001], batched=False) < 1e-4
    model = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    wavs, lengths = example_batch([4321, 2000], seed=3)
    with torch.inference_mode():
        ours = student(wavs, lengths, with_heads=False)
        hf = model(wavs, output_hidden_states=True).hidden_states
    n = int(ours.lengths[0])
    assert max(float((a[0, :n] - b[0, :n]).abs().max()) for a, b in zip(ours.hidden_states[1:], hf[1:])) < 1e-4


@pytest.mark.parametrize("bias", [False, True])
def test_pre_ln_layer_norm_cnn_padded_batch_equal(tmp_path, bias):
    """A pre-LN student with a layer-norm CNN: the whole padded batch of mixed lengths, with the
    attention mask, equals ours hidden state by hidden state."""
    student = _student(norm="layer_norm", pre_ln=True, bias=bias)
    export_hf(student, tmp_path / "hf")
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["return_attention_mask"] is True
    assert _check(student, tmp_path / "hf", [5000, 2345, 3999, 1200], batched=True) < 1e-4


def test_post_ln_layer_norm_cnn_padded_batch_equal(tmp_path):
    student = _student(norm="layer_norm", pre_ln=False)
    export_hf(student, tmp_path / "hf")
    assert _check(student, tmp_path / "hf", [3000, 4444, 1500], batched=True) < 1e-4


def test_heads_kept_in_a_documented_extra_file(tmp_path):
    from safetensors.torch import load_file

    student = _student(heads=True)
    export_hf(student, tmp_path / "hf")
    heads = load_file(str(tmp_path / "hf" / HEADS_FILE))
    assert sorted(heads) == sorted(k for k in student.state_dict() if k.startswith("heads."))
    described = json.loads((tmp_path / "hf" / HEADS_META).read_text())
    assert described["heads"][0]["teacher_layer"] == 4
    model = transformers.AutoModel.from_pretrained(str(tmp_path / "hf"))  # heads ignored by HF
    assert not any("heads" in k for k in model.state_dict())


@pytest.mark.parametrize("change, reason", [
    ({"time_reduction": 2, "family": "fithubert"}, "time reduction"),
    ({"front_end": "log_mel", "log_mel": {"layers": [{"channels": 32, "kernel": 3, "stride": 2}]},
      "encoder": {"dim": 32, "ffn_dim": 48, "num_heads": 4, "num_layers": 1, "pos_conv_kernel": 0,
                  "sinusoidal_positions": True}}, "front end is 'log_mel'"),
    ({"encoder": {"dim": 32, "ffn_dim": 48, "num_heads": 4, "num_layers": 1, "pos_conv_kernel": 0}},
     "no convolutional positional embedding"),
    ({"cnn": {"layers": [{"channels": 32, "kernel": 10, "stride": 5}], "norm": "none"}}, "no norm"),
])
def test_inexpressible_students_are_refused_in_one_line_pointing_at_onnx(tmp_path, change, reason):
    data = {"cnn": {"layers": [{"channels": 32, "kernel": 10, "stride": 5}]},
            "encoder": {"dim": 32, "ffn_dim": 48, "num_heads": 4, "num_layers": 1,
                        "pos_conv_kernel": 8, "pos_conv_groups": 4}, "teacher_dim": 32}
    data.update(change)
    cfg = from_dict(StudentConfig, data, where="test")
    message = hf_refusal(cfg)
    assert message and reason in message and "--to onnx" in message and "\n" not in message
    with pytest.raises(ExportError, match="--to onnx"):
        export_hf(build_student(cfg), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_hf(_student(), tmp_path / "hf")
    assert (tmp_path / "hf" / "mine.txt").read_text() == "keep"
