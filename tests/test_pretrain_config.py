"""Runner configs: the shipped paper setups, strict parsing, the learning-rate schedule."""

from __future__ import annotations

import glob
import os

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, load_yaml
from s3prl_distill.pretrain.config import PretrainConfig
from s3prl_distill.pretrain.optim import build_optimizer, build_scheduler
from s3prl_distill.run_pretrain import PRETRAIN_DIR

CONFIGS = os.path.join(PRETRAIN_DIR, "configs")
LIBRI_960 = ["train-clean-100", "train-clean-360", "train-other-500"]


def load(name):
    path = os.path.join(CONFIGS, name)
    return PretrainConfig.from_data(load_yaml(path), where=path)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))))
def test_every_shipped_config_parses(path):
    cfg = PretrainConfig.from_data(load_yaml(path), where=path)
    assert cfg.optimizer.lr > 0


def test_distilhubert_setup_matches_s3prls_release():
    """The paper's schedule with S3PRL's config_runner.yaml (optimizer, clipping 5.0, fp16) and
    config_model.yaml's 250000-sample crop."""
    cfg = load("distilhubert.yaml")
    assert cfg.runner.total_steps == 200_000 and cfg.runner.n_epochs <= 0
    assert cfg.pretrain_expert.datarc.train_batch_size * cfg.runner.gradient_accumulate_steps == 24
    opt = cfg.optimizer
    assert opt.name == "AdamW_with_schedule" and opt.lr == 2e-4 and opt.warmup_proportion == 0.07
    assert tuple(opt.betas) == (0.9, 0.98) and opt.eps == 1e-6 and opt.weight_decay_groups == "s3prl"
    assert cfg.runner.gradient_clipping == 5.0 and cfg.runner.amp_precision == "fp16"
    assert cfg.pretrain_expert.datarc.crop_seconds * 16000 == 250_000
    assert cfg.pretrain_expert.datarc.sets == LIBRI_960


@pytest.mark.parametrize("name,epochs,sets", [("fithubert-100.yaml", 100, ["train-clean-100"]),
                                              ("fithubert-960.yaml", 100, LIBRI_960)])
def test_fithubert_setups_match_the_official_code(name, epochs, sets):
    """The official train.py + data/conf/fithubert.yaml: S3PRL's AdamW_with_schedule, no clipping,
    whole utterances, 100 epochs, dev-clean loss each epoch with patience 15."""
    cfg = load(name)
    assert cfg.runner.n_epochs == epochs and cfg.pretrain_expert.datarc.sets == sets
    opt = cfg.optimizer
    assert opt.name == "AdamW_with_schedule" and opt.lr == 5e-4 and tuple(opt.betas) == (0.9, 0.98)
    assert opt.eps == 1e-6 and opt.weight_decay == 1e-6 and opt.warmup_proportion == 0.05
    assert opt.weight_decay_groups == "s3prl"  # in effect officially; "uniform" = the paper's 1e-6
    assert cfg.runner.gradient_clipping is None and cfg.pretrain_expert.datarc.crop_seconds == 0
    assert cfg.runner.eval_each_epoch and cfg.runner.early_stopping_patience == 15
    assert cfg.pretrain_expert.datarc.dev_sets == ["dev-clean"]
    assert cfg.pretrain_expert.datarc.batching == "fithubert"  # the official buckets
    # 2 GPUs x 3 utterances x 4 accumulation steps
    assert cfg.pretrain_expert.datarc.train_batch_size * cfg.runner.gradient_accumulate_steps == 24


def test_linear_warmup_then_linear_decay_to_zero():
    data = load_yaml(os.path.join(CONFIGS, "cpu_tiny.yaml"))
    data["optimizer"] = {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 2.0e-4}
    data["scheduler"] = {"name": "linear_schedule_with_warmup", "warmup_proportion": 0.07}
    cfg = PretrainConfig.from_data(data, where="x.yaml")  # warm-up 7 % of the updates
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(cfg.optimizer, [("w", param)], 200)
    assert isinstance(opt, torch.optim.Adam)
    sched = build_scheduler(cfg.scheduler, opt, 200)  # warm-up 7 % = 14 updates
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0
    assert lrs[7] == pytest.approx(1e-4)
    assert lrs[14] == pytest.approx(2e-4) and max(lrs) == pytest.approx(2e-4)
    assert lrs[107] == pytest.approx(1e-4)
    assert lrs[200] == 0.0


def test_unknown_and_missing_sections_are_named():
    data = load_yaml(os.path.join(CONFIGS, "cpu_tiny.yaml"))
    with pytest.raises(ConfigError, match=r"x\.yaml: unknown top-level key\(s\) \['runer'\]"):
        PretrainConfig.from_data({**data, "runer": {}}, where="x.yaml")
    with pytest.raises(ConfigError, match=r"x\.yaml: missing top-level key 'optimizer'"):
        PretrainConfig.from_data({k: v for k, v in data.items() if k != "optimizer"}, where="x.yaml")
    bad = {**data, "scheduler": {"name": "linear_schedule_with_warmup", "num_warmup_steps": 3,
                                 "warmup_proportion": 0.1}}
    with pytest.raises(ConfigError, match=r"x\.yaml: scheduler.*not both"):
        PretrainConfig.from_data(bad, where="x.yaml")
    bad = {**data, "optimizer": {**data["optimizer"], "torch_optim_name": "Adagrad"}}
    with pytest.raises(ConfigError, match=r"x\.yaml: optimizer\.torch_optim_name"):
        PretrainConfig.from_data(bad, where="x.yaml")
