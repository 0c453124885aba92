"""The S3PRL pretrain expert: S3PRL's runner's view of our distillation run."""

from __future__ import annotations

import torch

import s3prl_distill  # noqa: F401
from distill_fixtures import make_audio_dir, make_teacher, model_yaml
from s3prl_distill.pretrain.expert import UpstreamPretrainExpert


def _expert(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    make_audio_dir(tmp_path / "audio", count=8)
    datarc = {"train_batch_size": 2, "num_workers": 0, "audio_dir": str(tmp_path / "audio"),
              "length_index": str(tmp_path / "lengths.tsv"), "crop_seconds": 0.5}
    torch.manual_seed(0)
    return UpstreamPretrainExpert(datarc, str(model_yaml(tmp_path, teacher)), "cpu", seed=3)


def test_every_pass_of_s3prls_runner_is_a_new_epoch(tmp_path):
    """S3PRL's runner iterates the loader once per epoch and never names the epoch: each pass
    must reshuffle (as S3PRL's own distiller does), not repeat epoch 0."""
    expert = _expert(tmp_path)
    loader = expert.get_train_dataloader()
    assert len(loader.dataset) == len(loader) == 4  # S3PRL's len(dataloader.dataset): batches
    passes = [[tuple(b["ids"]) for b in loader] for _ in range(3)]
    assert all(len(p) == 4 for p in passes)
    assert passes[0] != passes[1] or passes[1] != passes[2]
    assert loader.epoch == 3
    # the same seed gives the same epochs again
    again = _expert(tmp_path).get_train_dataloader()
    assert [[tuple(b["ids"]) for b in again] for _ in range(3)] == passes


def test_checkpoint_step_counts_the_update_s3prl_just_made(tmp_path):
    expert = _expert(tmp_path)
    states = expert.add_state_to_save({"Step": 3, "Optimizer": {}})
    assert states["training"]["step"] == 4 and states["Step"] == 3
    assert states["Upstream_Config"] == states["model_config"]
    expert.load_model(states)


def test_a_resumed_s3prl_run_continues_the_data_where_it_stopped(tmp_path):
    """S3PRL's runner restarts its loader on resume; ours continues after the batches consumed
    by the checkpoint's updates (Step + 1 updates x gradient accumulation)."""
    expert = _expert(tmp_path)
    loader = expert.get_train_dataloader()
    uninterrupted = [tuple(b["ids"]) for _ in range(3) for b in loader]
    resumed = _expert(tmp_path)
    states = resumed.add_state_to_save({"Step": 2, "Config": {"runner": {"gradient_accumulate_steps": 2}}})
    resumed.load_model(states)  # 3 updates x 2 batches = 6 batches done: epoch 1, batch 2
    rest = [tuple(b["ids"]) for _ in range(2) for b in resumed.get_train_dataloader()]
    assert rest[:6] == uninterrupted[6:12]
