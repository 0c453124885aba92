"""What a configured distillation run will cost, measured before it starts (``s3prl-distill plan``).

:func:`estimate` takes the pieces a run is built of - the :class:`DistillationTask` (student,
frozen teacher, loss), the dataset and batch sampler, the runner config - times a few real
updates on real batches of the run's first epoch, and returns a :class:`PlanEstimate`:

* **time per update** and the **total** for the configured updates (``runner.total_steps``, or
  ``n_epochs`` x batches per epoch / accumulation): the timed batches are the median, 90th
  percentile and largest of the epoch by padded size (batch size x longest utterance); a line
  ``time = a + b x padded samples`` through them is summed over every batch of the epoch;
* the **teacher's share** of an update (timed on its own), so the run **with a teacher-feature
  cache** (the update minus the teacher) and the cache's one-off build (the teacher over all the
  audio) are estimated too, with the cache's **disk size** (frames x layers x dim x bytes);
* **peak memory** of one update of the largest timed batch, above what the models already hold
  (CPU: the resident-set peak, ``VmHWM``; CUDA: ``torch.cuda.max_memory_allocated`` - not
  exercised on this project's CPU-only machines);
* the **longest utterance a batch can hold** before memory runs out: single-utterance updates at a
  few lengths (``probe_seconds``) give peak memory as ``m0 + m1 L + m2 L^2`` (attention grows with
  the square of the length); a batch of ``B`` such utterances is taken as ``m0 + B (m1 L + m2 L^2)``
  and solved against the memory available (CPU: ``MemAvailable`` and the cgroup limit; CUDA: the
  device's free memory). An estimate: say so when you quote it.

The run's own state is left as it was: the updates train deep copies of the student and loss with
a fresh optimizer of the configured kind, and every random generator (Python, NumPy, torch, CUDA)
is restored afterwards, so a trainer may call :func:`estimate` at start and still train exactly
as without it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["PlanEstimate", "estimate", "plan_summary", "cache_bytes", "available_memory_mb",
           "fit_line", "fit_peak_memory", "longest_for_memory"]

_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass
class PlanEstimate:
    """Measured and estimated cost of a run (times in seconds, memory in MiB)."""

    device: str
    threads: int
    loadavg: Tuple[float, float]
    utterances: int
    audio_hours: float
    batch_size: int
    accumulate: int
    batches_per_epoch: int
    total_updates: int
    epochs: float
    timed: List[Dict[str, Any]] = field(default_factory=list)  # per timed batch
    seconds_per_update: float = float("nan")  # mean over an epoch (the fit)
    median_update_s: float = float("nan")  # the median-size batch's update, measured
    teacher_share: float = float("nan")
    total_seconds: float = float("nan")
    total_seconds_cached: Optional[float] = None
    cache_build_seconds: Optional[float] = None
    cache_bytes: int = 0
    cache_layers: int = 0
    cache_dim: int = 0
    cache_dtype: str = "float16"
    cache_folder: Optional[str] = None
    peak_mb: Optional[float] = None
    peak_batch: Optional[Tuple[int, float]] = None  # (utterances, longest seconds)
    memory_method: str = ""
    available_mb: Optional[float] = None
    probes: List[Tuple[float, float]] = field(default_factory=list)  # (seconds, peak MiB), B = 1
    memory_fit: Optional[Tuple[float, float, float]] = None  # m0, m1 (per s), m2 (per s^2)
    longest_seconds: Optional[float] = None
    notes: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def lines(self) -> List[str]:
        """Human-readable summary (command output and the run's log)."""
        out = [
            f"device {self.device}, {self.threads} threads, load avg (1 min) {self.loadavg[0]:.2f} -> "
            f"{self.loadavg[1]:.2f}",
            f"data: {self.utterances} utterances, {_duration(self.audio_hours * 3600)} of audio (after crops); "
            f"{self.batch_size} per batch, {self.batches_per_epoch} batches per epoch, "
            f"{self.accumulate} batch(es) per update",
            f"updates: {self.total_updates} ({self.epochs:.2f} epochs)",
        ]
        for t in self.timed:
            out.append(f"  timed batch: {t['utterances']} x up to {t['longest_s']:.1f} s "
                       f"({t['audio_s']:.1f} s of audio, {t['padding']:.0%} padding): "
                       f"{t['seconds']:.2f} s per batch, teacher {t['teacher_s']:.2f} s")
        if math.isfinite(self.seconds_per_update):
            out.append(f"time per update: {self.seconds_per_update:.2f} s on average over an epoch "
                       f"(median-size batch: {self.median_update_s:.2f} s; teacher "
                       f"{self.teacher_share:.0%} of it)")
            out.append(f"total: {_hms(self.total_seconds)} for {self.total_updates} updates")
        if self.total_seconds_cached is not None:
            out.append(f"with the teacher cache: {_hms(self.total_seconds_cached)} "
                       f"(+ {_hms(self.cache_build_seconds or 0)} to build it once)")
        where = f"configured at {self.cache_folder}" if self.cache_folder else "off (datarc.teacher_cache)"
        out.append(f"teacher cache: {_size(self.cache_bytes)} ({self.cache_layers} layers x "
                   f"{self.cache_dim} dims, {self.cache_dtype}); {where}")
        if self.peak_mb is not None and self.peak_batch is not None:
            out.append(f"peak memory per update: {self.peak_mb:.0f} MiB above the loaded models "
                       f"(largest timed batch: {self.peak_batch[0]} x {self.peak_batch[1]:.1f} s; "
                       f"{self.memory_method})")
        if self.longest_seconds is not None:
            out.append(f"longest utterance a batch of {self.batch_size} can hold: "
                       f"~{self.longest_seconds:.0f} s before the {self.available_mb / 1024:.1f} GiB "
                       f"available run out (estimate: peaks at "
                       + ", ".join(f"{s:g} s: {m:.0f} MiB" for s, m in self.probes)
                       + " for one utterance, scaled to the batch)")
        out += [f"note: {n}" for n in self.notes]
        return out


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days} d " if days else "") + f"{h:d}:{m:02d}:{s:02d}"


# ------------------------------------------------------------------------------------------------
# small pure pieces (tested on their own)
# ------------------------------------------------------------------------------------------------
def cache_bytes(full_lengths: Sequence[int], downsample_rate: int, layers: int, dim: int,
                dtype: str = "float16") -> int:
    """Disk size of a teacher-feature cache of these utterances: ``frames x layers x dim x bytes``
    with ``frames = samples // downsample_rate`` per utterance (shard and index overhead aside)."""
    frames = sum(int(n) // int(downsample_rate) for n in full_lengths)
    return frames * int(layers) * int(dim) * _DTYPE_BYTES[dtype]


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    """Least-squares ``y = a + b x`` (``a = 0`` through the origin when the xs do not differ);
    a negative slope or intercept is clamped to the proportional fit."""
    xs, ys = list(map(float, xs)), list(map(float, ys))
    if len(set(xs)) < 2:
        return 0.0, (sum(ys) / sum(xs) if sum(xs) else 0.0)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    if b < 0 or a < 0:
        return 0.0, sum(ys) / sum(xs)
    return a, b


def fit_peak_memory(probes: Sequence[Tuple[float, float]]) -> Tuple[float, float, float]:
    """``peak(L) = m0 + m1 L + m2 L^2`` through ``(seconds, MiB)`` probes (least squares; m2 = 0
    with fewer than 3 lengths or when the curve bends down)."""
    xs = np.array([p[0] for p in probes], dtype=float)
    ys = np.array([p[1] for p in probes], dtype=float)
    if len(set(xs.tolist())) >= 3:
        m2, m1, m0 = np.polyfit(xs, ys, 2)
        if m2 >= 0 and m1 >= 0:
            return float(m0), float(m1), float(m2)
    a, b = fit_line(xs, ys)
    return a, b, 0.0


def longest_for_memory(fit: Tuple[float, float, float], batch: int, available_mb: float) -> Optional[float]:
    """The largest ``L`` (seconds) with ``m0 + batch (m1 L + m2 L^2) <= available_mb``."""
    m0, m1, m2 = fit
    budget = (available_mb - m0) / max(1, batch)
    if budget <= 0:
        return 0.0
    if m2 > 0:
        return (-m1 + math.sqrt(m1 * m1 + 4 * m2 * budget)) / (2 * m2)
    return budget / m1 if m1 > 0 else None


def available_memory_mb(device: torch.device) -> Optional[float]:
    """Memory a run could still use: CUDA free memory; CPU ``MemAvailable`` capped by the cgroup
    limit minus what this process already holds."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    avail = None
    try:
        with open("/proc/meminfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) / 1024
    except OSError:
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path, "r", encoding="utf-8").read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            used = _cgroup_usage_mb(path)
            limit_left = int(text) / 2**20 - (used or 0)
            avail = limit_left if avail is None else min(avail, limit_left)
    return avail


def _cgroup_usage_mb(limit_path: str) -> Optional[float]:
    usage = limit_path.replace("memory.max", "memory.current").replace("limit_in_bytes", "usage_in_bytes")
    try:
        return int(open(usage, "r", encoding="utf-8").read().strip()) / 2**20
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _rng_preserved():
    """Every random generator as it was before (the run trains exactly as without the plan)."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class _PeakMemory:
    """Peak memory of a block above its start: CUDA allocator peak, or the CPU resident-set peak."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                       else "resident-set peak (VmHWM) on CPU")

    @contextlib.contextmanager
    def measure(self, out: List[Optional[float]]):
        from s3prl_distill.benchmark.timing import _release_free_heap, _reset_peak_rss, _status_kb

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            yield
            torch.cuda.synchronize(self.device)
            out.append((torch.cuda.max_memory_allocated(self.device) - before) / 2**20)
            return
        import gc

        gc.collect()
        _release_free_heap()
        ok = _reset_peak_rss()
        before = _status_kb("VmRSS")
        yield
        peak = _status_kb("VmHWM")
        out.append(max(0, peak - before) / 1024 if ok and before is not None and peak is not None else None)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        precision = "bf16"  # as the trainer does
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate(task: Any, dataset: Any, sampler: Any, cfg: Any, device: Any, *, updates: int = 3,
             warmup: int = 1, probe_seconds: Sequence[float] = (1.0, 2.0, 4.0), memory: bool = True,
             cache_folder: Optional[str] = None, world_size: int = 1) -> PlanEstimate:
    """Measure a configured run (see the module docstring).

    Args:
        task: the run's ``DistillationTask`` (its student and loss are copied; its teacher is used
            as is: frozen).
        dataset: the run's ``DistillDataset`` (``lengths``, ``full_lengths``, ``[(index, epoch)]``).
        sampler: the run's ``BucketBatchSampler`` (``global_batches(epoch)``, ``len``).
        cfg: the runner's ``PretrainConfig`` (runner, optimizer, datarc).
        device: where the run trains.
        updates: batches timed (the median, 90th-percentile and largest of epoch 0 by padded
            size; more spread between them); 0 times nothing (sizes only).
        warmup: untimed updates first (allocator, oneDNN / cuDNN plans).
        probe_seconds: single-utterance lengths whose peak memory gives the longest-utterance
            estimate (empty or ``memory=False``: none).
        cache_folder: ``datarc.teacher_cache`` (for the report only; nothing is written).
        world_size: processes of a data-parallel run (each gets ``batch_size / world_size``).
    Returns:
        :class:`PlanEstimate`.
    """
    from s3prl_distill.lengths import pad_waveforms
    from s3prl_distill.distill.task import DistillationTask
    from s3prl_distill.pretrain.dataset import collate_batch

    device = torch.device(device)
    run, datarc = cfg.runner, cfg.pretrain_expert.datarc
    accum = int(run.gradient_accumulate_steps)
    batches = sampler.global_batches(0)
    per_epoch = len(batches)
    if run.n_epochs > 0:
        total_updates = (run.n_epochs * per_epoch) // accum
    else:
        total_updates = int(run.total_steps)
    epochs = total_updates * accum / max(per_epoch, 1)
    teacher = task.teacher
    layers = list(task.target_layers)
    sr = dataset.sample_rate
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    est = PlanEstimate(
        device=str(device), threads=torch.get_num_threads(), loadavg=(load_start, load_start),
        utterances=len(dataset), audio_hours=sum(dataset.lengths) / sr / 3600,
        batch_size=int(datarc.train_batch_size), accumulate=accum, batches_per_epoch=per_epoch,
        total_updates=total_updates, epochs=epochs,
        cache_bytes=cache_bytes(dataset.full_lengths, teacher.downsample_rate, len(layers), teacher.dim,
                                datarc.teacher_cache_dtype),
        cache_layers=len(layers), cache_dim=int(teacher.dim), cache_dtype=datarc.teacher_cache_dtype,
        cache_folder=cache_folder,
    )
    if world_size > 1:
        est.notes.append(f"timed as one process; a run of {world_size} processes splits each batch")
    if updates <= 0 or not batches:
        return est

    lengths = dataset.lengths
    cost = [len(b) * max(lengths[i] for i in b) for b in batches]
    order = sorted(range(per_epoch), key=lambda j: cost[j])
    positions = {min(per_epoch - 1, int(q * (per_epoch - 1) + 0.5)) for q in _quantiles(updates)}
    for pos in range(per_epoch - 1, -1, -1):  # quantiles that coincide (short epochs): next ones down
        if len(positions) >= min(updates, per_epoch):
            break
        positions.add(pos)
    picks = sorted((order[pos] for pos in positions), key=lambda j: cost[j])

    from s3prl_distill.pretrain.optim import build_optimizer  # the run's own optimizer

    peak = _PeakMemory(device)
    est.memory_method = peak.method
    with _rng_preserved():
        student = copy.deepcopy(task.student).to(device).train()
        loss = copy.deepcopy(task.loss).to(device).train()
        trial = DistillationTask(student, teacher, loss, max_frame_diff=task.max_frame_diff).train()
        optimizer = build_optimizer(
            cfg.optimizer, [(n, p) for n, p in student.named_parameters() if p.requires_grad],
            max(int(est.total_updates), 1))
        params = [p for p in student.parameters() if p.requires_grad]

        def load(indices: Sequence[int]) -> Dict[str, Any]:
            return collate_batch([dataset[(i, 0)] for i in indices])

        def update(batch: Dict[str, Any], peaks: Optional[List[Optional[float]]] = None) -> Tuple[float, float]:
            wavs = batch["wavs"].to(device)
            wav_lengths = batch["wav_lengths"].to(device)
            _sync(device)
            with (peak.measure(peaks) if peaks is not None else contextlib.nullcontext()):
                start = time.perf_counter()
                targets = trial.teacher_targets(wavs, wav_lengths)  # timed apart: the cache's saving
                _sync(device)
                teacher_s = time.perf_counter() - start
                with _autocast(device, run.amp_precision):
                    loss_value, _ = trial(wavs, wav_lengths, targets=targets)
                loss_value.float().backward()
                torch.nn.utils.clip_grad_norm_(
                    params, run.gradient_clipping if run.gradient_clipping is not None else float("inf"))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                _sync(device)
            return time.perf_counter() - start, teacher_s

        first = load(batches[picks[0]])
        for _ in range(max(0, warmup)):
            update(first)
        peaks: List[Optional[float]] = []
        for j in picks:
            batch = load(batches[j])
            seconds, teacher_s = update(batch, peaks if memory else None)
            wl = batch["wav_lengths"]
            est.timed.append({
                "batch": j, "utterances": int(wl.numel()), "longest_s": float(wl.max()) / sr,
                "audio_s": float(wl.sum()) / sr, "padded_samples": int(cost[j]),
                "padding": 1.0 - float(wl.sum()) / max(1, cost[j]), "seconds": seconds,
                "teacher_s": teacher_s, "peak_mb": peaks[-1] if memory and peaks else None,
            })
        probes: List[Tuple[float, float]] = []
        if memory:
            top = max(est.timed, key=lambda t: t["padded_samples"])
            if top["peak_mb"] is not None:
                est.peak_mb = top["peak_mb"]
                est.peak_batch = (top["utterances"], top["longest_s"])
            gen = torch.Generator().manual_seed(0)
            shortest = max(int(getattr(dataset, "min_samples", 1)), int(teacher.min_input_samples or 1))
            for seconds in probe_seconds:
                samples = int(seconds * sr)
                if samples < shortest or (teacher.max_input_samples and samples > teacher.max_input_samples):
                    est.notes.append(f"memory probe of {seconds:g} s skipped: outside what the student "
                                     f"and teacher take ({shortest} samples .. "
                                     f"{teacher.max_input_samples or 'no limit'})")
                    continue
                wav = 0.1 * torch.randn(samples, generator=gen)
                wavs, wav_lengths = pad_waveforms([wav])
                out: List[Optional[float]] = []
                update({"wavs": wavs, "wav_lengths": wav_lengths}, out)
                if out and out[0] is not None:
                    probes.append((float(seconds), float(out[0])))

    est.loadavg = (load_start, os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    a, b = fit_line([t["padded_samples"] for t in est.timed], [t["seconds"] for t in est.timed])
    ta, tb = fit_line([t["padded_samples"] for t in est.timed], [t["teacher_s"] for t in est.timed])
    epoch_s = sum(a + b * c for c in cost)
    teacher_epoch_s = sum(ta + tb * c for c in cost)
    est.seconds_per_update = epoch_s / per_epoch * accum
    mid = est.timed[len(est.timed) // 2]
    est.median_update_s = mid["seconds"] * accum
    est.teacher_share = teacher_epoch_s / epoch_s if epoch_s else float("nan")
    est.total_seconds = est.seconds_per_update * total_updates
    cached_per_update = (epoch_s - teacher_epoch_s) / per_epoch * accum
    est.total_seconds_cached = cached_per_update * total_updates
    est.cache_build_seconds = teacher_epoch_s  # the teacher over one epoch of audio
    if probes:
        est.probes = probes
        est.memory_fit = fit_peak_memory(probes)
        est.available_mb = available_memory_mb(device)
        if est.available_mb is not None:
            per_process = max(1, est.batch_size // max(1, world_size))
            est.longest_seconds = longest_for_memory(est.memory_fit, per_process, est.available_mb)
            if teacher.max_input_samples and est.longest_seconds is not None \
                    and est.longest_seconds > teacher.max_input_samples / sr:
                est.longest_seconds = teacher.max_input_samples / sr
                est.notes.append(f"the longest utterance is the teacher's own limit "
                                 f"({teacher.max_input_samples} samples), not memory")
    if datarc.crop_seconds:
        est.notes.append(f"utterances are cropped to {datarc.crop_seconds:g} s: the cache needs whole "
                         "utterances (crop_seconds 0)")
    if device.type == "cuda":
        est.notes.append("CUDA figures come from torch.cuda timers and allocator statistics "
                         "(this code path is not exercised on the project's CPU-only test machines)")
    return est


def _quantiles(updates: int) -> List[float]:
    """Batch-size quantiles to time: median, 90th percentile, largest, then spread between."""
    base = [0.5, 0.9, 1.0]
    if updates <= 3:
        return base[:updates] if updates < 3 else base
    extra = [i / (updates - 3 + 1) * 0.5 for i in range(1, updates - 3 + 1)]
    return base + extra


def plan_summary(run: Any, cfg: Any, device: Any, **kwargs: Any) -> PlanEstimate:
    """:func:`estimate` on a built :class:`~s3prl_distill.pretrain.build.DistillationRun`
    (``task``, ``dataset``, ``sampler``, ``data``), as the trainer logs it at the start of a run.
    Keyword arguments go to :func:`estimate`; the run's state (weights, optimizer, random
    generators) is left unchanged."""
    kwargs.setdefault("cache_folder", getattr(run.data, "teacher_cache", None))
    return estimate(run.task, run.dataset, run.sampler, cfg, device, **kwargs)
