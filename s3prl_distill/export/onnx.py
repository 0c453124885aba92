"""ONNX export of any student: ``wavs [B, S]`` + ``lengths [B]`` -> every hidden state + output lengths.

The graph is traced (``torch.onnx.export`` with its TorchScript exporter, opset 17) from the
student's own forward with ``models.cnn.exporting()`` true: every length-dependent step takes its
tensor-only form (masked group norm and log-mel for the whole batch, masks always built, no
per-utterance loop, fast paths off), so the graph is right for every batch size and every length,
not only the traced example's. Measured choice: the ``dynamo=True`` exporter (torch.export) stops
at the student's input checks (``bool`` of a tensor), the TorchScript one exports all five families.

Graph contract::

    inputs:  wavs [B, S] float32 (16 kHz, zero-padded), lengths [B] int64 (valid samples)
    outputs: hidden_state_0 .. hidden_state_{N-1}  [B, T, D] float32, output_lengths [B] int64

``T`` follows from ``S`` (the graph computes over all S samples; frames past ``output_lengths``
are padding), so feed ``S = max(lengths)`` to get the student's own frame count. An int8 variant
(``<name>.int8.onnx``) quantises the weights of the matrix products (ONNX Runtime's dynamic
quantisation, QUInt8 weights, activations quantised per batch).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from s3prl_distill.export import ExportError

logger = logging.getLogger(__name__)

__all__ = ["OPSET", "OnnxExport", "StudentGraph", "export_onnx", "quantize_int8", "OnnxRunner",
           "compare_onnx", "example_batch"]

OPSET = 17
INPUTS = ("wavs", "lengths")
LENGTHS_OUTPUT = "output_lengths"


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the 'export' extra ({err.name} is missing): "
            "pip install 's3prl-distill[export]'") from err


class StudentGraph(nn.Module):
    """What is traced: the student's upstream forward as a tuple of tensors.

    forward(wavs [B, S], lengths [B]) -> (hidden_state_0, ..., hidden_state_{N-1}, output_lengths)
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, wavs: Tensor, lengths: Tensor) -> Tuple[Tensor, ...]:
        out = self.student(wavs, lengths, with_heads=False)
        return tuple(out.hidden_states) + (out.lengths,)


def example_batch(lengths: Sequence[int], seed: int = 0) -> Tuple[Tensor, Tensor]:
    """A zero-padded noise batch: (wavs [B, max(lengths)] float32, lengths [B] int64)."""
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(int(n), generator=gen)
    return wavs, torch.tensor([int(n) for n in lengths], dtype=torch.long)


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and measured (also written as ``<name>.json``)."""

    path: str
    int8_path: Optional[str]
    outputs: List[str]
    num_hidden_states: int
    dim: int
    downsample_rate: int
    receptive_field: int
    bytes: int
    int8_bytes: Optional[int]
    max_abs_diff: float                       # ONNX Runtime vs PyTorch, valid frames, check batch
    int8_max_abs_diff: Optional[float] = None
    check_lengths: List[List[int]] = field(default_factory=list)
    versions: Dict[str, str] = field(default_factory=dict)


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}


def quantize_int8(src: str, dst: str) -> str:
    """ONNX Runtime dynamic quantisation of ``src`` (weights of MatMul/Gemm in 8 bits) to ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs one line per tensor on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    return dst


class OnnxRunner:
    """An ONNX Runtime session with the student's call shape.

    ``runner(wavs [B, S], lengths [B]) -> (hidden_states: List[Tensor [B, T, D]], lengths [B])``.
    """

    def __init__(self, path: str, threads: Optional[int] = None):
        _require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = threads or torch.get_num_threads()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = os.fspath(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, wavs: Tensor, lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        feed = {"wavs": wavs.detach().cpu().float().contiguous().numpy(),
                "lengths": lengths.detach().cpu().to(torch.long).numpy()}
        out = self.session.run(None, feed)
        return [torch.from_numpy(h) for h in out[:-1]], torch.from_numpy(out[-1])


def compare_onnx(runner: OnnxRunner, student: nn.Module, batches: Sequence[Sequence[int]],
                 seed: int = 1) -> float:
    """Largest |ONNX Runtime - PyTorch| over the valid frames of every hidden state.

    Each batch is a list of lengths (padded to the longest); output lengths must agree exactly.

    Raises:
        ExportError: a shape or output-length mismatch.
    """
    worst = 0.0
    for i, lengths in enumerate(batches):
        wavs, wav_lengths = example_batch(lengths, seed + i)
        with torch.inference_mode():
            ref = student(wavs, wav_lengths, with_heads=False)
        states, out_lengths = runner(wavs, wav_lengths)
        if out_lengths.tolist() != ref.lengths.tolist():
            raise ExportError(f"{runner.path}: output lengths {out_lengths.tolist()} != the student's "
                              f"{ref.lengths.tolist()} for inputs of {list(lengths)} samples")
        if len(states) != len(ref.hidden_states):
            raise ExportError(f"{runner.path}: {len(states)} hidden states, the student has "
                              f"{len(ref.hidden_states)}")
        for got, want in zip(states, ref.hidden_states):
            if got.shape != want.shape:
                raise ExportError(f"{runner.path}: hidden state shape {tuple(got.shape)} != "
                                  f"{tuple(want.shape)} for inputs of {list(lengths)} samples")
            for b, n in enumerate(ref.lengths.tolist()):
                worst = max(worst, float((got[b, :n] - want[b, :n].float()).abs().max()))
    return worst


def check_batches(student) -> List[List[int]]:
    """Padded batches of mixed lengths the export is checked on (none of them the traced one)."""
    base = max(int(student.receptive_field), 400)
    return [[3 * base + 1234, base + 777, 2 * base + 1], [base + 160 * 7 + 3], [5 * base + 99, 5 * base + 99]]


def export_onnx(student: nn.Module, output: str, int8: bool = True,
                check: Sequence[Sequence[int]] = (), tolerance: float = 1e-4) -> OnnxExport:
    """Export ``student`` (eval mode, heads as in its hidden states) to ``output`` (+ int8 copy).

    The traced example is a padded batch of two lengths; the export is then run by ONNX Runtime
    on ``check`` (default :func:`check_batches`: other batch sizes and lengths) and compared with
    PyTorch; a difference above ``tolerance`` is an error (nothing is left behind).

    Returns:
        :class:`OnnxExport` (also written next to the model as ``<stem>.json``).
    """
    _require_onnx()
    output = os.fspath(output)
    if not output.endswith(".onnx"):
        raise ExportError(f"{output}: an ONNX file name must end in .onnx")
    stem = output[: -len(".onnx")]
    taken = [p for p in (output, stem + ".int8.onnx", stem + ".json") if os.path.exists(p)]
    if taken:
        raise ExportError(f"{taken[0]}: exists; choose a new -o (an export never overwrites a file)")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    student = copy.deepcopy(student).float().eval()
    graph = StudentGraph(student).eval()
    n_states = int(student.num_hidden_states)
    names = [f"hidden_state_{i}" for i in range(n_states)] + [LENGTHS_OUTPUT]
    base = max(int(student.receptive_field), 400)
    wavs, lengths = example_batch([4 * base + 321, 2 * base + 45])
    axes = {"wavs": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, LENGTHS_OUTPUT: {0: "batch"}}
    axes.update({name: {0: "batch", 1: "frames"} for name in names[:-1]})
    tmp = output + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on the input checks (constant by design)
        torch.onnx.export(graph, (wavs, lengths), tmp, dynamo=False, opset_version=OPSET,
                          input_names=list(INPUTS), output_names=names, dynamic_axes=axes,
                          do_constant_folding=True)
    graph.eval()  # the exporter restores the wrapper's mode on everything below it
    try:
        batches = [list(b) for b in (check or check_batches(student))]
        diff = compare_onnx(OnnxRunner(tmp, threads=1), student, batches)
        if diff > tolerance:
            raise ExportError(f"{output}: ONNX Runtime differs from PyTorch by {diff:.3g} "
                              f"(> {tolerance:g}) on padded batches {batches}")
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    int8_path, int8_bytes, int8_diff = None, None, None
    if int8:
        int8_path = output[: -len(".onnx")] + ".int8.onnx"
        quantize_int8(output, int8_path)
        int8_bytes = os.path.getsize(int8_path)
        int8_diff = compare_onnx(OnnxRunner(int8_path, threads=1), student, batches[:1])
    info = OnnxExport(
        path=output, int8_path=int8_path, outputs=names, num_hidden_states=n_states,
        dim=int(student.dim), downsample_rate=int(student.downsample_rate),
        receptive_field=int(student.receptive_field), bytes=os.path.getsize(output),
        int8_bytes=int8_bytes, max_abs_diff=diff, int8_max_abs_diff=int8_diff,
        check_lengths=batches, versions=_versions())
    from s3prl_distill.io import atomic_write_text

    atomic_write_text(json.dumps(asdict(info), indent=1) + "\n", output[: -len(".onnx")] + ".json")
    logger.info("wrote %s (%.1f MB, max |diff| %.2g)%s", output, info.bytes / 1e6, diff,
                f" and {int8_path} ({int8_bytes / 1e6:.1f} MB)" if int8_path else "")
    return info
