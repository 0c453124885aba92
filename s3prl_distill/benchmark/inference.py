"""Inference benchmark: every candidate against the teacher, interleaved, in one process.

For each input setting (batch 1 at 2 s / 10 s / 30 s and a padded batch of mixed lengths) all
candidates are timed interleaved (:func:`~s3prl_distill.benchmark.timing.time_interleaved`) after a
warm-up; each median is reported with its ratio to the teacher's median of the *same* setting.
MACs are counted on the 10 s input (or the first setting run when 10 s is not; ``macs_setting``
says which) (:mod:`s3prl_distill.macs`); their ratio to the teacher's is the speed-up at equal MACs
per second (not a hard limit: implementations differ in MACs per second), printed beside
the speed-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from s3prl_distill.benchmark.candidates import Candidate
from s3prl_distill.benchmark.timing import MachineInfo, machine_info, peak_rss_delta_mb, time_interleaved
from s3prl_distill.macs import count_macs_fn

logger = logging.getLogger(__name__)

__all__ = ["InputSetting", "default_settings", "quick_settings", "make_batch", "run_inference_bench"]

SAMPLE_RATE = 16000


@dataclass
class InputSetting:
    """One input shape: ``durations`` in seconds, one per utterance (padded to the longest)."""

    key: str
    durations: Tuple[float, ...]

    @property
    def label(self) -> str:
        if len(self.durations) == 1:
            return f"B=1 {self.durations[0]:g} s"
        return "B={} padded {}".format(len(self.durations), "/".join(f"{d:g}" for d in self.durations))


def default_settings() -> List[InputSetting]:
    """Batch 1 at 2 / 10 / 30 s and a padded batch of 4 (10 / 7 / 4 / 2 s)."""
    return [
        InputSetting("2s", (2.0,)),
        InputSetting("10s", (10.0,)),
        InputSetting("30s", (30.0,)),
        InputSetting("padded", (10.0, 7.0, 4.0, 2.0)),
    ]


def quick_settings() -> List[InputSetting]:
    """Tiny inputs for smoke tests (the 10 s key is kept so ratios and targets still print)."""
    return [
        InputSetting("2s", (0.25,)),
        InputSetting("10s", (0.5,)),
        InputSetting("30s", (1.0,)),
        InputSetting("padded", (0.5, 0.3)),
    ]


def make_batch(durations: Sequence[float], seed: int = 0) -> Tuple[Tensor, Tensor]:
    """A zero-padded batch of noise-like audio.

    Returns:
        wavs ``[B, S]`` float32 (``S`` = longest), wav_lengths ``[B]`` int64.
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(round(d * SAMPLE_RATE)) for d in durations], dtype=torch.long)
    wavs = torch.zeros(len(durations), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return wavs, lengths


@dataclass
class InferenceResult:
    """Rows (one per candidate) plus the machine description."""

    rows: List[Dict[str, Any]]
    machine: MachineInfo
    settings: List[InputSetting]
    repeats: int
    warmup: int
    targets: List[Dict[str, Any]] = field(default_factory=list)


def run_inference_bench(
    candidates: Sequence[Candidate],
    settings: Optional[Sequence[InputSetting]] = None,
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    macs: bool = True,
) -> InferenceResult:
    """Time, count and measure every candidate; the first ``kind == "teacher"`` is the baseline.

    Returns:
        :class:`InferenceResult` whose rows hold ``model``, ``params``, ``params_with_heads``,
        ``macs`` (10 s input), ``macs_ratio``, ``ms_<key>``, ``ratio_<key>`` (teacher ms /
        candidate ms, > 1 = faster), ``spread_<key>``, ``peak_mb`` (10 s) and ``mem_ratio``.
    """
    settings = list(settings or default_settings())
    if not candidates:
        raise ValueError("no candidates to benchmark")
    teacher = next((c for c in candidates if c.kind == "teacher"), None)
    if teacher is None:
        raise ValueError("the benchmark needs a teacher candidate (kind='teacher') as the baseline")
    info = machine_info()
    rows: Dict[str, Dict[str, Any]] = {}
    for cand in candidates:
        rows[cand.name] = {
            "model": cand.name,
            "kind": cand.kind,
            "params": cand.params,
            "params_with_heads": cand.params_with_heads,
            "note": cand.note,
        }
    for setting in settings:
        wavs, lengths = make_batch(setting.durations)
        logger.info("timing %d candidates on %s", len(candidates), setting.label)
        with torch.inference_mode():
            calls = {c.name: (lambda c=c: c.run(wavs, lengths)) for c in candidates}
            timings = time_interleaved(calls, warmup=warmup, repeats=repeats)
        base = timings[teacher.name].median_ms
        for cand in candidates:
            t = timings[cand.name]
            rows[cand.name][f"ms_{setting.key}"] = round(t.median_ms, 3)
            rows[cand.name][f"ratio_{setting.key}"] = round(base / t.median_ms, 3)
            rows[cand.name][f"spread_{setting.key}"] = round(t.spread, 3)
    ten = next((s for s in settings if s.key == "10s"), settings[0])
    wavs, lengths = make_batch(ten.durations)
    if macs:
        for cand in candidates:
            rows[cand.name]["macs_setting"] = ten.key
            if cand.meta.get("macs_from") not in rows:  # variants share their base's arithmetic
                rows[cand.name]["macs"] = count_macs_fn(lambda: cand.run(wavs, lengths)).total
        for cand in candidates:
            if cand.meta.get("macs_from") in rows:
                rows[cand.name]["macs"] = rows[cand.meta["macs_from"]].get("macs")
        for cand in candidates:
            rows[cand.name]["macs_ratio"] = round(rows[teacher.name]["macs"] / max(1, rows[cand.name]["macs"]), 3)
    if memory:
        for cand in candidates:
            with torch.inference_mode():
                rows[cand.name]["peak_mb"] = _round(peak_rss_delta_mb(lambda: cand.run(wavs, lengths)))
        base_mem = rows[teacher.name].get("peak_mb")
        for cand in candidates:
            mem = rows[cand.name].get("peak_mb")
            rows[cand.name]["mem_ratio"] = (
                round(base_mem / mem, 3) if base_mem and mem else None
            )
    info.finish()
    return InferenceResult(list(rows.values()), info, settings, repeats, warmup)


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)
