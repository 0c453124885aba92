"""Teacher initialisation (numerically the teacher's own layers) and the ``init`` command."""

from __future__ import annotations

import re

import pytest
import torch
import torchaudio  # noqa: F401  (after s3prl_distill: the shim)
import yaml

import s3prl_distill  # noqa: F401
from s3prl_distill import cli
from s3prl_distill.checkpoint import load_student
from s3prl_distill.commands.init import parse_teacher_spec
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.distill.init import init_student_from_teacher
from s3prl_distill.models import InitConfig, StudentConfig, build_student
from s3prl_distill.teachers import build_teacher

CONV = [(8, 10, 5), (8, 3, 2), (8, 2, 2)]


@pytest.fixture
def teacher_file(tmp_path):
    """A random torchaudio HuBERT-style model (3 layers x 16) saved as a state dict."""
    from torchaudio.models import wav2vec2_model

    torch.manual_seed(0)
    model = wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=CONV, extractor_conv_bias=False,
        encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=4,
        encoder_pos_conv_groups=2, encoder_num_layers=3, encoder_num_heads=2,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
    )
    with torch.no_grad():  # a trained model's encoder LayerNorm is not (1, 0)
        model.encoder.transformer.layer_norm.weight.uniform_(0.5, 1.5)
        model.encoder.transformer.layer_norm.bias.normal_(0.0, 0.3)
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    return path


def teacher_section(path):
    return {"source": "torchaudio", "path": str(path), "arch": "hubert",
            "arch_config": {"conv_layers": [list(c) for c in CONV], "embed_dim": 16,
                            "pos_conv_kernel": 4, "pos_conv_groups": 2, "num_layers": 3,
                            "num_heads": 2, "ffn_dim": 32}}


def student_section(num_layers=2):
    return {"family": "distilhubert",
            "cnn": {"layers": [{"channels": c, "kernel": k, "stride": s} for c, k, s in CONV]},
            "encoder": {"dim": 16, "ffn_dim": 32, "num_heads": 2, "num_layers": num_layers,
                        "pos_conv_kernel": 4, "pos_conv_groups": 2},
            "teacher_dim": 16, "teacher_layers": 3,
            "heads": [{"student_layer": num_layers, "teacher_layer": 3}]}


def test_initialised_student_reproduces_the_teacher(teacher_file):
    """With ``copy_encoder_layer_norm`` a student copying every layer is the teacher."""
    teacher = build_teacher(teacher_section(teacher_file))
    student = build_student(from_dict(StudentConfig, student_section(3), where="test")).eval()
    init_student_from_teacher(student, teacher, InitConfig(from_teacher=True, num_layers=3,
                                                           copy_encoder_layer_norm=True))
    wavs = torch.randn(2, 4000)
    lens = torch.tensor([4000, 2500])
    with torch.no_grad():
        t = teacher(wavs, lens)
        s = student(wavs, lens)
    assert torch.equal(t.lengths, s.lengths)
    assert len(t.hidden_states) == len(s.hidden_states) == 4
    for a, b in zip(t.hidden_states, s.hidden_states):
        for i, n in enumerate(lens.tolist()):
            n_frames = int(s.lengths[i])
            assert torch.allclose(a[i, :n_frames], b[i, :n_frames], atol=1e-4)


def test_default_init_is_s3prls_without_the_encoder_layer_norm(teacher_file):
    """S3PRL's DistillerForPretrain copies the CNN, post_extract_proj, pos_conv and the first
    layers, not encoder.layer_norm: it keeps its fresh (1, 0), so the copied layers see other inputs."""
    teacher = build_teacher(teacher_section(teacher_file))
    student = build_student(from_dict(StudentConfig, student_section(3), where="test")).eval()
    copied = init_student_from_teacher(student, teacher, InitConfig(from_teacher=True, num_layers=3))
    assert not any(k.startswith("encoder.transformer.layer_norm.") for k in copied)
    assert "encoder.transformer.pos_conv_embed.conv.bias" in copied
    assert "encoder.transformer.layers.2.final_layer_norm.weight" in copied
    ln = student.encoder.transformer.layer_norm
    assert torch.equal(ln.weight, torch.ones(16)) and torch.equal(ln.bias, torch.zeros(16))
    wavs, lens = torch.randn(1, 4000), torch.tensor([4000])
    with torch.no_grad():
        t, s = teacher(wavs, lens), student(wavs, lens)
    assert not torch.allclose(t.hidden_states[1], s.hidden_states[1], atol=1e-3)


def test_student_without_feature_layer_norm_takes_the_projection(teacher_file):
    """S3PRL's DistilHuBERT layout: no LayerNorm before the projection; the rest is copied."""
    teacher = build_teacher(teacher_section(teacher_file))
    data = student_section(2)
    data["encoder"]["feature_layer_norm"] = False
    student = build_student(from_dict(StudentConfig, data, where="test"))
    copied = init_student_from_teacher(student, teacher, InitConfig(from_teacher=True, num_layers=2))
    assert "encoder.feature_projection.projection.weight" in copied
    assert not any("feature_projection.layer_norm" in k for k in copied)
    ref = teacher.student_init_state(2)
    own = student.state_dict()
    assert all(torch.equal(own[k], ref[k]) for k in copied)


def test_mismatched_student_is_named(teacher_file):
    teacher = build_teacher(teacher_section(teacher_file))
    data = student_section(2)
    data["encoder"]["ffn_dim"] = 24
    student = build_student(from_dict(StudentConfig, data, where="test"))
    with pytest.raises(ValueError, match="intermediate_dense"):
        init_student_from_teacher(student, teacher, InitConfig(from_teacher=True, num_layers=2))


def test_init_command_writes_teacher_initialised_checkpoint(tmp_path, teacher_file, capsys):
    cfg_path = tmp_path / "model.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "student": student_section(2), "teacher": teacher_section(tmp_path / "elsewhere.pt"),
        "loss": {"type": "distilhubert"}, "init": {"from_teacher": True, "num_layers": 2}}))
    out = tmp_path / "init.ckpt"
    # --teacher overrides the section's path
    rc = cli.main(["init", str(cfg_path), "-o", str(out), "--teacher", f"path={teacher_file}"])
    assert rc == 0 and "tensors from the teacher" in capsys.readouterr().out
    student, meta = load_student(out)
    assert meta["training"]["initialised_from_teacher"] and meta["teacher"]["source"] == "torchaudio"
    teacher = build_teacher(teacher_section(teacher_file))
    ref = teacher.student_init_state(2)
    own = student.state_dict()
    ln = "encoder.transformer.layer_norm."  # not copied by default (S3PRL's initialisation)
    assert all(torch.equal(own[k], v) for k, v in ref.items() if not k.startswith(ln))
    assert not torch.equal(own[ln + "weight"], ref[ln + "weight"])

    rc = cli.main(["init", str(cfg_path), "-o", str(tmp_path / "rand.ckpt"), "--no-teacher-init",
                   "--teacher", f"path={teacher_file}"])
    assert rc == 0
    rand, meta = load_student(tmp_path / "rand.ckpt")
    assert not meta["training"]["initialised_from_teacher"]
    key = "encoder.transformer.layers.0.attention.q_proj.weight"
    assert not torch.equal(rand.state_dict()[key], ref[key])


def test_init_command_without_teacher_section(tmp_path, capsys):
    cfg_path = tmp_path / "model.yaml"
    cfg_path.write_text(yaml.safe_dump({"student": student_section(2),
                                        "init": {"from_teacher": True, "num_layers": 2}}))
    # a user error: one line naming the file and key, exit code 2, no traceback
    assert cli.main(["init", str(cfg_path), "-o", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"model\.yaml.*teacher", err) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    # --debug gives the exception itself
    with pytest.raises(ConfigError, match="model.yaml.*teacher"):
        cli.main(["--debug", "init", str(cfg_path), "-o", str(tmp_path / "x.ckpt")])


def test_parse_teacher_spec(tmp_path):
    assert parse_teacher_spec("source=fairseq,path=/d/h.pt,arch=hubert") == {
        "source": "fairseq", "path": "/d/h.pt", "arch": "hubert"}
    assert parse_teacher_spec("source=whisper_ct2,path=null") == {"source": "whisper_ct2", "path": None}
    spec = tmp_path / "t.yaml"
    spec.write_text("teacher: {source: fairseq, path: /x.pt}\n")
    assert parse_teacher_spec(str(spec)) == {"source": "fairseq", "path": "/x.pt"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_teacher_spec("fairseq")
