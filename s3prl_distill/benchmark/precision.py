"""What a reduced teacher precision does to the targets: per-layer drift against float32.

:func:`precision_drift` runs a float32 teacher and copies of it in each reduced precision
(``teacher.precision``) on the same batch and compares the hidden states over the valid frames:
mean and minimum cosine similarity per frame, mean absolute difference (L1, the distillation
loss's own term) and that L1 relative to the targets' mean magnitude. ``s3prl-distill bench
--training`` prints it so a precision is chosen knowing its cost.

Only CPU kernels run here: float16 drift measured on a CPU (whose float16 kernels accumulate
in float32, as CUDA's tensor cores do) indicates, but is not, the drift of CUDA's kernels.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from s3prl_distill.benchmark.report import align_columns

__all__ = ["precision_drift", "format_drift"]


def precision_drift(teacher: Any, wavs: Tensor, lengths: Tensor, precisions: Sequence[str] = ("bfloat16", "float16"),
                    layers: Optional[Sequence[int]] = None, name: str = "teacher") -> List[Dict[str, Any]]:
    """Per-layer drift of each precision's targets against the float32 targets.

    Args:
        teacher: a float32 :class:`~s3prl_distill.teachers.base.Teacher` (left unchanged: each
            precision runs on a deep copy).
        wavs (Tensor): ``[B, S]``; lengths (Tensor): ``[B]`` valid samples.
        layers: the layers to compare (``None``: all).
        name: the ``teacher`` column of the rows.
    Returns:
        rows ``{"teacher", "precision", "layer", "cosine", "cosine_min", "l1", "l1_rel", "scale"}``
        (``scale``: mean |float32 target|; ``l1_rel`` = ``l1 / scale``).
    Raises:
        ValueError: the teacher is not float32.
    """
    if teacher.dtype != torch.float32:
        raise ValueError(f"precision_drift: the reference teacher must be float32, got {teacher.dtype}")
    layers = list(range(teacher.num_layers + 1)) if layers is None else list(layers)
    ref = teacher(wavs, lengths, layers=layers)
    mask = torch.arange(ref.hidden_states[0].shape[1])[None, :] < ref.lengths[:, None]
    rows: List[Dict[str, Any]] = []
    for precision in precisions:
        other = copy.deepcopy(teacher).configure(precision=precision)
        out = other(wavs, lengths, layers=layers)
        for k, a, b in zip(layers, ref.hidden_states, out.hidden_states):
            a, b = a[mask], b[mask]  # [N, D] valid frames
            cos = F.cosine_similarity(a, b, dim=-1)
            scale = float(a.abs().mean())
            l1 = float((a - b).abs().mean())
            rows.append({"teacher": name, "precision": precision, "layer": int(k),
                         "cosine": round(float(cos.mean()), 7), "cosine_min": round(float(cos.min()), 7),
                         "l1": l1, "l1_rel": l1 / scale if scale else float("nan"), "scale": scale})
        del other
    return rows


def format_drift(rows: Sequence[Dict[str, Any]]) -> str:
    """One line per teacher and layer, a ``cos (min) / L1 (rel)`` column per precision."""
    if not rows:
        return ""
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    header = ["teacher", "layer"] + [f"{p}: cos mean / min" for p in precisions] + [
        f"{p}: L1 (rel)" for p in precisions]
    table = [header]
    keys = list(dict.fromkeys((r["teacher"], r["layer"]) for r in rows))
    for teacher, layer in keys:
        by_p = {r["precision"]: r for r in rows if r["teacher"] == teacher and r["layer"] == layer}
        line = [teacher, str(layer)]
        line += [f"{by_p[p]['cosine']:.6f} / {by_p[p]['cosine_min']:.4f}" if p in by_p else "-" for p in precisions]
        line += [f"{by_p[p]['l1']:.2e} ({by_p[p]['l1_rel']:.2%})" if p in by_p else "-" for p in precisions]
        table.append(line)
    return "\n".join(["# teacher precision: drift of the targets against float32 (valid frames)"]
                     + align_columns(table))
