"""s3prl_distill.run_downstream: launcher-argument translation and S3PRL DDP fixes (unit level;
the end-to-end runs, torchrun included, are in test_e2e_downstream.py)."""

from __future__ import annotations

import io
import socket

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill import run_downstream as rd
from s3prl_distill.run_downstream import normalize_distributed_args

compat.apply()


@pytest.mark.parametrize("argv, env, expected", [
    (["-m", "train"], {}, ["-m", "train"]),
    (["-m", "train", "--local-rank=1"], {}, ["-m", "train", "--local_rank", "1"]),
    (["--local-rank", "0", "-m", "train"], {}, ["-m", "train", "--local_rank", "0"]),
    (["-m", "train", "--local_rank", "2"], {}, ["-m", "train", "--local_rank", "2"]),
    (["-m", "train"], {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, ["-m", "train", "--local_rank", "1"]),
    (["-m", "train"], {"LOCAL_RANK": "1"}, ["-m", "train"]),  # no launcher world: leave as is
    (["-m", "train", "--local-rank=1"], {"LOCAL_RANK": "1", "WORLD_SIZE": "2"},
     ["-m", "train", "--local_rank", "1"]),
])
def test_normalize_distributed_args(argv, env, expected):
    assert normalize_distributed_args(argv, env) == expected


def test_normalize_distributed_args_errors():
    with pytest.raises(ValueError, match="integer, got 'x'"):
        normalize_distributed_args(["--local-rank=x"], {})
    with pytest.raises(ValueError, match="disagrees with LOCAL_RANK=0"):
        normalize_distributed_args(["--local-rank=1"], {"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="needs a value"):
        normalize_distributed_args(["--local-rank"], {})


def test_fixes_inactive_without_local_rank():
    import s3prl.downstream.runner as runner

    real = (runner.DDP, runner.tqdm, runner.Runner._get_optimizer, torch.cuda.set_device)
    with rd.distributed_fixes(["-m", "train"]) as args:
        assert args == ["-m", "train"]
        assert (runner.DDP, runner.tqdm, runner.Runner._get_optimizer, torch.cuda.set_device) == real


def test_non_leader_ranks_count_their_steps(monkeypatch):
    import s3prl.downstream.runner as runner
    import torch.distributed as dist

    monkeypatch.setattr(runner.Runner, "_get_optimizer",
                        lambda self, params: torch.optim.SGD(params, lr=0.1))
    param = [torch.nn.Parameter(torch.zeros(2))]
    real_tqdm = runner.tqdm
    for rank, expected in ((0, 0), (1, 3)):
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
        with rd._count_steps_on_every_rank():
            optimizer = runner.Runner._get_optimizer(object(), param)
            bar = runner.tqdm(total=5, desc="overall", file=io.StringIO())
            other = runner.tqdm(total=5, desc="train", file=io.StringIO())
            for _ in range(3):
                optimizer.zero_grad()
            assert bar.n == expected and other.n == 0  # the leader updates its bar itself
            assert callable(runner.tqdm.write)
        assert runner.tqdm is real_tqdm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_class_bypasses_ddp_for_evaluation(monkeypatch):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    try:
        cls = rd._ddp_class()
        model = cls(torch.nn.Linear(3, 2), device_ids=[0])  # CPU module: device_ids dropped
        assert model.device_ids is None
        x = torch.randn(4, 3)
        calls = []
        real_pre = model._pre_forward
        monkeypatch.setattr(model, "_pre_forward", lambda *a, **k: calls.append(1) or real_pre(*a, **k))
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), model.module(x))
        assert calls == []  # no collective for the leader-only evaluation
        model.train()
        model(x).sum().backward()
        assert calls == [1]  # training goes through DDP
    finally:
        dist.destroy_process_group()


def test_cpu_only_defaults_backend_and_restores(monkeypatch):
    real = torch.cuda.set_device
    with rd._cpu_only(["-m", "train", "--local_rank", "0"]) as args:
        assert args[-2:] == ["--backend", "gloo"]
        torch.cuda.set_device(0)  # a no-op here, not an error
    assert torch.cuda.set_device is real
    with rd._cpu_only(["--backend=gloo", "--local_rank", "0"]) as args:
        assert args.count("--backend") == 0 and "--backend=gloo" in args
