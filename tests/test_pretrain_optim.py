"""The optimizer of a run: S3PRL's AdamW_with_schedule reproduced exactly, groups, schedules, checks."""

from __future__ import annotations

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.pretrain.config import OptimizerConfig, SchedulerConfig
from s3prl_distill.pretrain.optim import (WarmupLinearAdamW, build_optimizer, build_scheduler,
                                          check_optimizer_state, current_lr, param_groups,
                                          warmup_linear)

S3PRL_DISTILLER = {"name": "AdamW_with_schedule", "lr": 2.0e-4, "warmup_proportion": 0.07,
                   "betas": [0.9, 0.98], "eps": 1.0e-6, "weight_decay": 1.0e-6}


def _net(seed=0):
    """Parameter names as in S3PRL's / our models: a projection, a layer norm, a head."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential()
    net.add_module("proj", torch.nn.Linear(4, 3))
    net.add_module("layer_norm", torch.nn.LayerNorm(3))
    net.add_module("heads", torch.nn.Linear(3, 2))
    return net


def _train(net, opt, steps, scaled=True):
    x = torch.linspace(-1, 1, 20).reshape(5, 4)
    for step in range(steps):
        opt.zero_grad()
        net(x * (step + 1 if scaled else 1)).pow(2).sum().backward()
        opt.step()


@pytest.mark.parametrize("total", [20, 3])
def test_adamw_with_schedule_equals_s3prl_installed_optimizer(total):
    """Parameters after every update equal S3PRL's own get_optimizer(AdamW_with_schedule)
    (S3PRL's Lamb with adam=True over its grouped parameters), bit for bit."""
    from s3prl_distill import compat

    compat.apply()
    from s3prl.optimizers import get_optimizer

    ref_net, our_net = _net(), _net()
    ref = get_optimizer([ref_net], total, dict(S3PRL_DISTILLER))
    ours = build_optimizer(from_dict(OptimizerConfig, S3PRL_DISTILLER), our_net.named_parameters(), total)
    x = torch.linspace(-1, 1, 20).reshape(5, 4)
    for step in range(total + 2):  # beyond total_steps the rate is 0, as in S3PRL
        for net, opt in ((ref_net, ref), (our_net, ours)):
            opt.zero_grad()
            net(x * (step + 1)).pow(2).sum().backward()
            opt.step()
        for (name, a), b in zip(ref_net.named_parameters(), our_net.parameters()):
            assert torch.equal(a, b), (step, name, float((a - b).abs().max()))


def test_s3prl_groups_decay_weights_and_layer_norms_not_biases():
    cfg = from_dict(OptimizerConfig, S3PRL_DISTILLER)
    net = _net()
    groups = param_groups(cfg, net.named_parameters())
    names = {id(p): n for n, p in net.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    assert decay == {"proj.weight": 0.01, "proj.bias": 0.0, "layer_norm.weight": 0.01,
                     "layer_norm.bias": 0.0, "heads.weight": 0.01, "heads.bias": 0.0}
    uniform = from_dict(OptimizerConfig, {**S3PRL_DISTILLER, "weight_decay_groups": "uniform"})
    groups = param_groups(uniform, net.named_parameters())
    assert [g["weight_decay"] for g in groups] == [1e-6]
    # torch optimizers keep one group with the optimizer's own weight decay
    plain = from_dict(OptimizerConfig, {"name": "TorchOptim", "torch_optim_name": "AdamW",
                                        "weight_decay": 0.1})
    assert [set(g) for g in param_groups(plain, net.named_parameters())] == [{"params"}]


def test_warmup_linear_schedule_per_update():
    # S3PRL's WarmupLinearSchedule at update t (1-based) of 100 with 7 % warm-up
    assert warmup_linear(1, 100, 0.07) == pytest.approx(0.01 / 0.07)
    assert warmup_linear(7, 100, 0.07) == pytest.approx(1.0)
    assert warmup_linear(50, 100, 0.07) == pytest.approx(0.5 / 0.93)
    assert warmup_linear(100, 100, 0.07) == 0.0 and warmup_linear(130, 100, 0.07) == 0.0
    opt = build_optimizer(from_dict(OptimizerConfig, S3PRL_DISTILLER), _net().named_parameters(), 100)
    assert isinstance(opt, WarmupLinearAdamW)
    assert current_lr(opt) == pytest.approx(2e-4 * 0.01 / 0.07)  # the first update is not at 0
    _train(_net(), opt, 0)


def test_head_lr_with_s3prl_groups_scales_the_heads_only():
    cfg = from_dict(OptimizerConfig, {**S3PRL_DISTILLER, "head_lr": 1e-3})
    net = _net()
    groups = param_groups(cfg, net.named_parameters())
    heads = {id(p) for p in net.heads.parameters()}
    for g in groups:
        assert g.get("lr") == (1e-3 if all(id(p) in heads for p in g["params"]) else None)
    assert sum(len(g["params"]) for g in groups) == 6


def test_scheduler_section_refused_with_a_self_scheduling_optimizer():
    opt = build_optimizer(from_dict(OptimizerConfig, S3PRL_DISTILLER), _net().named_parameters(), 10)
    with pytest.raises(ConfigError, match="own warm-up"):
        build_scheduler(SchedulerConfig(), opt, 10)


def test_optimizer_state_of_another_model_is_refused_before_loading():
    cfg = from_dict(OptimizerConfig, S3PRL_DISTILLER)
    net = _net()
    opt = build_optimizer(cfg, net.named_parameters(), 10)
    _train(net, opt, 2)
    state = opt.state_dict()
    assert check_optimizer_state(opt, state) is None
    other = torch.nn.Sequential()
    other.add_module("proj", torch.nn.Linear(5, 3))  # a different shape
    other.add_module("layer_norm", torch.nn.LayerNorm(3))
    other.add_module("heads", torch.nn.Linear(3, 2))
    opt2 = build_optimizer(cfg, other.named_parameters(), 10)
    assert "shape (3, 4)" in check_optimizer_state(opt2, state)
    fewer = build_optimizer(cfg, list(net.named_parameters())[:-1], 10)
    assert "parameter" in check_optimizer_state(fewer, state)


def test_resumed_optimizer_continues_exactly():
    cfg = from_dict(OptimizerConfig, S3PRL_DISTILLER)
    full_net = _net()
    full = build_optimizer(cfg, full_net.named_parameters(), 12)
    _train(full_net, full, 12, scaled=False)
    half_net = _net()
    half = build_optimizer(cfg, half_net.named_parameters(), 12)
    _train(half_net, half, 6, scaled=False)
    state = half.state_dict()
    resumed_net = _net()
    resumed_net.load_state_dict(half_net.state_dict())
    resumed = build_optimizer(cfg, resumed_net.named_parameters(), 12)
    resumed.load_state_dict(state)
    _train(resumed_net, resumed, 6, scaled=False)
    for a, b in zip(full_net.parameters(), resumed_net.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("key,value,match", [
    ("warmup_proportion", 1.0, "warmup_proportion"), ("weight_decay", -1.0, "weight_decay"),
    ("weight_decay_groups", "fairseq", "weight_decay_groups"), ("name", "Lamb_with_schedule", "name"),
])
def test_bad_optimizer_keys_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(OptimizerConfig, {**S3PRL_DISTILLER, key: value}, where="r.yaml: optimizer")
