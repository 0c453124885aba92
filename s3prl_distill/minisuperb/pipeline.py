"""The embedded demo, end to end, on CPU and offline:

1. generate the mini-SUPERB corpus (:mod:`.generate`),
2. distil a DistilHuBERT-style and a FitHuBERT-style student from the embedded Whisper tiny.en
   encoder with the package's pretraining runner (``python -m s3prl_distill.run_pretrain``, run
   in-process),
3. evaluate the teacher, the students and FBANK with the proxy evaluator (:mod:`.evaluate`),
4. time inference, print a table shaped like the papers' Table 1, write ``results.json`` and PNGs.

:data:`DEMO_PRESETS` sizes the ``quick`` (CI, a few minutes) and ``full`` runs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from s3prl_distill.config import to_dict
from s3prl_distill.io import atomic_write_text
from s3prl_distill.paths import upstream_configs_dir
from s3prl_distill.minisuperb.evaluate import (DEFAULT_PROBES, TASKS, ProbeConfig,
                                               evaluate_upstream, load_task)
from s3prl_distill.minisuperb.generate import PRESETS, CorpusConfig, distill_files, generate_corpus

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "DemoStudent", "DEMO_PRESETS", "STUDENTS", "student_upstreams", "run_demo",
           "read_scalars", "format_table", "time_inference", "default_config_dir"]

@dataclass(frozen=True)
class DemoStudent:
    """One demo student: its model YAML in ``upstream_configs/``, its peak learning rates and its
    gradient clipping (its method's: S3PRL's DistilHuBERT runner clips at 5.0, the official
    FitHuBERT trainer not at all)."""

    yaml: str
    lr: float
    head_lr: Optional[float] = None
    gradient_clipping: Optional[float] = 5.0


#: demo students by display name. DistilHuBERT-tiny starts as a copy of the teacher's front end
#: and first two blocks: its body learns slowly (DistilHuBERT's 2e-4 halved for the short run)
#: while its fresh heads learn 20x faster, so they fit before their gradients can undo the copy
#: (at one rate the copied layers lost most of their phone information within 200 updates).
#: FitHuBERT-tiny starts from scratch and trains everything at one higher rate.
STUDENTS: Dict[str, DemoStudent] = {
    "DistilHuBERT-tiny": DemoStudent("whisper_tiny_distilhubert.yaml", lr=1.0e-4, head_lr=2.0e-3),
    "FitHuBERT-tiny": DemoStudent("whisper_tiny_fithubert.yaml", lr=2.0e-3, gradient_clipping=None),
}
TEACHER = {"source": "whisper_ct2", "path": None, "arch": "whisper"}


@dataclass
class DemoConfig:
    """Sizes of one demo run."""

    corpus: CorpusConfig
    distill_steps: Dict[str, int] = field(default_factory=dict)  # updates per student (by name)
    batch_size: int = 8
    teacher_cache: bool = True        # whole utterances, teacher targets computed once
    probes: Dict[str, ProbeConfig] = field(default_factory=lambda: dict(DEFAULT_PROBES))
    timing_seconds: float = 10.0
    timing_repeats: int = 5


# Sized for 2 CPU cores. With the teacher cache both students train fast (whole utterances,
# batches of 8): FitHuBERT-tiny ~4.6 updates/s, DistilHuBERT-tiny ~3.6 updates/s at load ~2.5.
# DistilHuBERT-tiny starts from the teacher's front end and first two blocks, so it needs far fewer
# updates than FitHuBERT-tiny, which learns from scratch. Measured wall times are in docs/DEMO.md.
DEMO_PRESETS: Dict[str, DemoConfig] = {
    "full": DemoConfig(corpus=PRESETS["full"], batch_size=8,
                       distill_steps={"DistilHuBERT-tiny": 300, "FitHuBERT-tiny": 1500}),
    # quick is CI's run of the whole pipeline: a quarter-size corpus, fewer updates, half the
    # probe epochs (a few minutes; the students still beat FBANK, which CI asserts).
    "quick": DemoConfig(corpus=PRESETS["quick"], batch_size=8, timing_repeats=3,
                        distill_steps={"DistilHuBERT-tiny": 100, "FitHuBERT-tiny": 400},
                        probes={"ks": ProbeConfig(epochs=20, lr=2e-3),
                                "ic": ProbeConfig(epochs=30, lr=2e-3),
                                "sid": ProbeConfig(epochs=40, lr=2e-3, batch_size=16),
                                "pr": ProbeConfig(epochs=15, lr=2e-2, batch_size=8)}),
}


def default_config_dir() -> Path:
    """``upstream_configs/`` as :func:`s3prl_distill.paths.upstream_configs_dir` finds it."""
    return upstream_configs_dir()


# ------------------------------------------------------------------ loss curves
def _records(path: Path):
    """Records of a TFRecord file (TensorBoard event file)."""
    with open(path, "rb") as handle:
        while True:
            header = handle.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            handle.read(4)
            if len(data) < length:
                return
            yield data


def read_scalars(expdir: Path, prefix: str = "distiller/train-") -> Dict[str, List[Tuple[int, float]]]:
    """Scalars the pretraining runner logged to TensorBoard: ``{tag without prefix: [(step, value)]}``."""
    from tensorboardX.proto import event_pb2

    out: Dict[str, List[Tuple[int, float]]] = {}
    for path in sorted(Path(expdir).glob("events.out.tfevents.*")):
        for data in _records(path):
            event = event_pb2.Event.FromString(data)
            for value in event.summary.value:
                if value.tag.startswith(prefix):
                    out.setdefault(value.tag[len(prefix):], []).append(
                        (int(event.step), float(value.simple_value)))
    return {k: sorted(v) for k, v in out.items()}


# ------------------------------------------------------------------ distillation
def distil(name: str, student: DemoStudent, config_dir: Path, file_list: Path, expdir: Path,
           cfg: DemoConfig, seed: int, cache_dir: Optional[Path] = None) -> Path:
    """Train one student with the package's pretraining runner; returns its final checkpoint.

    With ``cfg.teacher_cache`` the runner feeds whole utterances (no crop: the corpus's are a few
    seconds long) and reads the teacher's targets from ``cache_dir`` after computing them once
    (the demo trains for several epochs of a small corpus); a cache holding more teacher layers
    than this student predicts serves it too.
    """
    from s3prl_distill import run_pretrain

    steps = cfg.distill_steps[name]
    runner_yaml = Path(run_pretrain.PRETRAIN_DIR) / "configs" / "cpu_demo.yaml"
    overrides = ",,".join([
        f"config.runner.total_steps={steps}",
        f"config.runner.log_step={max(1, steps // 50)}",
        f"config.runner.save_step={steps}",
        "config.runner.max_keep=1",
        f"config.optimizer.lr={student.lr}",
        f"config.optimizer.head_lr={'null' if student.head_lr is None else student.head_lr}",
        "config.runner.gradient_clipping="
        + ("null" if student.gradient_clipping is None else str(student.gradient_clipping)),
        "config.pretrain_expert.datarc.audio_dir=null",
        f"config.pretrain_expert.datarc.file_list={file_list}",
        f"config.pretrain_expert.datarc.length_index={expdir / 'lengths.tsv'}",
        f"config.pretrain_expert.datarc.train_batch_size={cfg.batch_size}",
        "config.pretrain_expert.datarc.crop_seconds=0",
        "config.pretrain_expert.datarc.teacher_cache="
        + (str(cache_dir or expdir / "teacher_cache") if cfg.teacher_cache else "null"),
    ])
    args = run_pretrain.parse_args([
        "-u", "distiller", "-g", str(config_dir / student.yaml), "-c", str(runner_yaml),
        "-p", str(expdir),
        "--seed", str(seed), "--device", "cpu", "-o", overrides,
    ])
    started = time.time()
    path = run_pretrain.run(args)
    logger.info("%s: distilled for %d updates in %.0f s -> %s", name, steps,
                time.time() - started, path)
    return Path(path)


# ------------------------------------------------------------------ timing
def time_inference(upstreams: Sequence, seconds: float = 10.0, repeats: int = 5) -> Dict[str, float]:
    """Median wall time (ms) of each upstream on ``seconds`` of audio, batch 1, interleaved."""
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(1, int(seconds * 16000), generator=gen)
    lengths = torch.tensor([wav.shape[1]])
    times: Dict[str, List[float]] = {u.name: [] for u in upstreams}
    for u in upstreams:  # warm-up
        u(wav, lengths)
    for _ in range(repeats):
        for u in upstreams:
            start = time.perf_counter()
            u(wav, lengths)
            times[u.name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(v), 1) for name, v in times.items()}


# ------------------------------------------------------------------ table
def format_table(models: Dict[str, dict], tasks: Sequence[str] = TASKS) -> str:
    """Table 1 style: model, params, inference time, one column per task (test split)."""
    head = ["Model", "Params", "Infer ms/10s"] + [
        f"{t.upper()} {'PER%' if t == 'pr' else 'Acc%'}" for t in tasks]
    rows = []
    for name, m in models.items():
        row = [name, f"{m['params'] / 1e6:.2f}M" if m["params"] else "0",
               f"{m['infer_ms']:.0f}"]
        row += [f"{m['tasks'][t]['test']:.2f}" if t in m["tasks"] else "-" for t in tasks]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def _beats(student: dict, baseline: dict) -> Dict[str, bool]:
    out = {}
    for task, res in student["tasks"].items():
        base = baseline["tasks"].get(task)
        if base is not None:
            out[task] = res["test"] < base["test"] if res["metric"] == "per" else res["test"] > base["test"]
    return out


# ------------------------------------------------------------------ the run
class OnnxUpstream:
    """Evaluator adapter of an exported ONNX graph run by ONNX Runtime (same call shape and
    attributes as :mod:`s3prl_distill.minisuperb.upstreams`' adapters)."""

    def __init__(self, path: Path, student, name: str, num_params: int):
        import hashlib

        from s3prl_distill.export.onnx import OnnxRunner

        self.runner = OnnxRunner(str(path))
        self.name = name
        self.num_params = num_params
        self.downsample_rate = int(student.downsample_rate)
        self.bytes = Path(path).stat().st_size
        self.fingerprint = hashlib.sha1(Path(path).read_bytes()).hexdigest()

    def __call__(self, wavs, wav_lengths):
        return self.runner(wavs, wav_lengths)


def student_upstreams(students: Dict[str, Path], int8: bool = False, onnx_dir: Optional[Path] = None) -> List:
    """Evaluator adapters of the distilled students (heads dropped), in order; with ``int8`` each
    is followed by its int8 dynamically quantised copy (``"<name> +int8"``: linear layers in int8,
    as ``s3prl-distill bench --variants int8`` times them), to show the accuracy cost; with
    ``onnx_dir`` by its ONNX export's int8 variant run by ONNX Runtime (``"<name> +onnx-int8"``,
    ``s3prl-distill export --to onnx``), to show that export's accuracy cost and size."""
    from s3prl_distill.benchmark.variants import quantize_int8
    from s3prl_distill.checkpoint import load_student
    from s3prl_distill.minisuperb.upstreams import StudentUpstream

    out = []
    for name, path in students.items():
        student, _ = load_student(path)
        base = StudentUpstream(student, name=name)
        out.append(base)
        if int8:
            quantised = StudentUpstream(quantize_int8(student), name=f"{name} +int8")
            quantised.num_params = base.num_params  # int8 weights are buffers, still weights
            out.append(quantised)
        if onnx_dir is not None:
            from s3prl_distill.export.onnx import export_onnx

            info = export_onnx(student, str(Path(onnx_dir) / f"{name}.onnx"))
            logger.info("%s: ONNX %.2f MB, int8 %.2f MB (max |diff| vs PyTorch %.2g / %.2g)", name,
                        info.bytes / 1e6, info.int8_bytes / 1e6, info.max_abs_diff, info.int8_max_abs_diff)
            out.append(OnnxUpstream(Path(info.int8_path), student, f"{name} +onnx-int8", base.num_params))
    return out


def run_demo(out: Path, quick: bool = False, seed: int = 0, config_dir: Optional[Path] = None,
             corpus_dir: Optional[Path] = None, int8: bool = False, onnx: bool = False) -> dict:
    """Run the whole demo into ``out``; returns the results (also ``out/results.json``).

    ``int8`` also evaluates and times int8-quantised copies of the students; ``onnx`` their ONNX
    exports' int8 variants run by ONNX Runtime (graphs in ``out/onnx``).
    """
    from s3prl_distill.minisuperb import plots
    from s3prl_distill.minisuperb.upstreams import FbankUpstream, TeacherUpstream
    from s3prl_distill.teachers import build_teacher

    preset = "quick" if quick else "full"
    cfg = DEMO_PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_dir = Path(config_dir) if config_dir else default_config_dir()
    corpus = Path(corpus_dir) if corpus_dir else out / "corpus"
    started = time.time()
    wall: Dict[str, float] = {}

    logger.info("[1/5] generating the mini-SUPERB corpus (%s, seed %d) in %s", preset, seed, corpus)
    t0 = time.time()
    generate_corpus(corpus, cfg.corpus, seed=seed)
    files = distill_files(corpus)
    file_list = out / "distill_files.txt"
    atomic_write_text("".join(f"{os.path.abspath(f)}\n" for f in files), file_list)
    wall["corpus_s"] = round(time.time() - t0, 1)
    logger.info("corpus ready: %d distillation files", len(files))

    students: Dict[str, Path] = {}
    curves = {}
    # FitHuBERT-tiny first: the teacher cache it builds (layers 1-4) also serves DistilHuBERT-tiny
    # (layers 2-4); the other order would build it twice
    for k, name in enumerate(sorted(STUDENTS, key=lambda n: n != "FitHuBERT-tiny"), 1):
        spec = STUDENTS[name]
        logger.info("[2/5] distilling %s (%d/%d) from Whisper tiny.en for %d updates", name, k,
                    len(STUDENTS), cfg.distill_steps[name])
        t0 = time.time()
        expdir = out / "distill" / name
        students[name] = distil(name, spec, config_dir, file_list, expdir, cfg, seed,
                                cache_dir=out / "distill" / "teacher_cache")
        curves[name] = read_scalars(expdir)
        wall[f"distill_{name}_s"] = round(time.time() - t0, 1)

    students = {name: students[name] for name in STUDENTS}  # table order
    curves = {name: curves[name] for name in STUDENTS}
    logger.info("[3/5] evaluating teacher, students and FBANK (frozen, weighted sum of layers)")
    upstreams = [TeacherUpstream(build_teacher(TEACHER), name="Whisper-tiny.en (teacher)")]
    upstreams += student_upstreams(students, int8, onnx_dir=out / "onnx" if onnx else None)
    upstreams += [FbankUpstream(cmvn=True), FbankUpstream(cmvn=False)]
    tasks = {t: load_task(corpus, t) for t in TASKS}
    models: Dict[str, dict] = {}
    for u in upstreams:
        t0 = time.time()
        logger.info("evaluating %s (%.2f M params)", u.name, u.num_params / 1e6)
        models[u.name] = {"params": u.num_params, "downsample_rate": u.downsample_rate,
                          **({"onnx_bytes": u.bytes} if isinstance(u, OnnxUpstream) else {}),
                          "tasks": evaluate_upstream(u, tasks, cache_dir=out / "features",
                                                     seed=seed, probes=cfg.probes)}
        wall[f"eval_{u.name}_s"] = round(time.time() - t0, 1)

    logger.info("[4/5] timing inference on %.0f s of audio (batch 1, median of %d, interleaved)",
                cfg.timing_seconds, cfg.timing_repeats)
    times = time_inference(upstreams, cfg.timing_seconds, cfg.timing_repeats)
    for name, ms in times.items():
        models[name]["infer_ms"] = ms

    logger.info("[5/5] writing results and plots to %s", out)
    beats = {name: _beats(models[name], models["FBANK"]) for name in students}
    beats_raw = {name: _beats(models[name], models["FBANK (no CMVN)"]) for name in students}
    wall["total_s"] = round(time.time() - started, 1)
    results = {
        "preset": preset, "seed": seed, "models": models, "beats_fbank": beats,
        "beats_fbank_no_cmvn": beats_raw,
        "distill_curves": {n: {k: v for k, v in c.items()} for n, c in curves.items()},
        "config": to_dict(cfg), "wall_seconds": wall,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "corpus": {t: {s: len(v) for s, v in d.splits.items()} for t, d in tasks.items()},
    }
    atomic_write_text(json.dumps(results, indent=1), out / "results.json")
    plots.plot_layer_weights(models, out / "layer_weights.png")
    plots.plot_score_vs_params(models, out / "score_vs_params.png")
    plots.plot_loss_curves(curves, out / "loss_curves.png")
    results["table"] = format_table(models)
    atomic_write_text(json.dumps(results, indent=1), out / "results.json")
    return results
