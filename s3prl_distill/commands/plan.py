"""``s3prl-distill plan -g MODEL.yaml -c RUNNER.yaml [-o ...]``: what a run will cost, before it starts.

Builds the run as configured (data, teacher, student, loss, optimizer; a configured teacher
cache is *not* built), times a few real updates here (or on ``--device``) and prints the time
per update, the total for the configured updates or epochs (with and without a teacher-feature
cache), the cache's disk size, the peak memory of an update and the longest utterance a batch can
hold before memory runs out (:mod:`s3prl_distill.benchmark.plan`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch

from s3prl_distill.io import atomic_write_text
from s3prl_distill.run_pretrain import DEFAULT_RUNNER_CONFIG

logger = logging.getLogger(__name__)

HELP = "estimate a distillation run's time, cache size and memory by timing a few real updates"


def _seconds_list(text: str):
    """``"1,2,4"`` -> [1.0, 2.0, 4.0] (positive seconds; empty: no probes)."""
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of seconds, e.g. 1,2,4; got {text!r}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"seconds must be positive, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-g", "--upstream_config", metavar="MODEL_YAML", required=True,
                        help="model YAML (student / teacher / loss / init), as for run_pretrain")
    parser.add_argument("-c", "--config", metavar="RUNNER_YAML", default=None,
                        help="runner YAML (default: run_pretrain's default runner config)")
    parser.add_argument("-o", "--override", default=None,
                        help="run_pretrain-style overrides, e.g. \"config.runner.total_steps=1000\"")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--updates", type=int, default=3,
                        help="batches to time: the median, 90th-percentile and largest of an epoch (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates first (default 1)")
    parser.add_argument("--probe-seconds", default="1,2,4", type=_seconds_list,
                        help="single-utterance lengths (s) whose peak memory gives the longest-utterance "
                             "estimate (default 1,2,4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the estimate as JSON")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    from s3prl_distill.benchmark.plan import estimate
    from s3prl_distill.pretrain.build import build_run
    from s3prl_distill.run_pretrain import prepare_in_process

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    runner = args.config or DEFAULT_RUNNER_CONFIG
    with tempfile.TemporaryDirectory(prefix="s3prl_distill_plan_") as nowhere:
        # the run's configs parsed as run_pretrain parses them (overrides included); nothing is
        # written: the experiment folder is a throw-away one
        prep = prepare_in_process(args.upstream_config, runner, os.path.join(nowhere, "exp"),
                                  seed=args.seed, device=device, override=args.override)
    cfg = prep.runner_cfg
    datarc = cfg.pretrain_expert.datarc
    torch.manual_seed(args.seed)
    # plan never builds (or touches) the configured teacher cache
    run_ = build_run(prep.model_cfg, dataclasses.replace(datarc, teacher_cache=None),
                     device=torch.device(device), seed=args.seed, where=prep.model_where)
    est = estimate(run_.task, run_.dataset, run_.sampler, cfg, device, updates=max(0, args.updates),
                   warmup=args.warmup, probe_seconds=args.probe_seconds, memory=not args.no_memory,
                   cache_folder=datarc.teacher_cache)
    print(f"# s3prl-distill plan: {args.upstream_config} + {runner}")
    for line in est.lines():
        print(line)
    if args.json:
        atomic_write_text(json.dumps(est.as_dict(), indent=1, default=str) + "\n", args.json)
        logger.info("wrote %s", os.path.abspath(args.json))
    return 0
