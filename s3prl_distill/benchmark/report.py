"""Tables, targets and JSON for the benchmark results."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from s3prl_distill.macs import format_macs

__all__ = ["Target", "default_targets", "evaluate_targets", "format_table", "format_targets", "rows_to_json"]


@dataclass
class Target:
    """``candidate`` must be at least ``min_ratio`` x faster than ``baseline`` on ``setting``.

    ``paper``: the speed-up the paper reports (for reference only), ``None`` if none.
    """

    candidate: str
    baseline: str
    setting: str
    min_ratio: float
    paper: Optional[float] = None


def default_targets(names: Sequence[str]) -> List[Target]:
    """The issue's targets, for whichever of our candidates are present."""
    targets: List[Target] = []
    if "distilhubert" in names:
        targets.append(Target("distilhubert", "teacher", "10s", 2.0, paper=1.73))
    if "distilhubert@s3prl" in names:
        targets.append(Target("distilhubert@s3prl", "s3prl_distiller", "10s", 1.2))
    for name in names:
        if name.startswith("fithubert") and ("k2" in name or name == "fithubert"):
            targets.append(Target(name, "teacher", "10s", 4.5, paper=2.8))
            break
    return [t for t in targets if t.baseline in names]


def evaluate_targets(rows: Sequence[Dict[str, Any]], targets: Sequence[Target]) -> List[Dict[str, Any]]:
    """Measured ratio, MAC ratio (the speed-up at equal MACs per second) and the shortfall per target."""
    by_name = {row["model"]: row for row in rows}
    out = []
    for target in targets:
        cand, base = by_name.get(target.candidate), by_name.get(target.baseline)
        if cand is None or base is None:
            continue
        key = f"ms_{target.setting}"
        if not cand.get(key) or not base.get(key):
            continue  # that input setting was not run
        ratio = base[key] / cand[key]
        mac_ratio = (
            base["macs"] / cand["macs"] if cand.get("macs") and base.get("macs") else None
        )
        out.append({
            "candidate": target.candidate,
            "baseline": target.baseline,
            "setting": target.setting,
            "target": target.min_ratio,
            "measured": round(ratio, 3),
            "mac_ratio": None if mac_ratio is None else round(mac_ratio, 3),
            "paper": target.paper,
            "met": bool(ratio >= target.min_ratio),
            "shortfall": round(max(0.0, target.min_ratio - ratio), 3),
        })
    return out


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "params":
        return f"{value / 1e6:.2f}M"
    if kind == "macs":
        return format_macs(value)
    if kind == "ms":
        return f"{value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "mb":
        return f"{value:.0f}"
    return str(value)


def align_columns(table: Sequence[Sequence[Any]]) -> List[str]:
    """Text lines of ``table`` (first row = header): first column left-aligned, the others
    right-aligned, a dashed rule under the header."""
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]))]
    text = []
    for n, line in enumerate(table):
        text.append("  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                              for i, cell in enumerate(line)))
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return text


def format_table(rows: Sequence[Dict[str, Any]], setting_keys: Sequence[str], setting_labels: Dict[str, str]) -> str:
    """A plain-text table: one row per model, times as ``ms (ratio to teacher)``."""
    macs_at = next((r.get("macs_setting") for r in rows if r.get("macs_setting")), "10s")
    header = ["model", "params", "+heads", f"MACs@{macs_at}", "MAC x"]
    for key in setting_keys:
        header.append(setting_labels.get(key, key) + " ms (x)")
    header += ["peak MB", "mem x"]
    lines = [header]
    for row in rows:
        line = [
            row["model"],
            _fmt(row.get("params"), "params"),
            _fmt(row.get("params_with_heads"), "params"),
            _fmt(row.get("macs"), "macs"),
            _fmt(row.get("macs_ratio"), "ratio"),
        ]
        for key in setting_keys:
            ms = row.get(f"ms_{key}")
            ratio = row.get(f"ratio_{key}")
            line.append("-" if ms is None else f"{_fmt(ms, 'ms')} ({_fmt(ratio, 'ratio')})")
        line += [_fmt(row.get("peak_mb"), "mb"), _fmt(row.get("mem_ratio"), "ratio")]
        lines.append(line)
    return "\n".join(align_columns(lines))


def format_targets(results: Sequence[Dict[str, Any]]) -> str:
    """One line per target: measured vs required, the MAC ratio, and any shortfall."""
    lines = []
    for r in results:
        status = "MET" if r["met"] else f"MISSED by {r['shortfall']:.2f}x"
        macs = "-" if r["mac_ratio"] is None else f"{r['mac_ratio']:.2f}x"
        paper = "" if r["paper"] is None else f", paper {r['paper']:.2f}x"
        lines.append(
            f"target {r['candidate']} vs {r['baseline']} @ {r['setting']}: >= {r['target']:.2f}x, "
            f"measured {r['measured']:.2f}x (MAC ratio {macs}{paper}): {status}"
        )
    return "\n".join(lines)


def rows_to_json(payload: Dict[str, Any]) -> str:
    """Serialise a results payload (rows + machine + targets) as JSON, NaN as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(payload), indent=2)
