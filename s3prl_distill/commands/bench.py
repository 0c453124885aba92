"""``s3prl-distill bench``: speed, MACs and memory of the students against the teacher and S3PRL.

Prints the inference table (times as ratios to the teacher, timed interleaved in one process),
the targets with their shortfalls, and optionally the distillation-throughput comparison of our
pretraining step against S3PRL's distiller step (``--training``). ``--json PATH`` writes a list of
rows (``section`` = ``inference`` | ``training`` | ``target``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from typing import Any, Dict, List

import torch

from s3prl_distill.io import atomic_write_text
from s3prl_distill.paths import upstream_configs_dir

logger = logging.getLogger(__name__)

HELP = "benchmark students vs the teacher and S3PRL's distiller (speed, MACs, memory, throughput)"

PAPER_NOTES = (
    "reference speed-ups vs HuBERT Base: DistilHuBERT paper 1.73x (4 CPUs, batch 1), "
    "FitHuBERT paper 2.8x; the MAC ratio is the speed-up at equal MACs per second (a model whose "
    "MACs run faster than the baseline's beats it)"
)


def _default_config_dir() -> str:
    return str(upstream_configs_dir())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny inputs (0.25-1 s) and 2 repeats: a smoke test, not a measurement")
    parser.add_argument("--tiny-models", action="store_true",
                        help="shrink every model to 32-dim layers (for tests of the harness only)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per candidate first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, i.e. OMP_NUM_THREADS or cores)")
    parser.add_argument("--settings", default="2s,10s,30s,padded",
                        help="comma list of input settings: 2s, 10s, 30s, padded")
    parser.add_argument("--configs", default=None,
                        help="folder of model YAMLs for our students (default: upstream_configs/)")
    parser.add_argument("--models", default="distilhubert.yaml,fithubert.yaml,fithubert_k1.yaml,fithubert_k3.yaml,whisper_tiny_*.yaml",
                        help="comma list of YAML globs in --configs to benchmark (fithubert.yaml is k=2)")
    parser.add_argument("--no-s3prl", action="store_true", help="leave out S3PRL's distiller")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement")
    parser.add_argument("--no-macs", action="store_true", help="skip MAC counting")
    parser.add_argument("--variants", default="",
                        help="comma list of optimisation variants to add as rows for our "
                             "distilhubert/fithubert: nofast (A/B of the CNN fast paths), int8, bf16, compile, "
                             "onnx, onnx-int8 (or all)")
    parser.add_argument("--onnx", action="store_true",
                        help="add ONNX Runtime rows (fp32 and int8) beside PyTorch, same run, same "
                             "input (= --variants onnx,onnx-int8; needs the export extra)")
    parser.add_argument("--training", action="store_true",
                        help="also measure distillation throughput: our step vs S3PRL's distiller step")
    parser.add_argument("--training-steps", type=int, default=None, help="timed training steps (default 4)")
    parser.add_argument("--training-only", action="store_true",
                        help="only the distillation-throughput comparison (implies --training; no inference table)")
    parser.add_argument("--drift-precisions", default="bfloat16,float16",
                        help="teacher precisions whose drift against float32 targets --training prints "
                             "(comma list; empty: none)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from s3prl_distill.benchmark import candidates as cands
    from s3prl_distill.benchmark.inference import default_settings, quick_settings, run_inference_bench
    from s3prl_distill.benchmark.report import default_targets, evaluate_targets, format_table, format_targets
    from s3prl_distill.benchmark.variants import add_variants

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.training_only:
        return _run_training(args, [])
    repeats = args.repeats or (2 if args.quick else 5)
    all_settings = quick_settings() if args.quick else default_settings()
    wanted = [s.strip() for s in args.settings.split(",") if s.strip()]
    known = {s.key for s in all_settings}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"--settings: unknown setting(s) {unknown}; expected some of {sorted(known)}")
    settings = [s for s in all_settings if s.key in wanted]

    config_dir = args.configs or _default_config_dir()
    with tempfile.TemporaryDirectory(prefix="s3prl_distill_bench_") as workdir:
        candidates = [cands.teacher_candidate(tiny=args.tiny_models)]
        if not args.no_s3prl:
            candidates += cands.s3prl_candidates(workdir, tiny=args.tiny_models)
        patterns = [p.strip() for p in args.models.split(",") if p.strip()]
        if os.path.isdir(config_dir):
            candidates += cands.config_candidates(config_dir, patterns, tiny=args.tiny_models)
            if not args.tiny_models and any(c.name.startswith("whisper_tiny") for c in candidates):
                embedded = cands.embedded_teacher_candidate(config_dir)
                if embedded is not None:
                    candidates.append(embedded)
        else:
            logger.warning("no model YAML folder at %s: only the teacher and S3PRL's distiller", config_dir)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        if args.onnx:
            variants += [v for v in ("onnx", "onnx-int8") if v not in variants]
        if variants:
            candidates += add_variants(candidates, variants)

        result = run_inference_bench(
            candidates, settings, repeats=repeats, warmup=args.warmup,
            memory=not args.no_memory, macs=not args.no_macs,
        )
        names = [row["model"] for row in result.rows]
        targets = evaluate_targets(result.rows, default_targets(names))

        print(f"# s3prl-distill bench ({'quick smoke run' if args.quick else 'inference'})")
        print(result.machine.describe())
        print(f"timing: interleaved, warm-up {result.warmup}, median of {result.repeats} repeats; "
              f"ratios = teacher time / model time (> 1 is faster); MACs on the 10 s input (else the first setting)")
        print(format_table(result.rows, [s.key for s in settings], {s.key: s.label for s in settings}))
        if args.quick:
            print("quick smoke run: the 10 s slot (targets, MACs) holds a 0.5 s input and 2 repeats; "
                  "these ratios say nothing about the targets")
        print(PAPER_NOTES)
        if targets:
            print(format_targets(targets))

    machine = {
        "threads": result.machine.torch_threads,
        "loadavg_start": result.machine.loadavg_start[0],
        "loadavg_end": result.machine.loadavg_end[0] if result.machine.loadavg_end else None,
        "cpu": result.machine.cpu,
    }
    rows: List[Dict[str, Any]] = [dict(row, section="inference", **machine) for row in result.rows]
    rows += [dict(row, section="target", model=row["candidate"]) for row in targets]
    if args.training:
        return _run_training(args, rows)
    _write_json(args, rows)
    return 0


def _run_training(args: argparse.Namespace, rows: List[Dict[str, Any]]) -> int:
    """``--training``: the step / teacher tables, targets and precision drift (+ JSON rows)."""
    from s3prl_distill.benchmark.training import format_training, run_training_bench

    precisions = [p.strip() for p in args.drift_precisions.split(",") if p.strip()]
    training = run_training_bench(
        tiny=args.tiny_models, quick=args.quick, steps=args.training_steps,
        drift=bool(precisions), drift_precisions=precisions,
    )
    print(format_training(training))
    machine = training["machine"]
    load = {"loadavg_start": machine.loadavg_start[0],
            "loadavg_end": machine.loadavg_end[0] if machine.loadavg_end else None}
    rows = list(rows)
    rows += [dict(row, section="training", **load) for row in training["rows"]]
    rows += [dict(row, section="training_teacher", **load) for row in training["teacher_rows"]]
    rows += [dict(row, section="teacher_drift") for row in training["drift"]]
    _write_json(args, rows)
    return 0


def _write_json(args: argparse.Namespace, rows: List[Dict[str, Any]]) -> None:
    if args.json:
        from s3prl_distill.benchmark.report import rows_to_json

        atomic_write_text(rows_to_json(rows) + "\n", args.json)
        logger.info("wrote %d rows to %s", len(rows), args.json)
