"""Distillation throughput: our training step against S3PRL's distiller step, same everything.

Both steps train the *same* DistilHuBERT student weights (S3PRL's ``DistillerModel`` and our
student converted from it), against the *same* frozen teacher model, on the *same* padded batch,
with AdamW and gradient-norm clipping at 10 (S3PRL's runner default), interleaved in one process.

S3PRL's step is rebuilt from its installed model code and the loss its (uninstalled)
``pretrain/distiller`` expert computes: ``DistillerModel(wave, pad_mask)`` -> predictions
``[B, N, T, D]``; teacher hidden states under ``torch.no_grad`` stacked ``[B, N, T, D]``; loss =
mean L1 + cosine_loss * mean(-log sigmoid(cos)) over *all* frames, padding included.

Our step is :class:`s3prl_distill.distill.task.DistillationTask` (teacher under inference mode,
loss over valid frames only). Extra rows show our step with the teacher's targets read from a
:mod:`teacher-feature cache <s3prl_distill.pretrain.teacher_cache>` and with length-bucketed
batches (same audio, less padding).

Throughput = seconds of valid audio per wall-clock second (higher is better); peak memory is the
resident-memory peak of one step above the process's resident memory before it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.benchmark.inference import SAMPLE_RATE
from s3prl_distill.benchmark.timing import machine_info, peak_rss_delta_mb, time_interleaved

logger = logging.getLogger(__name__)

__all__ = ["s3prl_distiller_step", "run_training_bench", "format_training"]

CLIP = 10.0


def _teacher_model(tiny: bool, seed: int):
    """A torchaudio HuBERT (Base, or tiny) and our frozen Teacher around the *same* module."""
    from s3prl_distill.benchmark.candidates import TINY_CONV, TINY_TEACHER
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch, Wav2Vec2Teacher, build_wav2vec2_model

    if tiny:
        arch = Wav2Vec2Arch(
            conv_layers=list(TINY_CONV), embed_dim=TINY_TEACHER["encoder_embed_dim"],
            pos_conv_kernel=TINY_TEACHER["encoder_pos_conv_kernel"],
            pos_conv_groups=TINY_TEACHER["encoder_pos_conv_groups"],
            num_layers=TINY_TEACHER["encoder_num_layers"], num_heads=TINY_TEACHER["encoder_num_heads"],
            ffn_dim=TINY_TEACHER["encoder_ff_interm_features"],
        )
    else:
        arch = Wav2Vec2Arch()
    torch.manual_seed(seed)
    model = build_wav2vec2_model(arch, "hubert").eval()
    teacher = Wav2Vec2Teacher(model, arch, "hubert", source="torchaudio", path=None)
    return model, teacher


def s3prl_distiller_step(
    distiller: nn.Module, teacher_model: nn.Module, optimizer: torch.optim.Optimizer,
    config: Dict[str, Any],
) -> Callable[[Tensor, Tensor], float]:
    """S3PRL's distillation step (see the module docstring) as ``step(wavs, lengths) -> loss``."""
    pred_layers = [int(k) for k in config["pred_layer_id"]]
    cos_weight = float(config.get("cosine_loss", 0.0))
    pen_weight = float(config.get("feat_pen_loss", 0.0))

    def step(wavs: Tensor, lengths: Tensor) -> float:
        # S3PRL's data path: a float pad mask over samples (1 = valid)
        pad_mask = (torch.arange(wavs.shape[1])[None, :] < lengths[:, None]).float()
        feat, _, pred, _ = distiller(wavs, pad_mask)
        with torch.no_grad():
            layers, _ = teacher_model.extract_features(wavs, lengths)  # layer 1..L outputs
            target = torch.stack([layers[k - 1] for k in pred_layers], dim=1)  # B x N x T x D
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
    """Our step: ``DistillationTask`` forward (or cached targets), backward, clip, AdamW."""
    from s3prl_distill.distill.task import align_to_shorter

    def step(wavs: Tensor, lengths: Tensor) -> float:
        if targets_fn is None:
            loss, _ = task(wavs, lengths)
        else:
            targets, target_lengths = targets_fn(wavs, lengths)
            out = task.student(wavs, lengths, with_heads=True, target_frames=targets[0].shape[1])
            preds, targets, mask = align_to_shorter(
                list(out.predictions), out.prediction_lengths, targets, target_lengths
            )
            loss, _ = task.loss(preds, targets, mask)
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


def run_training_bench(tiny: bool = False, quick: bool = False, steps: Optional[int] = None,
                       seed: int = 0) -> Dict[str, Any]:
    """Measure the training steps; returns ``{"rows": [...], "machine": ..., "notes": [...]}``.

    Rows: ``model`` (``s3prl_distiller_step``, ``ours_step``, ``ours_step+cache``,
    ``ours_step+bucketing``, ``ours_step+bucketing+cache``), ``audio_s_per_s``, ``ratio_vs_s3prl``, ``ms_per_step``,
    ``peak_mb``, ``padding_fraction``.
    """
    from s3prl_distill.benchmark.candidates import TINY_S3PRL
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
    teacher_model, teacher = _teacher_model(tiny, seed)
    distiller = build_s3prl_distiller(config, seed=seed + 1)
    student = student_from_s3prl(distiller, config)
    distiller.train()
    student.train()
    lr = 2e-4
    s3prl_opt = torch.optim.AdamW(distiller.parameters(), lr=lr)
    our_opt = torch.optim.AdamW(student.parameters(), lr=lr)
    loss = build_loss(LossConfig(type="distilhubert", cos_weight=float(config["cosine_loss"])),
                      student.target_layers)
    task = DistillationTask(student, teacher, loss).train()

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
    variants = {  # row -> (batch layout, cached targets)
        "s3prl_distiller_step": ("mixed", False),
        "ours_step": ("mixed", False),
        "ours_step+cache": ("mixed", True),
        "ours_step+bucketing": ("bucketed", False),
        "ours_step+bucketing+cache": ("bucketed", True),
    }

    with tempfile.TemporaryDirectory(prefix="s3prl_distill_cache_") as folder:
        # every utterance's teacher targets, computed once (as for epochs 2, 3, ...)
        cache_path = os.path.join(folder, "teacher_cache")
        write_teacher_cache(cache_path, teacher, ids, utterances, student.target_layers, batch_size=2)
        cache = TeacherCache(cache_path)
        s3prl_step = s3prl_distiller_step(distiller, teacher_model, s3prl_opt, config)

        def make_call(name: str):
            layout, cached = variants[name]
            state = {"i": 0}

            def call():
                b = state["i"] % len(batches[layout])
                state["i"] += 1
                wavs, lengths = batches[layout][b]
                if name == "s3prl_distiller_step":
                    return s3prl_step(wavs, lengths)
                keys = [ids[j] for j in layouts[layout][b]]
                targets_fn = (lambda w, l: cache.batch_targets(keys)) if cached else None
                return _our_step(task, our_opt, targets_fn)(wavs, lengths)

            return call

        calls: Dict[str, Callable[[], Any]] = {name: make_call(name) for name in variants}
        timings = time_interleaved(calls, warmup=1, repeats=steps)
        peaks = {name: peak_rss_delta_mb(call) for name, call in calls.items()}
        cache_info = cache.describe()

    audio, padding = {}, {}
    for name, (layout, _) in variants.items():
        audio[name] = sum(float(l.sum()) / SAMPLE_RATE for _, l in batches[layout]) / len(batches[layout])
        total = sum(w.numel() for w, _ in batches[layout])
        valid = sum(int(l.sum()) for _, l in batches[layout])
        padding[name] = round(1.0 - valid / total, 3)
    rows = []
    base = audio["s3prl_distiller_step"] / (timings["s3prl_distiller_step"].median_ms / 1e3)
    for name, timing in timings.items():
        throughput = audio[name] / (timing.median_ms / 1e3)
        rows.append({
            "model": name,
            "audio_s_per_s": round(throughput, 3),
            "ratio_vs_s3prl": round(throughput / base, 3),
            "ms_per_step": round(timing.median_ms, 1),
            "audio_s_per_step": round(audio[name], 2),
            "padding_fraction": padding[name],
            "peak_mb": None if peaks[name] is None else round(peaks[name], 1),
        })
    info.finish()
    return {
        "rows": rows,
        "machine": info,
        "steps": steps,
        "cache": cache_info,
        "target": 1.5,
    }


def format_training(result: Dict[str, Any]) -> str:
    """The throughput table and the 1.5x target line."""
    rows = result["rows"]
    lines = [
        "# distillation throughput (same student weights, teacher, batches; AdamW, clip 10)",
        result["machine"].describe(),
        f"median of {result['steps']} steps each, interleaved; batches alternate over the same audio",
    ]
    header = ["step", "audio s/s", "x S3PRL", "ms/step", "audio s/step", "padding", "peak MB"]
    table = [header] + [[
        r["model"], f"{r['audio_s_per_s']:.2f}", f"{r['ratio_vs_s3prl']:.2f}x", f"{r['ms_per_step']:.0f}",
        f"{r['audio_s_per_step']:.1f}", f"{r['padding_fraction']:.0%}",
        "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}",
    ] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for n, line in enumerate(table):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(line)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    cache = result.get("cache") or {}
    if cache:
        lines.append(
            f"teacher cache: {cache.get('format')}, {cache.get('bytes_per_audio_hour', 0) / 2**30:.2f} GiB "
            f"per hour of audio ({cache.get('layers')} layers x {cache.get('dim')} dims, {cache.get('dtype')})"
        )
    ours = next((r for r in rows if r["model"] == "ours_step"), None)
    if ours is not None:
        target = result.get("target", 1.5)
        ok = ours["ratio_vs_s3prl"] >= target
        lines.append(
            f"target ours_step vs s3prl_distiller_step: >= {target:.2f}x, measured "
            f"{ours['ratio_vs_s3prl']:.2f}x: {'MET' if ok else 'MISSED by %.2fx' % (target - ours['ratio_vs_s3prl'])}"
        )
    return "\n".join(lines)
