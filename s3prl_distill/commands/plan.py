"""``s3prl-distill plan -g MODEL.yaml -c RUNNER.yaml [-o ...]``: what a run will cost, before it starts.

Builds the run as configured (data, teacher, student, loss, optimizer; a configured teacher
cache is *not* built), times a few real updates here (or on ``--device``) and prints the time
per update, the total for the configured updates or epochs (with and without a teacher-feature
cache), the cache's disk size, the peak memory of an update and the longest utterance a batch can
hold before memory runs out (:mod:`s3prl_distill.benchmark.plan`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os

import torch

from s3prl_distill.io import atomic_write_text

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
    from s3prl_distill.benchmark.plan import estimate
    from s3prl_distill.config import load_yaml
    from s3prl_distill.pretrain.config import PretrainConfig
    from s3prl_distill.pretrain.expert import UpstreamPretrainExpert
    from s3prl_distill.run_pretrain import DEFAULT_RUNNER_CONFIG, apply_override

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config_path = args.config or DEFAULT_RUNNER_CONFIG
    config = load_yaml(config_path)
    load_yaml(args.upstream_config)  # fail early, naming the file
    if args.override:
        apply_override(args.override, argparse.Namespace(seed=args.seed, device=device), config)
    cfg = PretrainConfig.from_data(config, where=config_path)
    datarc = copy.deepcopy(config["pretrain_expert"]["datarc"])
    cache_folder = datarc.get("teacher_cache")
    datarc["teacher_cache"] = None  # plan never builds (or touches) the cache
    torch.manual_seed(args.seed)
    expert = UpstreamPretrainExpert(datarc, args.upstream_config, device, False, seed=args.seed,
                                    config_where=config_path)
    expert.to(torch.device(device))
    probes = args.probe_seconds
    est = estimate(expert.task, expert.dataset, expert.sampler, cfg, device, updates=max(0, args.updates),
                   warmup=args.warmup, probe_seconds=probes, memory=not args.no_memory,
                   cache_folder=cache_folder)
    print(f"# s3prl-distill plan: {args.upstream_config} + {config_path}")
    for line in est.lines():
        print(line)
    if args.json:
        atomic_write_text(json.dumps(est.as_dict(), indent=1, default=str) + "\n", args.json)
        logger.info("wrote %s", os.path.abspath(args.json))
    return 0
