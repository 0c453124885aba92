"""S3PRL's own distiller configs run through our runner, changed only in their data and teacher paths.

S3PRL 0.4.18's ``pretrain/distiller/config_model.yaml`` (written out as data in
``test_s3prl_schema.S3PRL_CONFIG_MODEL``) and ``config_runner.yaml`` (below) - full size: a 2-layer
x 768 student from a (random-weight) HuBERT Base teacher - with only ``teacher.local`` added (the
one documented key for an offline teacher) and the datarc paths pointed at generated audio in
LibriSpeech's layout with S3PRL's length tables. Checks what the run took from them: S3PRL's
optimizer, clipping, loss averaging, teacher initialisation (encoder layer_norm not copied), crop
and batches.
"""

from __future__ import annotations

import copy
import csv

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir
from test_s3prl_schema import S3PRL_CONFIG_MODEL

# S3PRL 0.4.18 s3prl/pretrain/distiller/config_runner.yaml, its values written out as data
S3PRL_CONFIG_RUNNER = {
    "runner": {"n_epochs": -1, "total_steps": 200000, "gradient_clipping": 5.0,
               "gradient_accumulate_steps": 1, "log_step": 50, "save_step": 10000, "max_keep": 10,
               "fp16": True},
    "optimizer": {"name": "AdamW_with_schedule", "lr": 2.0e-4, "warmup_proportion": 0.07,
                  "betas": [0.9, 0.98], "eps": 1.0e-6, "weight_decay": 1.0e-6},
    "pretrain_expert": {"datarc": {"num_workers": 24, "train_batch_size": 24, "max_timestep": 0,
                                   "libri_root": "/work/harry87122/dataset/LibriSpeech/",
                                   "file_path": "/work/harry87122/s3prl/s3prl/data/len_for_bucket",
                                   "sets": ["train-clean-100", "train-clean-360", "train-other-500"]}},
}


def test_s3prl_runner_config_parses_to_s3prls_recipe():
    from s3prl_distill.pretrain.config import PretrainConfig

    cfg = PretrainConfig.from_data(S3PRL_CONFIG_RUNNER, where="config_runner.yaml")
    assert cfg.optimizer.name == "AdamW_with_schedule" and cfg.optimizer.weight_decay_groups == "s3prl"
    assert cfg.runner.gradient_clipping == 5.0 and cfg.runner.amp_precision == "fp16"
    data = cfg.pretrain_expert.datarc
    assert data.source_kind == "s3prl_csv" and data.batching == "s3prl" and data.max_timestep == 0


def _librispeech_with_tables(root, count=6):
    """Generated audio in a LibriSpeech-like tree + S3PRL's length table of the subset."""
    audio = root / "LibriSpeech" / "train-clean-100"
    make_audio_dir(audio, count=count, seconds=(1.0, 1.6))
    tables = root / "len_for_bucket"
    tables.mkdir(parents=True)
    import soundfile as sf

    rows = sorted(((str(p.relative_to(root / "LibriSpeech")), sf.info(str(p)).frames)
                   for p in audio.rglob("*.wav")), key=lambda r: -r[1])
    with open(tables / "train-clean-100.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["", "file_path", "length", "label"])
        for i, (rel, n) in enumerate(rows):
            out.writerow([i, rel, n, ""])
    return root / "LibriSpeech", tables


def _hubert_base_teacher(path):
    """A random-weight HuBERT Base (torchaudio layout), as a local teacher file."""
    from s3prl_distill.config import to_dict
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch, build_wav2vec2_model

    arch = Wav2Vec2Arch()  # fairseq / torchaudio HuBERT Base
    torch.manual_seed(0)
    model = build_wav2vec2_model(arch, "hubert")
    torch.save({"state_dict": model.state_dict(), "arch": to_dict(arch), "kind": "hubert"}, path)
    return path


@pytest.mark.slow
def test_s3prls_own_configs_train_through_our_runner(tmp_path):
    from s3prl_distill.checkpoint import read_checkpoint
    from s3prl_distill.io import safe_load
    from s3prl_distill.run_pretrain import parse_args, run

    libri_root, tables = _librispeech_with_tables(tmp_path)
    teacher = _hubert_base_teacher(tmp_path / "hubert_base.pt")
    model = copy.deepcopy(S3PRL_CONFIG_MODEL)
    model["teacher"]["local"] = {"source": "torchaudio", "path": str(teacher)}  # the one added key
    runner = copy.deepcopy(S3PRL_CONFIG_RUNNER)
    datarc = runner["pretrain_expert"]["datarc"]
    datarc.update(libri_root=str(libri_root), file_path=str(tables), sets=["train-clean-100"],
                  num_workers=0, train_batch_size=3)  # data paths; a batch this machine holds
    (tmp_path / "config_model.yaml").write_text(yaml.safe_dump(model))
    (tmp_path / "config_runner.yaml").write_text(yaml.safe_dump(runner))
    final = run(parse_args([
        "-u", "distiller", "-g", str(tmp_path / "config_model.yaml"), "-c",
        str(tmp_path / "config_runner.yaml"), "-p", str(tmp_path / "exp"), "--device", "cpu",
        "-o", "config.runner.total_steps=2,,config.runner.save_step=2,,config.runner.plan_at_start=false"]))
    ckpt = safe_load(final)
    assert ckpt["step"] == 2 and ckpt["training"]["precision"] == "bf16"  # fp16 needs CUDA
    groups = ckpt["optimizer"]["param_groups"]
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.01]  # S3PRL's grouped decay
    student = read_checkpoint(final)
    assert student["config"]["encoder"]["num_layers"] == 2 and student["config"]["teacher_dim"] == 768
    assert [h["teacher_layer"] for h in student["config"]["heads"]] == [4, 12]
    # the teacher initialisation copied the CNN (feature_grad_mult 0.1 barely moves it in 2 updates)
    teacher_state = safe_load(teacher)["state_dict"]
    key = "feature_extractor.conv_layers.3.conv.weight"
    assert (student["state_dict"][key] - teacher_state[key]).abs().max() < 1e-2
    assert ckpt["model_config"]["teacher"]["model"] == "hubert_base"  # S3PRL's config, as given
