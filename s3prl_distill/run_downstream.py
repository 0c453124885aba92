"""``python -m s3prl_distill.run_downstream ...``: S3PRL's downstream runner with the plugin loaded.

Takes S3PRL's ``run_downstream`` arguments unchanged (``-m train -u fithubert_local -k ckpt.pt
-d speech_commands -c config.yaml -n exp``). It

1. applies :func:`s3prl_distill.compat.apply` (S3PRL on current torch/torchaudio),
2. calls :func:`s3prl_distill.registry.register` (our upstreams on ``s3prl.hub``; raises on a
   name collision instead of only logging it as the import hook does),
3. translates current launchers' distributed arguments for S3PRL: ``torchrun`` sets
   ``LOCAL_RANK``/``WORLD_SIZE`` in the environment and ``torch.distributed.launch`` passes
   ``--local-rank=N``; S3PRL 0.4.18 only reads ``--local_rank N`` (and otherwise silently trains
   every process alone),
4. fixes S3PRL's distributed training loop (non-leader ranks never counted their steps and
   trained on until the leader exited) and lets it run on CPU-only machines with gloo (see
   :func:`distributed_fixes`),
5. runs S3PRL's own ``s3prl.run_downstream.main()``.

Example (2 GPUs)::

    torchrun --nproc_per_node 2 -m s3prl_distill.run_downstream -m train \\
        -u distilhubert_local -k student.pt -d speech_commands -c ks.yaml -n ks_distilhubert
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import List, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["main", "normalize_distributed_args", "distributed_fixes"]


def normalize_distributed_args(argv: Sequence[str], environ: Mapping[str, str]) -> List[str]:
    """Rewrite launcher arguments into the ``--local_rank N`` S3PRL expects.

    * ``--local-rank=N`` / ``--local-rank N`` (``torch.distributed.launch`` since torch 2.0)
      -> ``--local_rank N``;
    * no rank argument but ``LOCAL_RANK`` and ``WORLD_SIZE`` in ``environ`` (``torchrun``)
      -> ``--local_rank $LOCAL_RANK`` appended.

    Raises:
        ValueError: a rank that is not an integer, or ``--local_rank`` disagreeing with
            ``LOCAL_RANK``.
    """
    out: List[str] = []
    rank: Optional[str] = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("--local-rank", "--local_rank"):
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            rank = value
            i += 1
            continue
        out.append(arg)
        i += 1
    env_rank = environ.get("LOCAL_RANK")
    if rank is None and env_rank is not None and environ.get("WORLD_SIZE") is not None:
        rank = env_rank
    if rank is not None:
        try:
            int(rank)
        except ValueError:
            raise ValueError(f"--local_rank must be an integer, got {rank!r}") from None
        if env_rank is not None and int(env_rank) != int(rank):
            raise ValueError(f"--local_rank {rank} disagrees with LOCAL_RANK={env_rank} set by the "
                             f"launcher")
        out += ["--local_rank", str(int(rank))]
    return out


def _has_option(args: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args)


def _ddp_class():
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class S3PRLDistributedDataParallel(DistributedDataParallel):
        """DDP as S3PRL's runner needs it on current torch.

        * Evaluation (eval mode or no grad) calls the wrapped module directly: S3PRL evaluates on
          the leader alone, and DDP's forward would start a buffer broadcast (e.g. the tasks'
          ``best_score`` buffer) that the other ranks never join (hang with nccl, crash with gloo).
        * ``device_ids`` is dropped for modules on the CPU (torch rejects it there).
        """

        def __init__(self, module, device_ids=None, **kwargs):
            on_cpu = all(p.device.type == "cpu" for p in module.parameters())
            super().__init__(module, device_ids=None if on_cpu else device_ids, **kwargs)

        def forward(self, *args, **kwargs):
            if not self.training or not torch.is_grad_enabled():
                return self.module(*args, **kwargs)
            return super().forward(*args, **kwargs)

    return S3PRLDistributedDataParallel


@contextlib.contextmanager
def _count_steps_on_every_rank():
    """Make S3PRL's non-leader ranks stop after ``total_steps`` like the leader.

    S3PRL 0.4.18's ``Runner.train`` advances its step counter (the "overall" progress bar) only
    on the leader: other ranks ``continue`` before ``pbar.update(1)``, so they never reach
    ``total_steps``, keep training after the leader has finished and crash when it exits
    ("Connection closed by peer"). ``optimizer.zero_grad()`` runs exactly once per step on every
    rank (after the update or the NaN skip; the OOM path re-raises under DDP), so on non-leader
    ranks this advances that counter right after ``zero_grad``.
    """
    import s3prl.downstream.runner as s3prl_runner
    from torch.distributed import get_rank, is_initialized

    state = {}
    real_tqdm = s3prl_runner.tqdm
    real_get_optimizer = s3prl_runner.Runner._get_optimizer

    class tqdm(real_tqdm):  # the runner also calls tqdm.write: keep the class interface
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("desc") == "overall":
                state["pbar"] = self

    def get_optimizer(self, *args, **kwargs):
        optimizer = real_get_optimizer(self, *args, **kwargs)
        if is_initialized() and get_rank() > 0:
            zero_grad = optimizer.zero_grad

            def zero_grad_and_count(*zargs, **zkwargs):
                zero_grad(*zargs, **zkwargs)
                if "pbar" in state:
                    state["pbar"].update(1)

            optimizer.zero_grad = zero_grad_and_count
        return optimizer

    real_ddp = s3prl_runner.DDP
    s3prl_runner.tqdm, s3prl_runner.Runner._get_optimizer = tqdm, get_optimizer
    s3prl_runner.DDP = _ddp_class()
    try:
        yield
    finally:
        s3prl_runner.tqdm, s3prl_runner.Runner._get_optimizer = real_tqdm, real_get_optimizer
        s3prl_runner.DDP = real_ddp


@contextlib.contextmanager
def _cpu_only(args: List[str]):
    """Let S3PRL's DDP path run without CUDA: gloo by default, no ``torch.cuda.set_device``."""
    import torch

    if not _has_option(args, "--backend"):
        args = args + ["--backend", "gloo"]
    saved_set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    logger.info("no CUDA: S3PRL's distributed run goes through gloo on the CPU")
    try:
        yield args
    finally:
        torch.cuda.set_device = saved_set_device


@contextlib.contextmanager
def distributed_fixes(args: List[str]):
    """Fixes for S3PRL's distributed downstream training, active only for ``--local_rank`` runs.

    * every rank stops after ``total_steps`` (:func:`_count_steps_on_every_rank`);
    * the leader's evaluation bypasses DDP, and CPU modules get no ``device_ids``
      (:func:`_ddp_class`);
    * without CUDA: S3PRL's ``main()`` calls ``torch.cuda.set_device`` (fails): for the run it
      is a no-op, and ``--backend`` defaults to ``gloo`` (``nccl`` needs GPUs).

    Yields the (possibly extended) argument list.
    """
    import torch

    if "--local_rank" not in args:
        yield args
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(_count_steps_on_every_rank())
        if not torch.cuda.is_available():
            args = stack.enter_context(_cpu_only(args))
        yield args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run S3PRL's downstream runner with s3prl-distill registered. Returns 0 on success."""
    from s3prl_distill import compat, registry

    compat.apply()
    names = registry.register()
    logger.debug("s3prl-distill upstreams: %s", ", ".join(names))
    args = normalize_distributed_args(sys.argv[1:] if argv is None else argv, os.environ)

    import s3prl.run_downstream as s3prl_run_downstream

    saved = sys.argv
    try:
        with distributed_fixes(args) as run_args:
            sys.argv = ["s3prl_distill.run_downstream"] + run_args
            s3prl_run_downstream.main()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
