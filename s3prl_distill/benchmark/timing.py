"""Timing and memory measurement on a shared CPU: interleaved runs, medians, peak RSS, load.

Candidates are timed *interleaved* in one process (every repeat runs each candidate once, in a
rotating order), so a burst of load from other processes hits all of them alike and the ratios
stay meaningful when the absolute times do not.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = ["MachineInfo", "machine_info", "time_interleaved", "peak_rss_delta_mb", "Timing"]


@dataclass
class MachineInfo:
    """What the numbers were measured on (printed with every table)."""

    cpu: str
    cores: int
    torch_threads: int
    torch_version: str
    cpu_capability: str
    loadavg_start: List[float]
    loadavg_end: List[float] = field(default_factory=list)

    def finish(self) -> None:
        self.loadavg_end = _loadavg()

    def describe(self) -> str:
        end = f" -> {self.loadavg_end[0]:.2f}" if self.loadavg_end else ""
        return (
            f"cpu: {self.cpu} ({self.cores} cores, {self.cpu_capability}), torch "
            f"{self.torch_version}, threads {self.torch_threads}, load avg (1 min) "
            f"{self.loadavg_start[0]:.2f}{end}"
        )


def _loadavg() -> List[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [float("nan")] * 3


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> MachineInfo:
    """Describe this machine and its current load (``os.getloadavg``)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        capability = "unknown"
    return MachineInfo(
        cpu=_cpu_name(),
        cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        cpu_capability=capability,
        loadavg_start=_loadavg(),
    )


@dataclass
class Timing:
    """Wall-clock times of one candidate on one input, in milliseconds."""

    times_ms: List[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        med = self.median_ms
        return (max(self.times_ms) - min(self.times_ms)) / med if med > 0 else 0.0


def time_interleaved(
    calls: Dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 5
) -> Dict[str, Timing]:
    """Time several zero-argument callables interleaved.

    Args:
        calls: name -> callable (one forward pass each).
        warmup: untimed calls of each candidate first (allocator, oneDNN primitive caches).
        repeats: timed rounds; in round ``r`` the candidates run in an order rotated by ``r``.

    Returns:
        name -> :class:`Timing` with ``repeats`` times each.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(calls)
    for _ in range(max(0, warmup)):
        for name in names:
            calls[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: Timing(values) for name, values in times.items()}


def _status_kb(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")  # resets VmHWM (the peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so a later peak is seen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_delta_mb(fn: Callable[[], Any]) -> Optional[float]:
    """Peak resident memory added while ``fn()`` runs, in MiB (Linux; ``None`` elsewhere).

    The process's peak RSS is reset to its current RSS first, so the result is the extra memory
    the call needed at its peak (activations, workspaces), not the model weights already loaded.
    """
    gc.collect()
    _release_free_heap()  # else memory freed by earlier calls is reused unseen
    if not _reset_peak_rss():
        return None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
