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
4. runs S3PRL's own ``s3prl.run_downstream.main()``.

Example (2 GPUs)::

    torchrun --nproc_per_node 2 -m s3prl_distill.run_downstream -m train \\
        -u distilhubert_local -k student.pt -d speech_commands -c ks.yaml -n ks_distilhubert
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["main", "normalize_distributed_args"]


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run S3PRL's downstream runner with s3prl-distill registered. Returns 0 on success."""
    from s3prl_distill import compat, registry

    compat.apply()
    names = registry.register()
    logger.debug("s3prl-distill upstreams: %s", ", ".join(names))
    args = normalize_distributed_args(sys.argv[1:] if argv is None else argv, os.environ)

    import s3prl.run_downstream as s3prl_run_downstream

    saved = sys.argv
    sys.argv = ["s3prl_distill.run_downstream"] + args
    try:
        s3prl_run_downstream.main()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
