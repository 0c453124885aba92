"""S3PRL's own distiller model config (pretrain/distiller/config_model.yaml) accepted and translated,
and parity with S3PRL's DistillerModel + its published loss at identical weights.

S3PRL's wheel ships ``s3prl.upstream.distiller.model.DistillerModel`` (used here) but not
``s3prl/pretrain/distiller`` (its ``DistillerForPretrain.compute_loss`` is written out below as its
published formula: ``rec_loss.mean()`` over B x N x T x D + ``cosine_loss`` x ``sim_loss.mean()``
over B x N x T, padded frames included).
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from s3prl_distill.benchmark.s3prl_distiller import build_s3prl_distiller, convert_s3prl_state_dict
from s3prl_distill.config import ConfigError
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.distill.losses import build_loss
from s3prl_distill.distill.s3prl_schema import parse_conv_layers, student_config_from_distiller
from s3prl_distill.models import build_student

# S3PRL 0.4.18 s3prl/pretrain/distiller/config_model.yaml, its values written out as data
# (note: its released YAML predicts teacher layers [4, 12] with n_tasks 2; the paper's
# DistilHuBERT predicts [4, 8, 12], our upstream_configs/distilhubert.yaml)
S3PRL_CONFIG_MODEL = {
    "distiller": {
        "extractor_mode": "default",
        "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
        "extractor_dropout": 0.0,
        "feature_grad_mult": 0.1,
        "conv_pos": 128,
        "conv_pos_groups": 16,
        "encoder_layers": 2,
        "encoder_embed_dim": 768,
        "encoder_ffn_embed_dim": 3072,
        "encoder_attention_heads": 12,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "attention_type": "original",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "encoder_layerdrop": 0.0,
        "final_dim": 768,
        "out_layer_type": "expand-last",
        "n_tasks": 2,
        "task_emb_type": "expand-last",
        "loss_type": "l1",
        "feat_pen_loss": 0.0,
        "cosine_loss": 1.0,
        "pred_layer_id": [4, 12],
        "init_teacher_conv_layers": True,
        "init_teacher_encoder_layers": True,
    },
    "teacher": {"model": "hubert_base", "n_layers": 12},
    "task": {"sequence_length": 250000},
    "audio": {"target_level": "None"},  # YAML `None` is the string 'None'
}


def s3prl_data(local=True, **distiller):
    data = copy.deepcopy(S3PRL_CONFIG_MODEL)
    data["distiller"].update(distiller)
    if local:  # the one documented line that makes it run offline
        data["teacher"]["local"] = {"source": "fairseq", "path": "/data/hubert_base_ls960.pt"}
    return data


def s3prl_loss(pred, target, cosine_loss):
    """DistillerForPretrain.compute_loss (pred/target [B, N, T, D]) as published."""
    rec = (pred - target).abs()
    sim = -torch.nn.functional.logsigmoid(torch.nn.functional.cosine_similarity(pred, target, dim=-1))
    return rec.mean() + cosine_loss * sim.mean()


def padded_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    wavs = torch.randn(len(lengths), max(lengths), generator=g)
    lens = torch.tensor(lengths)
    for b, n in enumerate(lengths):
        wavs[b, n:] = 0.0
    pad_mask = (torch.arange(max(lengths))[None] < lens[:, None]).float()  # S3PRL's pad_mask
    return wavs, lens, pad_mask


# --------------------------------------------------------------------------- translation


def test_config_model_yaml_translates(tmp_path):
    path = tmp_path / "config_model.yaml"
    path.write_text(yaml.safe_dump(s3prl_data()))
    cfg = DistillConfig.from_yaml(path)
    assert cfg.schema == "s3prl" and cfg.source == str(path)
    s = cfg.student
    assert [(c.channels, c.kernel, c.stride) for c in s.cnn.layers] == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert s.cnn.norm == "group_norm_first" and not s.cnn.bias and not s.cnn.group_norm_over_padding
    e = s.encoder
    assert (e.dim, e.ffn_dim, e.num_heads, e.num_layers, e.pos_conv_kernel, e.pos_conv_groups) == \
        (768, 3072, 12, 2, 128, 16)
    assert (e.dropout, e.attention_dropout, e.activation_dropout, e.feature_dropout) == (0.1, 0.1, 0.1, 0.0)
    assert not e.feature_layer_norm and e.feature_projection and not e.layer_norm_first
    assert [(h.student_layer, h.teacher_layer, h.type) for h in s.heads] == [(2, 4, "mlp"), (2, 12, "mlp")]
    assert s.teacher_dim == 768 and s.teacher_layers == 12 and s.feature_grad_mult == 0.1
    assert s.layer0 == "projection" and s.weight_init == "fairseq" and not s.keep_heads
    assert cfg.loss.type == "distilhubert" and cfg.loss.cos_weight == 1.0
    assert cfg.loss.layer_reduction == "mean" and not cfg.loss.include_padded_frames
    assert cfg.init.from_teacher and cfg.init.num_layers == 2 and not cfg.init.copy_encoder_layer_norm
    assert cfg.crop_samples == 250000
    assert cfg.teacher.source == "fairseq" and cfg.teacher.path == "/data/hubert_base_ls960.pt"
    # round trip through our schema (what a checkpoint stores)
    again = DistillConfig.from_data(cfg.to_data())
    assert again.student == cfg.student and again.loss == cfg.loss and again.init == cfg.init
    assert again.crop_samples == 250000 and again.schema == "ours"


def test_missing_keys_take_s3prl_defaults_and_switches_map():
    data = {"distiller": {"encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
                          "conv_pos": 8, "conv_pos_groups": 2, "final_dim": 16, "n_tasks": 3,
                          "extractor_conv_feature_layers": "[(32, 10, 5)] + 2 * [(32, 3, 2)]",
                          "group_norm_over_padding": True, "include_padded_frames": True},
            "teacher": {"model": "x", "n_layers": 4, "local": {"source": "fairseq", "path": "/t.pt"}}}
    cfg = DistillConfig.from_data(data, where="m.yaml")
    # DistillerConfig defaults: 1 layer, pred_layer_id 1..n_tasks, cosine_loss 0, no teacher init,
    # feature_grad_mult 1.0
    assert cfg.student.encoder.num_layers == 1
    assert [h.teacher_layer for h in cfg.student.heads] == [1, 2, 3]
    assert cfg.loss.cos_weight == 0.0 and not cfg.init.from_teacher
    assert cfg.student.feature_grad_mult == 1.0 and cfg.crop_samples is None
    assert not cfg.student.encoder.feature_projection  # 32 channels = 32 dims: no post_extract_proj
    assert cfg.student.cnn.group_norm_over_padding and cfg.loss.include_padded_frames
    assert len(cfg.student.cnn.layers) == 3


def test_self_hidden_is_the_predict_with_hidden_baseline():
    cfg = DistillConfig.from_data(s3prl_data(task_emb_type="self-hidden", out_layer_type="self-hidden",
                                             n_tasks=3, pred_layer_id=[4, 8, 12]))
    assert [(h.student_layer, h.teacher_layer, h.type) for h in cfg.student.heads] == \
        [(0, 4, "identity"), (1, 8, "identity"), (2, 12, "identity")]


def test_hub_teacher_name_maps_to_the_s3prl_source():
    data = s3prl_data(local=False)
    try:
        cfg = DistillConfig.from_data(data, where="c.yaml")
    except ConfigError as err:  # until TeacherConfig accepts a path-less hub entry
        assert "hubert_base" in str(err) and "teacher.local" in str(err)
    else:
        assert (cfg.teacher.source, cfg.teacher.name, cfg.teacher.path) == ("s3prl", "hubert_base", None)


def test_sequence_length_zero_means_whole_utterances():
    data = s3prl_data()
    data["task"]["sequence_length"] = 0
    assert DistillConfig.from_data(data).crop_samples == 0
    data["task"]["sequence_length"] = -5
    assert DistillConfig.from_data(data).crop_samples == 0
    del data["task"]
    assert DistillConfig.from_data(data).crop_samples is None


@pytest.mark.parametrize("change, match", [
    ({"loss_type": "l2"}, r"distiller\.loss_type"),
    ({"task_emb_type": "concat"}, r"distiller\.task_emb_type"),
    ({"attention_type": "sparse"}, r"distiller\.attention_type"),
    ({"activation_fn": "relu"}, r"distiller\.activation_fn"),
    ({"extractor_mode": "group_norm"}, r"distiller\.extractor_mode"),
    ({"extractor_dropout": 0.1}, r"distiller\.extractor_dropout"),
    ({"encoder_layerdrop": 0.05}, r"distiller\.encoder_layerdrop"),
    ({"feat_pen_loss": 1.0}, r"distiller\.feat_pen_loss"),
    ({"encoder_layers": 0}, r"distiller\.encoder_layers"),
    ({"n_tasks": 3}, r"distiller\.n_tasks.*pred_layer_id"),
    ({"init_teacher_encoder_layers": False}, r"init_teacher_conv_layers.*init_teacher_encoder_layers"),
    ({"extractor_conv_feature_layers": "__import__('os').system('true')"},
     r"distiller\.extractor_conv_feature_layers"),
    ({"extractor_conv_feature_layers": "[(512, 10)]"}, r"3 integers"),
    ({"pred_layer_id": [4, 13]}, r"teacher_layer: 13 is out of range"),
    ({"encoder_layres": 2}, r"unknown key\(s\) \['encoder_layres'\]"),
    ({"group_norm_over_padding": "yes"}, r"distiller\.group_norm_over_padding"),
])
def test_unsupported_or_unknown_keys_are_named(change, match):
    with pytest.raises(ConfigError, match=r"^m\.yaml: .*" + match):
        DistillConfig.from_data(s3prl_data(**change), where="m.yaml")


def test_section_errors_are_named():
    data = s3prl_data()
    data["task"]["seq_len"] = 1
    with pytest.raises(ConfigError, match=r"m\.yaml: task: unknown key\(s\) \['seq_len'\]"):
        DistillConfig.from_data(data, where="m.yaml")
    data = s3prl_data()
    data["student"] = {}
    with pytest.raises(ConfigError, match=r"m\.yaml: unknown top-level key\(s\) \['student'\]"):
        DistillConfig.from_data(data, where="m.yaml")
    data = s3prl_data()
    del data["teacher"]["n_layers"]
    with pytest.raises(ConfigError, match=r"m\.yaml: teacher\.n_layers"):
        DistillConfig.from_data(data, where="m.yaml")
    data = s3prl_data()
    data["teacher"]["local"] = {"source": "fairseq"}
    with pytest.raises(ConfigError, match=r"m\.yaml: teacher\.local.*path"):
        DistillConfig.from_data(data, where="m.yaml")


def test_parse_conv_layers_is_safe_and_complete():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert parse_conv_layers("2 * [(8, 3, 1)] + [[4, 2, 2]]") == [(8, 3, 1), (8, 3, 1), (4, 2, 2)]
    assert parse_conv_layers([[8, 10, 5], [8, 3, 2]]) == [(8, 10, 5), (8, 3, 2)]  # a YAML list
    for bad in ("open('x')", "[(1, 2, 3)] * x", "[(1, 2, 3)] - [(1, 2, 3)]", "[(1.5, 2, 3)]", "[]",
                "[(0, 2, 3)]", "[(1, 2, 3)] * -1 + [(1, 2, 3)] * [(1, 2, 3)]", "lambda: 1", "(1, 2, 3",
                "[(512, 10, 5)] * 10 ** 12", "[(512, 10, 5)] * 1000000000000", "[" * 5000 + "]" * 5000,
                "[(1, 2, 3)] * 65", {"a": 1}):
        with pytest.raises(ConfigError, match="layers"):
            parse_conv_layers(bad, where="layers")


# --------------------------------------------------------------------------- parity with S3PRL


def test_translated_student_equals_s3prl_distiller_model_at_identical_weights():
    """config_model.yaml -> our student: same parameter shapes, and the same head outputs as S3PRL's
    DistillerModel (1e-5) on a padded batch with S3PRL's group norm over padding; with ours, the
    valid frames of each utterance equal S3PRL's on that utterance alone."""
    data = s3prl_data(group_norm_over_padding=True)
    cfg = DistillConfig.from_data(data)
    theirs = build_s3prl_distiller(S3PRL_CONFIG_MODEL["distiller"], seed=0)
    converted = convert_s3prl_state_dict(theirs.state_dict(), S3PRL_CONFIG_MODEL["distiller"])
    ours = build_student(cfg.student).eval()
    assert {k: tuple(v.shape) for k, v in converted.items()} == \
        {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(converted)
    wavs, lens, pad_mask = padded_batch([8000, 5600, 3200])
    with torch.no_grad():
        feat, feat_final, pred, out_mask = theirs(wavs, pad_mask)
        out = ours(wavs, lens)
    assert out.prediction_lengths.tolist() == out_mask.sum(1).long().tolist()
    for j in range(2):  # every frame, padded ones too
        assert torch.allclose(out.predictions[j], pred[:, j], atol=1e-5), (pred[:, j] - out.predictions[j]).abs().max()
    for b, t in enumerate(out.prediction_lengths.tolist()):  # layer 0 = the projection (S3PRL zeroes
        assert torch.allclose(out.layer_outputs[0][b, :t], feat_final[b, :t], atol=1e-5)  # its padding)

    masked = build_student(DistillConfig.from_data(s3prl_data()).student).eval()
    masked.load_state_dict(converted)
    with torch.no_grad():
        mine = masked(wavs, lens)
        n = int(lens[2])
        alone = theirs(wavs[2:, :n], torch.ones(1, n))[2]
    t = int(mine.prediction_lengths[2])
    assert not torch.allclose(mine.predictions[0][2, :t], pred[2, 0, :t], atol=1e-3)  # padding matters
    for j in range(2):
        assert torch.allclose(mine.predictions[j][2, :t], alone[0, j], atol=1e-5)


TINY = {
    "extractor_conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
    "feature_grad_mult": 0.1, "conv_pos": 8, "conv_pos_groups": 2, "encoder_layers": 2,
    "encoder_embed_dim": 24, "encoder_ffn_embed_dim": 32, "encoder_attention_heads": 2,
    "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "final_dim": 12,
    "n_tasks": 3, "pred_layer_id": [1, 2, 3], "cosine_loss": 1.0,
    "init_teacher_conv_layers": False, "init_teacher_encoder_layers": False,
}


def test_training_steps_with_s3prl_switches_equal_s3prl_on_padded_batches():
    """Three Adam steps on padded batches: our student + loss with S3PRL's switches on and S3PRL's
    DistillerModel + its published loss give the same per-step losses and the same parameters."""
    data = {"distiller": {**TINY, "group_norm_over_padding": True, "include_padded_frames": True},
            "teacher": {"model": "x", "n_layers": 3, "local": {"source": "fairseq", "path": "/t.pt"}}}
    cfg = DistillConfig.from_data(data)
    theirs = build_s3prl_distiller(TINY, seed=3).train()
    ours = build_student(cfg.student).train()
    ours.load_state_dict(convert_s3prl_state_dict(theirs.state_dict(), TINY))
    loss_fn = build_loss(cfg.loss, ours.target_layers)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    opt_o = torch.optim.Adam(ours.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(7)
    for step, lengths in enumerate(([4000, 2600], [3300, 3300, 1700], [2000, 1200])):
        wavs, lens, pad_mask = padded_batch(lengths, seed=step)
        _, _, pred, out_mask = theirs(wavs, pad_mask)
        target = torch.randn(pred.shape, generator=g)  # the teacher's states, padded frames included
        ref = s3prl_loss(pred, target, cosine_loss=1.0)
        out = ours(wavs, lens)
        mask = out_mask.bool()
        total, _ = loss_fn(out.predictions, list(target.unbind(1)), mask)
        assert total.item() == pytest.approx(ref.item(), rel=1e-5), step
        for opt, loss in ((opt_t, ref), (opt_o, total)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = convert_s3prl_state_dict(theirs.state_dict(), TINY)
    own = ours.state_dict()
    for key, value in after.items():
        assert torch.allclose(own[key], value, atol=1e-5), key


def test_student_config_from_distiller_names_the_file():
    with pytest.raises(ConfigError, match=r"^f\.yaml: distiller: expected a mapping"):
        student_config_from_distiller([1, 2], where="f.yaml")


def test_crop_samples_in_our_schema():
    student = {"encoder": {"num_layers": 1}, "heads": [{"student_layer": 1, "teacher_layer": 12}]}
    assert DistillConfig.from_data({"student": student}).crop_samples is None
    assert DistillConfig.from_data({"student": student, "crop_samples": 0}).crop_samples == 0
    for bad in (-1, 2.5, True, "250000"):
        with pytest.raises(ConfigError, match=r"m\.yaml: crop_samples"):
            DistillConfig.from_data({"student": student, "crop_samples": bad}, where="m.yaml")


def test_s3prl_schema_teacher_runs_as_s3prls_unless_told():
    """S3PRL runs its teacher in float32 (autocast off): the translation says so; our extra
    teacher keys (eval_mode, padding, precision) pass through to the local teacher."""
    from s3prl_distill.distill.s3prl_schema import _teacher

    hub = _teacher({"model": "hubert_base", "n_layers": 12}, "m.yaml")
    assert hub.source == "s3prl" and hub.name == "hubert_base" and hub.precision == "float32"
    local = _teacher({"model": "hubert_base", "n_layers": 12, "eval_mode": False, "padding": "s3prl",
                      "local": {"source": "fairseq", "path": "/x.pt"}}, "m.yaml")
    assert (local.source, local.precision, local.eval_mode, local.padding) == ("fairseq", "float32", False, "s3prl")
    assert _teacher({"model": "hubert_base", "precision": "auto",
                     "local": {"source": "fairseq", "path": "/x.pt"}}, "m.yaml").precision == "auto"
