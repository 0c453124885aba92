"""``s3prl-distill profile -u NAME [-k CKPT]``: parameters and MACs of an S3PRL upstream, counted
as the SUPERB leaderboard counts them.

The leaderboard's profiling (the SUPERB challenge tool) runs the upstream, batch size 1, on 32
LibriSpeech test-clean utterances (the (82*i+1)-th of the 2,620, sorted by length) and reports the
summed MACs, also per bucket of 8: short, medium, long, longer = the "(1)~(4)" columns. The MACs of
our students (and of every upstream without data-dependent control flow) depend only on the input
length, so this command feeds inputs of exactly those 32 lengths (:data:`SUPERB_PROFILE_LENGTHS`)
and needs no corpus. Parameters are those of the upstream module as S3PRL loads it (prediction
heads dropped unless the checkpoint's config keeps them).

MACs are counted by :mod:`s3prl_distill.macs` with its ``superb`` convention, which reproduces the
leaderboard's published rows exactly (HuBERT Base: 94,697,600 parameters, 1,669,156,022,848 MACs;
FBANK: 479,126,160 MACs; tests/test_profile.py): matrix products and convolutions (a convolution on
the frames it outputs), 1 MAC per element of a feed-forward activation, 4 per attention
probability; normalisation, residual additions, biases, FFTs and the CNN's activations are free.
The model runs on its plain path (fast paths off, :mod:`s3prl_distill.export.plain`): a model is
charged for its convolutions, not for a faster way to compute them. ``--convention products``
counts products only (what ``s3prl-distill bench`` reports).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

HELP = "parameters and MACs of an S3PRL upstream on the SUPERB leaderboard's profiling lengths"

__all__ = ["HELP", "add_arguments", "run", "profile_upstream", "load_upstream", "Profile",
           "SUPERB_PROFILE_LENGTHS", "BUCKETS"]

SAMPLE_RATE = 16000
#: samples of the 32 LibriSpeech test-clean utterances the SUPERB profiling tool uses, ascending
SUPERB_PROFILE_LENGTHS = (
    20560, 34560, 38480, 42560, 45600, 48720, 52000, 55120,
    59120, 62720, 66400, 71200, 75200, 78640, 82800, 87520,
    92720, 98560, 104400, 111120, 118480, 125040, 132720, 142640,
    154000, 166720, 180880, 197920, 217920, 239280, 268160, 326000,
)
BUCKETS = ("short", "medium", "long", "longer")


@dataclass
class Profile:
    """What ``profile`` reports (``macs`` summed over all inputs, one forward each)."""

    upstream: str
    params: int
    macs: int
    seconds: float                           # total audio of the inputs
    macs_per_second: float                   # macs / seconds
    buckets: Dict[str, int] = field(default_factory=dict)   # MACs per bucket of 8 inputs
    by_module: Dict[str, int] = field(default_factory=dict)  # MACs per top-level module
    lengths: List[int] = field(default_factory=list)
    per_input: List[int] = field(default_factory=list)       # MACs of each input, in order


def load_upstream(name: str, ckpt: Optional[str] = None, model_config: Optional[str] = None
                  ) -> torch.nn.Module:
    """``getattr(s3prl.hub, name)(ckpt=..., model_config=...)`` with our entries registered."""
    from s3prl_distill import registry

    registry.register()
    import s3prl.hub as hub

    if not hasattr(hub, name):
        raise ValueError(f"-u {name}: no such S3PRL upstream (s3prl.hub has no entry {name!r}; "
                         f"register a checkpoint with: s3prl-distill register {name} CKPT)")
    kwargs = {}
    if ckpt:
        kwargs["ckpt"] = ckpt
    if model_config:
        kwargs["model_config"] = model_config
    return getattr(hub, name)(**kwargs)


def profile_upstream(model: torch.nn.Module, name: str = "upstream",
                     lengths: Sequence[int] = SUPERB_PROFILE_LENGTHS, seed: int = 0,
                     convention: str = "superb") -> Profile:
    """Count parameters and MACs of ``model`` (an S3PRL upstream taking a list of wavs).

    Args:
        model: the upstream; run in eval mode, on its plain path, batch size 1, once per length.
        lengths: input lengths in samples at 16 kHz; buckets are reported when there are 32.
        seed: seed of the random-noise inputs (MACs do not depend on the values).
        convention: :data:`s3prl_distill.macs.CONVENTIONS` (``superb``: the leaderboard's count).
    """
    from s3prl_distill.export.plain import plain_path
    from s3prl_distill.macs import MacCounter

    if not lengths or any(int(n) <= 0 for n in lengths):
        raise ValueError(f"lengths must be positive sample counts, got {list(lengths)}")
    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    params = sum(p.numel() for p in model.parameters())
    per_input: List[int] = []
    by_module: Dict[str, int] = {}
    for n in lengths:
        wav = torch.randn(int(n), generator=generator) * 0.1
        with torch.inference_mode(), plain_path(model), MacCounter(model, convention) as counter:
            model([wav])
        count = counter.result()
        per_input.append(count.total)
        for key, macs in count.by_prefix(1).items():
            by_module[key or "<root>"] = by_module.get(key or "<root>", 0) + macs
    buckets = {}
    if len(per_input) == 4 * 8:
        buckets = {b: sum(per_input[8 * i:8 * (i + 1)]) for i, b in enumerate(BUCKETS)}
    seconds = sum(int(n) for n in lengths) / SAMPLE_RATE
    total = sum(per_input)
    return Profile(upstream=name, params=params, macs=total, seconds=seconds,
                   macs_per_second=total / seconds, buckets=buckets, by_module=by_module,
                   lengths=[int(n) for n in lengths], per_input=per_input)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--upstream", required=True,
                        help="S3PRL upstream name (ours, a registered checkpoint, or S3PRL's)")
    parser.add_argument("-k", "--upstream_ckpt", "--ckpt", dest="ckpt",
                        help="checkpoint, for entries that take one (e.g. distill_student_local)")
    parser.add_argument("-g", "--upstream_model_config", dest="model_config")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(SUPERB_PROFILE_LENGTHS),
                        help="input lengths in samples (default: the SUPERB profiling lengths)")
    parser.add_argument("--convention", choices=("superb", "products"), default="superb",
                        help="superb: the leaderboard's count (default); products: matrix products "
                             "and convolutions only")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")


def run(args: argparse.Namespace) -> int:
    from s3prl_distill.macs import format_macs

    try:
        model = load_upstream(args.upstream, args.ckpt, args.model_config)
        result = profile_upstream(model, args.upstream, args.lengths, convention=args.convention)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    print(f"upstream        {result.upstream}")
    print(f"parameters      {result.params:,} ({result.params / 1e6:.2f} M)")
    print(f"MACs            {result.macs:,} ({format_macs(result.macs)}) over {len(result.lengths)}"
          f" inputs, {result.seconds:.2f} s of audio")
    print(f"MACs / second   {format_macs(result.macs_per_second)}")
    for i, (bucket, macs) in enumerate(result.buckets.items(), 1):
        print(f"MACs ({i}) {bucket:<7}{macs:,} ({format_macs(macs)})")
    for module, macs in sorted(result.by_module.items(), key=lambda kv: -kv[1]):
        print(f"  {module:<30}{format_macs(macs)}")
    return 0
