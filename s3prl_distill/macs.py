"""Count multiply-accumulate operations (MACs) of a model's forward pass.

The count follows the convention of the SUPERB leaderboard's efficiency columns: the MACs of the
upstream's forward pass (what the featurizer consumes, prediction heads excluded unless the caller
runs them), counting the multiply-accumulates of every matrix product and convolution, and **not**
counting element-wise work (normalisation, activations, softmax, residual additions, biases).
One multiply and one add is one MAC; FLOPs are about ``2 * MACs``.

Counting happens on the operations PyTorch actually dispatches (a ``TorchDispatchMode``), so it
covers any implementation the same way: ``nn.Linear`` and ``nn.Conv1d`` modules, functional
``matmul``/``einsum``, fused ``scaled_dot_product_attention`` and fairseq-style attention alike.
Attention's two products (``Q K^T`` and ``A V``) are counted, so the quadratic cost of long inputs
shows up.

Per operation (shapes of the dispatched arguments):

=============================  ==============================================================
op                             MACs
=============================  ==============================================================
``mm(a[M,K], b[K,N])``         ``M * N * K`` (``addmm`` the same; the bias add is not counted)
``bmm(a[B,M,K], b[B,K,N])``    ``B * M * N * K`` (``baddbmm`` the same)
``mv(a[M,K], v[K])``           ``M * K``; ``dot(a[K], b[K])``: ``K``
``convolution``                ``out.numel() * C_in / groups * prod(kernel)``; transposed:
                               ``in.numel() * C_out / groups * prod(kernel)``
SDPA ``q[...,L,E] k[...,S,E]   ``prod(batch dims) * L * S * (E + E_v)``
v[...,S,E_v]``
real FFT of ``n`` points       ``n * log2(n)`` per transform (rfft and irfft; the real
                               multiplies of a radix-2 FFT); complex FFT: twice that
=============================  ==============================================================

A product of complex operands counts 4 MACs per complex multiply-accumulate (4 real ones).

Conventions (``MacCounter(module, convention=...)``):

* ``"products"`` (default): the table above.
* ``"superb"``: the SUPERB leaderboard's count (``s3prl-distill profile``), which its published rows
  pin down exactly (see :data:`SUPERB_REFERENCE` and ``docs/EXPORT.md``): matrix products and
  convolutions as above (a convolution on the frames it actually outputs, so an even-kernel
  positional conv's dropped extra frame counts), no FFTs (a model is charged for its convolution,
  not for a faster way to compute it: profile the plain path), plus **1 MAC per element of a
  feed-forward activation** (an activation applied to a linear layer's output: GELU/ReLU/SiLU of
  the FFN; the CNN's activations are free) and **4 MACs per attention-probability element**
  (``B * H * L * S`` per attention).

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(4, 3)
    >>> count_macs(layer, torch.zeros(2, 5, 4)).total   # 2*5 rows x 4 in x 3 out
    120
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

logger = logging.getLogger(__name__)

__all__ = ["MacCount", "MacCounter", "count_macs", "count_macs_fn", "format_macs", "CONVENTIONS",
           "SUPERB_REFERENCE"]

#: counting conventions of :class:`MacCounter`
CONVENTIONS = ("products", "superb")

#: The SUPERB leaderboard's published rows these conventions are checked against (the
#: leaderboard's paper rows; MACs summed over the 32 profiling inputs, and per bucket of 8).
#: The profiling code itself is not published; ``superb`` reproduces these numbers exactly.
SUPERB_REFERENCE = {
    "HuBERT Base": {"params": 94_697_600, "macs": 1_669_156_022_848,
                    "buckets": (149_255_103_040, 261_280_279_552, 422_366_359_296, 836_254_280_960)},
    "wav2vec 2.0 Base": {"params": 95_044_608, "macs": 1_669_156_022_848,
                         "buckets": (149_255_103_040, 261_280_279_552, 422_366_359_296,
                                     836_254_280_960)},
    "FBANK": {"params": 0, "macs": 479_126_160,
              "buckets": (44_770_560, 77_600_880, 123_311_280, 233_443_440)},
}

aten = torch.ops.aten


def _shape(x: Any) -> List[int]:
    return list(x.shape)


def _mm(args, out) -> int:
    a, b = args[0], args[1]
    m, k = _shape(a)
    return m * k * _shape(b)[1]


def _addmm(args, out) -> int:
    return _mm(args[1:], out)


def _bmm(args, out) -> int:
    a, b = args[0], args[1]
    bsz, m, k = _shape(a)
    return bsz * m * k * _shape(b)[2]


def _baddbmm(args, out) -> int:
    return _bmm(args[1:], out)


def _mv(args, out) -> int:
    m, k = _shape(args[0])
    return m * k


def _dot(args, out) -> int:
    return _shape(args[0])[0]


def _convolution(args, out) -> int:
    x, weight = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    groups = int(args[8]) if len(args) > 8 else 1
    kernel = math.prod(_shape(weight)[2:])
    result = out[0] if isinstance(out, (tuple, list)) else out
    if transposed:
        # weight [C_in, C_out / groups, *kernel]: each input element feeds C_out/groups * kernel
        return x.numel() * _shape(weight)[1] * kernel
    # weight [C_out, C_in / groups, *kernel]: each output element sums C_in/groups * kernel
    return result.numel() * _shape(weight)[1] * kernel


def _conv_nd(args, out) -> int:
    # aten.conv1d/conv2d(input, weight, bias, stride, padding, dilation, groups): seen only when
    # they reach the dispatcher undecomposed; output channels are in the output.
    x, weight = args[0], args[1]
    result = out[0] if isinstance(out, (tuple, list)) else out
    return result.numel() * _shape(weight)[1] * math.prod(_shape(weight)[2:])


def _sdpa(args, out) -> int:
    q, k, v = args[0], args[1], args[2]
    qs, ks, vs = _shape(q), _shape(k), _shape(v)
    batch = math.prod(qs[:-2])
    return batch * qs[-2] * ks[-2] * (qs[-1] + vs[-1])


def _native_mha(args, out) -> int:
    # _native_multi_head_attention(query[B,L,E], key[B,S,E], value[B,S,E], embed_dim, heads, ...)
    q, k = args[0], args[1]
    bsz, length, dim = _shape(q)
    src = _shape(k)[1]
    projections = bsz * (length + 2 * src) * dim * dim + bsz * length * dim * dim
    return projections + 2 * bsz * length * src * dim


def _fft_points(x: Any, dims: Any) -> int:
    return math.prod(_shape(x)[d] for d in dims)


def _fft_r2c(args, out) -> int:
    # _fft_r2c(real input, dim, normalization, onesided): n log2 n per n-point transform
    n = _fft_points(args[0], args[1])
    return int(args[0].numel() * math.log2(max(n, 2)))


def _fft_c2r(args, out) -> int:
    # _fft_c2r(complex input, dim, normalization, last_dim_size): real output of n points
    n = _fft_points(out, args[1])
    return int(out.numel() * math.log2(max(n, 2)))


def _fft_c2c(args, out) -> int:
    n = _fft_points(args[0], args[1])
    return int(2 * args[0].numel() * math.log2(max(n, 2)))


def _complex_factor(args) -> int:
    """4 when the product's operands are complex (one complex MAC = 4 real MACs), else 1."""
    return 4 if any(isinstance(a, torch.Tensor) and a.is_complex() for a in args) else 1


_FFT_OPS = ("_fft_r2c", "_fft_c2r", "_fft_c2c")
_SDPA_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
#: products whose output an FFN activation reads (``superb``)
_LINEAR_OPS = ("mm", "addmm", "bmm", "baddbmm")
#: ops that only re-view their input (they do not break "an activation reads a product's output")
_VIEW_OPS = frozenset(("view", "_unsafe_view", "reshape", "transpose", "t", "permute", "expand",
                       "alias", "detach", "as_strided", "slice", "select", "unsqueeze", "squeeze",
                       "split", "unbind", "chunk", "lift_fresh", "clone", "contiguous", "to",
                       "_to_copy", "type_as"))
#: activation functions charged 1 MAC per element when they read a linear layer's output (``superb``)
_ACTIVATION_OPS = ("gelu", "gelu_", "relu", "relu_", "silu", "silu_")
#: attention probabilities: 4 MACs per element (``superb``)
SUPERB_PER_ATTENTION_PROB = 4


def _is_composite(func) -> bool:
    """Whether ``func`` reaches a dispatch mode whole and is counted through its decomposition."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")


def _attention_probs(func_name: str, args, out) -> int:
    """``B * H * L * S`` of an attention op (SDPA) or of an explicit softmax's output, else 0."""
    if func_name in _SDPA_OPS:
        q, k = args[0], args[1]
        return math.prod(_shape(q)[:-1]) * _shape(k)[-2]
    if func_name in ("_softmax", "softmax"):
        result = out[0] if isinstance(out, (tuple, list)) else out
        return result.numel()
    return 0


def _ops() -> Dict[Any, Callable[[Any, Any], int]]:
    table: Dict[Any, Callable[[Any, Any], int]] = {
        aten.mm: _mm,
        aten.addmm: _addmm,
        aten.bmm: _bmm,
        aten.baddbmm: _baddbmm,
        aten.mv: _mv,
        aten.dot: _dot,
        aten.convolution: _convolution,
        aten._convolution: _convolution,
    }
    optional = {
        "mkldnn_convolution": _convolution_mkldnn,
        "conv1d": _conv_nd,
        "conv2d": _conv_nd,
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa,
        "_scaled_dot_product_flash_attention": _sdpa,
        "_scaled_dot_product_efficient_attention": _sdpa,
        "_scaled_dot_product_cudnn_attention": _sdpa,
        "_native_multi_head_attention": _native_mha,
        "_fft_r2c": _fft_r2c,
        "_fft_c2r": _fft_c2r,
        "_fft_c2c": _fft_c2c,
    }
    for name, fn in optional.items():
        packet = getattr(aten, name, None)
        if packet is not None:
            table[packet] = fn
    return table


def _convolution_mkldnn(args, out) -> int:
    # mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups): never transposed
    x, weight = args[0], args[1]
    result = out[0] if isinstance(out, (tuple, list)) else out
    return result.numel() * _shape(weight)[1] * math.prod(_shape(weight)[2:])


_OP_TABLE: Optional[Dict[Any, Callable[[Any, Any], int]]] = None


def _op_table() -> Dict[Any, Callable[[Any, Any], int]]:
    global _OP_TABLE
    if _OP_TABLE is None:
        _OP_TABLE = _ops()
    return _OP_TABLE


@dataclass
class MacCount:
    """Result of a count.

    Attributes:
        total: all MACs of the forward pass.
        by_op: MACs per aten operation name (``"mm"``, ``"convolution"``, ...).
        by_module: MACs per innermost module (dotted name as in ``named_modules``; ``""`` is the
            root module, ``"<none>"`` work done outside any module). Empty when counting a plain
            function.
    """

    total: int = 0
    by_op: Dict[str, int] = field(default_factory=dict)
    by_module: Dict[str, int] = field(default_factory=dict)

    def by_prefix(self, depth: int = 1) -> Dict[str, int]:
        """MACs summed over module-name prefixes of ``depth`` components (e.g. ``encoder``)."""
        sums: Dict[str, int] = defaultdict(int)
        for name, macs in self.by_module.items():
            key = ".".join(name.split(".")[:depth]) if name else ""
            sums[key] += macs
        return dict(sums)


class MacCounter(TorchDispatchMode):
    """Dispatch mode that adds up the MACs of every matrix product / convolution it sees.

    Use :func:`count_macs` unless you need to count several calls into one total::

        with MacCounter(model) as counter:
            model(x); model(y)
        counter.result().total
    """

    def __init__(self, module: Optional[nn.Module] = None, convention: str = "products"):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown MAC convention {convention!r}; expected one of {CONVENTIONS}")
        self.convention = convention
        # superb: numel of the last product's output while no other computing op has run since
        self._product_numel: Optional[int] = None
        self._table = _op_table()
        self._total = 0
        self._by_op: Dict[str, int] = defaultdict(int)
        self._by_module: Dict[str, int] = defaultdict(int)
        self._stack: List[str] = []
        self._handles: List[Any] = []
        self._module = module
        self._depth = 0

    def __enter__(self):
        # the mode is re-entered while decomposing composite ops: hooks only at the outermost level
        self._depth += 1
        if self._depth == 1 and self._module is not None:
            for name, sub in self._module.named_modules():
                self._handles.append(sub.register_forward_pre_hook(self._push(name)))
                self._handles.append(sub.register_forward_hook(self._pop(name)))
        return super().__enter__()

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
        return super().__exit__(*exc)

    def _push(self, name: str):
        def hook(module, inputs):
            self._stack.append(name)

        return hook

    def _pop(self, name: str):
        def hook(module, inputs, output):
            # pop our own entry (a module may raise mid-forward; keep the stack consistent)
            while self._stack:
                if self._stack.pop() == name:
                    break

        return hook

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        superb = self.convention == "superb"
        rule = self._table.get(func.overloadpacket)
        if superb and name in _FFT_OPS:
            rule = None
        elif superb and name in _ACTIVATION_OPS + ("_softmax",):
            out = func(*args, **kwargs)
            macs = 0
            if name in _ACTIVATION_OPS:
                x = args[0]
                if isinstance(x, torch.Tensor) and x.numel() == self._product_numel:
                    macs = x.numel()
            else:
                macs = SUPERB_PER_ATTENTION_PROB * _attention_probs(name, args, out)
            self._product_numel = None
            self._add(name, macs)
            return out
        if (superb and func.namespace == "aten" and name not in _VIEW_OPS
                and not (rule is None and _is_composite(func))):
            self._product_numel = None  # any other computing op in between
        if rule is None and func.namespace == "aten" and not (superb and name in _FFT_OPS):
            # Composite ops (linear, matmul, einsum, SDPA, conv1d, ... reach a dispatch mode whole
            # under inference mode): count the ops they decompose into, with this mode active.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if rule is not None:
            macs = int(rule(args, out))
            if name not in _FFT_OPS:
                macs *= _complex_factor(args)
            if superb:
                macs += SUPERB_PER_ATTENTION_PROB * _attention_probs(name, args, out)
                if name in _LINEAR_OPS:
                    result = out[0] if isinstance(out, (tuple, list)) else out
                    self._product_numel = result.numel()
            self._add(name, macs)
        return out

    def _add(self, name: str, macs: int) -> None:
        if not macs:
            return
        self._total += macs
        self._by_op[name] += macs
        if self._module is not None:
            self._by_module[self._stack[-1] if self._stack else "<none>"] += macs

    def result(self) -> MacCount:
        return MacCount(self._total, dict(self._by_op), dict(self._by_module))


def count_macs(module: nn.Module, *args: Any, convention: str = "products", **kwargs: Any) -> MacCount:
    """MACs of ``module(*args, **kwargs)``, run once under ``torch.inference_mode``.

    Args:
        module: any ``nn.Module`` (its training/eval mode is left as it is).
        *args, **kwargs: the forward's inputs, e.g. ``wavs [B, S]`` and ``wav_lengths [B]``.

    Returns:
        :class:`MacCount` with the total, per-op and per-module breakdowns.
    """
    with torch.inference_mode(), MacCounter(module, convention) as counter:
        module(*args, **kwargs)
    return counter.result()


def count_macs_fn(fn: Callable[[], Any], convention: str = "products") -> MacCount:
    """MACs of calling ``fn()`` (no module attribution), under ``torch.inference_mode``."""
    with torch.inference_mode(), MacCounter(None, convention) as counter:
        fn()
    return counter.result()


def format_macs(macs: float) -> str:
    """Human-readable MACs: ``'12.3 G'``, ``'456.0 M'``, ``'7.0 K'``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(macs) >= scale:
            return f"{macs / scale:.1f} {unit}"
    return f"{macs:.0f}"
