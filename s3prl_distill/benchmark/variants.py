"""Inference optimisations as extra benchmark rows (each kept only where the benchmark shows it).

A variant wraps one of our candidates without changing its weights:

* ``int8``: dynamic int8 quantisation of the ``nn.Linear`` layers (weights int8, activations
  quantised per batch; the fused q/k/v projection stays float) - CPU inference only; outputs
  change within quantisation error.
* ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)``; fast only on CPUs with native bf16
  (AVX512-BF16 / AMX); elsewhere it is emulated and slower. Outputs are cast back to float32.
* ``compile``: ``torch.compile`` of the student (needs a C++ compiler; the first call compiles).
* ``onnx`` / ``onnx-int8``: the student exported to ONNX (:mod:`s3prl_distill.export.onnx`, the
  plain path traced) and run by ONNX Runtime on the same input, with as many intra-op threads as
  torch has; ``-int8`` is ONNX Runtime's dynamic quantisation of its matrix products.
* ``nofast``: the student with its inference fast paths switched off (every module's
  ``fast_path``: channels-last GEMM CNN with the first group norm folded in, FFT positional conv,
  cached q/k/v weights; and ``per_utterance``) - the A/B row that shows what they gain.

The arithmetic is the same as the base model's, so a variant's MACs are the base's
(``meta["macs_from"]``).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import warnings
from typing import Callable, Dict, List, Sequence

import torch
from torch import Tensor, nn

from s3prl_distill.benchmark.candidates import Candidate

logger = logging.getLogger(__name__)

__all__ = ["VARIANTS", "quantize_int8", "make_variant", "add_variants"]


# Linear layers whose weights the student reads directly (q/k/v are concatenated into one GEMM),
# so they must stay float modules.
_DIRECT_WEIGHT_SUFFIXES = ("q_proj", "k_proj", "v_proj")


def quantize_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its ``nn.Linear`` layers dynamically quantised to int8 (CPU).

    Linear layers whose weights are read directly instead of being called (the student's fused
    q/k/v projection) keep float weights.
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    model = copy.deepcopy(module).eval()
    spec = {
        name: default_dynamic_qconfig
        for name, sub in model.named_modules()
        if isinstance(sub, nn.Linear) and not name.endswith(_DIRECT_WEIGHT_SUFFIXES)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _float_outputs(out):
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_float_outputs(o) for o in out) if not hasattr(out, "_fields") else out
    if hasattr(out, "hidden_states"):
        out.hidden_states = [h.float() for h in out.hidden_states]
    return out


def _int8(cand: Candidate) -> Candidate:
    from s3prl_distill.benchmark.candidates import student_candidate

    quantised = quantize_int8(cand.module)
    new = student_candidate(cand.name + "+int8", quantised, note="dynamic int8 nn.Linear", kind="variant")
    new.params, new.params_with_heads = cand.params, cand.params_with_heads
    return new


def _bf16(cand: Candidate) -> Candidate:
    base_run, base_hidden = cand.run, cand.hidden

    def run(wavs: Tensor, lengths: Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _float_outputs(base_run(wavs, lengths))

    def hidden(wavs: Tensor, lengths: Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            states, out_lengths = base_hidden(wavs, lengths)
        return [s.float() for s in states], out_lengths

    return Candidate(
        cand.name + "+bf16", run, cand.params, cand.params_with_heads, "variant", module=cand.module,
        hidden=hidden if base_hidden else None, note="autocast bf16",
    )


def _compile(cand: Candidate) -> Candidate:
    from s3prl_distill.benchmark.candidates import student_candidate

    compiled = torch.compile(cand.module, dynamic=True)
    new = student_candidate(cand.name + "+compile", compiled, note="torch.compile (dynamic)", kind="variant")
    new.params, new.params_with_heads = cand.params, cand.params_with_heads
    return new


def _nofast(cand: Candidate) -> Candidate:
    """The student with every fast path off (``fast_path``, ``per_utterance``): the A/B baseline."""
    from s3prl_distill.benchmark.candidates import student_candidate

    plain = copy.deepcopy(cand.module)
    for module in plain.modules():
        if hasattr(module, "fast_path"):
            module.fast_path = False
        if hasattr(module, "per_utterance"):
            module.per_utterance = False
    new = student_candidate(cand.name + "-nofast", plain, note="fast paths off (A/B)", kind="variant")
    new.params, new.params_with_heads = cand.params, cand.params_with_heads
    return new


def _onnx_runner_candidate(cand: Candidate, int8: bool) -> Candidate:
    import atexit
    import tempfile

    from s3prl_distill.export.onnx import OnnxRunner, export_onnx

    folder = tempfile.mkdtemp(prefix="s3prl_distill_onnx_")
    atexit.register(shutil.rmtree, folder, True)
    info = export_onnx(cand.module, os.path.join(folder, f"{cand.name}.onnx"), int8=int8)
    runner = OnnxRunner(info.int8_path if int8 else info.path)

    def run(wavs: Tensor, lengths: Tensor):
        return runner(wavs, lengths)

    size = (info.int8_bytes if int8 else info.bytes) / 1e6
    new = Candidate(cand.name + ("+onnx-int8" if int8 else "+onnx"), run, cand.params,
                    cand.params_with_heads, "variant", module=None, hidden=run,
                    note=f"ONNX Runtime{' int8' if int8 else ''}, {size:.1f} MB")
    new.meta.update(onnx_path=runner.path, onnx_bytes=info.int8_bytes if int8 else info.bytes,
                    onnx_max_abs_diff=info.int8_max_abs_diff if int8 else info.max_abs_diff)
    return new


def _onnx(cand: Candidate) -> Candidate:
    return _onnx_runner_candidate(cand, int8=False)


def _onnx_int8(cand: Candidate) -> Candidate:
    return _onnx_runner_candidate(cand, int8=True)


VARIANTS: Dict[str, Callable[[Candidate], Candidate]] = {
    "onnx": _onnx,
    "onnx-int8": _onnx_int8,
    "nofast": _nofast,
    "int8": _int8,
    "bf16": _bf16,
    "compile": _compile,
}


# the rows optimisation variants are added for (model YAML stems; fithubert.yaml is k = 2)
HEADLINE = ("distilhubert", "fithubert")


def make_variant(cand: Candidate, variant: str) -> Candidate:
    """Variant ``variant`` of our candidate ``cand`` (see :data:`VARIANTS`).

    Raises:
        ValueError: naming an unknown variant or a candidate without a module.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown optimisation variant {variant!r}; expected one of {sorted(VARIANTS)}")
    if cand.module is None:
        raise ValueError(f"candidate {cand.name!r} has no module to optimise")
    new = VARIANTS[variant](cand)
    new.meta["macs_from"] = cand.name
    new.meta["variant"] = variant
    return new


def add_variants(candidates: Sequence[Candidate], variants: Sequence[str]) -> List[Candidate]:
    """Variants of our headline DistilHuBERT / FitHuBERT (k = 2) candidates (``'all'`` = every one)."""
    names = sorted(VARIANTS) if "all" in variants else list(variants)
    out: List[Candidate] = []
    for cand in candidates:
        if cand.kind != "ours" or cand.name not in HEADLINE:
            continue
        for variant in names:
            try:
                out.append(make_variant(cand, variant))
            except Exception as err:
                logger.warning("variant %s of %s not available: %s", variant, cand.name, err)
    return out
