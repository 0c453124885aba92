"""The frozen teacher interface every adapter implements (:class:`Teacher`, :class:`TeacherOutput`).

A teacher is always frozen: its parameters never require grad and its forward runs under
``torch.inference_mode`` with autocast off (the student's autocast never reaches it; the teacher
runs in its own ``precision``).

**Eval mode.** By default (``teacher.eval_mode: true``) the teacher stays in eval mode even when
``.train()`` is called on it or on a module that owns it: its dropout never acts, so its targets
are a deterministic function of the audio. S3PRL's distiller never puts its teacher in eval mode
(``pretrain/distiller/pretrain_expert.py``: the teacher is built by ``torch.hub.load``, frozen by
``requires_grad = False`` only, and trained inside the runner's ``.train()`` model; only its
encoder layerdrop is set to 0), so during S3PRL's distillation the teacher's dropout is active.
``eval_mode: false`` reproduces that: the teacher stays in *train* mode whatever ``.train()`` /
``.eval()`` calls say, with the checkpoint's dropout rates and layer drop 0 (its targets are then
random: a teacher-feature cache would freeze one draw; :attr:`Teacher.deterministic` says so).

**Precision** (``teacher.precision``): ``float32``, ``bfloat16`` or ``float16`` weights and
activations; ``auto`` (the default) is ``float16`` on CUDA and ``float32`` elsewhere. The weights
are cast at the first forward and whenever the teacher moves (``.to(device)``), so their dtype
follows the device (and a student initialised from a freshly built teacher gets float32
weights); the returned hidden states are float32 whatever the precision.

**Layers.** ``forward(wavs, wav_lengths, layers=None)``: ``None`` returns all ``L + 1`` hidden
states; a list returns only those states, in that order (layers above the highest one asked for
are not computed where the adapter can stop early). Only the returned states are copied out of
inference mode (inference tensors cannot be saved for backward, and a loss such as cosine
similarity saves its inputs).

Layer convention (all adapters): ``hidden_states[0]`` is the input of the first transformer layer
(after the front end, feature projection, positional embedding and - for post-LN models - the
encoder LayerNorm), ``hidden_states[i]`` the output of transformer layer ``i`` (1-based). For
pre-LN models (wav2vec 2.0 Large, WavLM, Whisper) the encoder's final LayerNorm is applied to the
last entry, ``hidden_states[L]``, because that normalised tensor is the model's output (what
fine-tuning and, for Whisper, the decoder consume) and the un-normalised residual stream of pre-LN
models has a few huge dimensions that would dominate an L1 target. The same convention as
transformers' ``output_hidden_states`` and S3PRL's experts.

**Input limits** (for screening data before a run): :attr:`Teacher.sample_rate` (16000 for every
teacher today), :attr:`Teacher.max_input_samples` (``None`` = no limit from the model itself;
Whisper: its stored positions, 30 s) and :attr:`Teacher.min_input_samples` (the shortest waveform
that gives one frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["Teacher", "TeacherOutput", "TeacherError", "check_wav_batch",
           "check_layers", "resolve_precision", "PRECISIONS", "SAMPLE_RATE"]

#: the sample rate every teacher takes today
SAMPLE_RATE = 16000

#: ``teacher.precision`` values and their dtypes (``auto``: :func:`resolve_precision`)
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: float32 weights, the forward under float16 autocast (what mixed-precision training does to a
#: teacher inside the autocast region: the official FitHuBERT trainer's Lightning AMP)
AUTOCAST_FLOAT16 = "autocast_float16"


class TeacherError(UserError):
    """A teacher checkpoint, folder or configuration cannot be used (the message says why)."""


@dataclass
class TeacherOutput:
    """Layer outputs of a teacher for one batch.

    Attributes:
        hidden_states: tensors ``[B, T, D]`` (float32); all ``L + 1`` (``[0]`` = input of the
            first transformer layer, ``[i]`` = output of layer ``i``) or, when ``forward`` was
            given ``layers``, ``hidden_states[j]`` is layer ``layers[j]``.
        lengths: ``[B]`` int64, valid frames of every entry of ``hidden_states``.
        layers: the layer index of every entry of ``hidden_states`` (``None``: ``0..L``).
    """

    hidden_states: List[Tensor]
    lengths: Tensor
    layers: Optional[List[int]] = None


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``teacher.precision`` -> the dtype the teacher runs in on ``device``.

    ``auto``: float16 on CUDA (the precision HuBERT / wav2vec 2.0 were trained in by fairseq and
    Whisper is served in by openai-whisper; 3 more mantissa bits than bfloat16), float32 elsewhere
    (on CPUs half precision is emulated or, with native bfloat16, drifts for little gain: see
    ``s3prl-distill bench --training``).
    """
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if precision == AUTOCAST_FLOAT16:  # float32 weights; the forward runs under autocast
        return torch.float32
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise TeacherError(f"teacher.precision: expected auto, {', '.join(PRECISIONS)} or "
                           f"{AUTOCAST_FLOAT16}; got {precision!r}") from None


def check_layers(layers: Optional[Sequence[int]], num_layers: int) -> List[int]:
    """``layers`` of :meth:`Teacher.forward` as a list (``None``: ``0..num_layers``).

    Raises:
        ValueError: not a non-empty sequence of ints in ``[0, num_layers]``.
    """
    if layers is None:
        return list(range(num_layers + 1))
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ValueError(f"teacher layers: expected a list of layer indices, got {layers!r}")
    out = list(layers)
    bad = [k for k in out if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= num_layers]
    if not out or bad:
        raise ValueError(f"teacher layers: expected indices in [0, {num_layers}] (0 = the input of "
                         f"layer 1), got {out!r}")
    return out


def check_wav_batch(wavs: Tensor, wav_lengths: Optional[Tensor]) -> Tensor:
    """Check a padded waveform batch and return its lengths.

    Args:
        wavs (Tensor): ``[B, S]`` float, 16 kHz, zero-padded.
        wav_lengths (Tensor or None): ``[B]`` valid samples; ``None`` means all ``S``.
    Returns:
        Tensor ``[B]`` int64 on ``wavs.device``.
    Raises:
        ValueError: naming the bad shape or value.
    """
    if not isinstance(wavs, Tensor) or wavs.dim() != 2:
        shape = list(wavs.shape) if isinstance(wavs, Tensor) else type(wavs).__name__
        raise ValueError(f"teacher input: expected wavs of shape [B, S], got {shape}")
    if not wavs.is_floating_point():
        raise ValueError(f"teacher input: expected float waveforms, got dtype {wavs.dtype}")
    batch, samples = wavs.shape
    if wav_lengths is None:
        return torch.full((batch,), samples, dtype=torch.long, device=wavs.device)
    if not isinstance(wav_lengths, Tensor) or wav_lengths.shape != (batch,):
        shape = list(wav_lengths.shape) if isinstance(wav_lengths, Tensor) else wav_lengths
        raise ValueError(f"teacher input: expected wav_lengths of shape [{batch}], got {shape}")
    if wav_lengths.is_floating_point():
        raise ValueError(f"teacher input: wav_lengths must be integers, got dtype {wav_lengths.dtype}")
    lengths = wav_lengths.to(device=wavs.device, dtype=torch.long)
    if batch and (int(lengths.min()) <= 0 or int(lengths.max()) > samples):
        raise ValueError(
            f"teacher input: wav_lengths must lie in [1, {samples}] (the padded length), "
            f"got {lengths.tolist()}"
        )
    return lengths


class Teacher(nn.Module):
    """A frozen speech model exposing its layer outputs.

    Subclasses implement :meth:`_forward` (called under ``torch.inference_mode`` with checked
    inputs, autocast off, weights already in the teacher's precision) and, where the front end
    matches the student's, :meth:`student_init_state`.

    Attributes:
        num_layers (int): transformer layers ``L``; ``forward`` returns up to ``L + 1`` states.
        dim (int): ``D`` of every hidden state.
        downsample_rate (int): input samples per output frame (320 = 20 ms at 16 kHz).
        sample_rate (int): input samples per second (16000).
        max_input_samples (int or None): the longest waveform the model can take (``None``: no
            limit of the model's own; memory still grows with length).
        min_input_samples (int or None): the shortest waveform that gives one frame (``None``:
            unknown).
        precision (str): ``auto`` | ``float32`` | ``bfloat16`` | ``float16`` (module docstring).
        eval_mode (bool): ``True``: always in eval mode (dropout off); ``False``: always in train
            mode, S3PRL's distiller behaviour (module docstring).
        fast_path (bool): use the inference fast path where the adapter has one (CPU, eval mode);
            ``False`` runs the plain modules (the benchmark's ``-nofast`` rows).
        source, path, arch (str): where it came from (for :meth:`describe`).
    """

    #: the padding behaviour of a teacher without the ``padding`` switch
    inherent_padding = "masked"

    def __init__(
        self,
        *,
        source: str,
        path: Optional[str],
        arch: str,
        num_layers: int,
        dim: int,
        downsample_rate: int = 320,
        sample_rate: int = SAMPLE_RATE,
        max_input_samples: Optional[int] = None,
        min_input_samples: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.path = path
        self.arch = arch
        self.num_layers = int(num_layers)
        self.dim = int(dim)
        self.downsample_rate = int(downsample_rate)
        self.sample_rate = int(sample_rate)
        self.max_input_samples = None if max_input_samples is None else int(max_input_samples)
        self.min_input_samples = None if min_input_samples is None else int(min_input_samples)
        self.precision = "auto"
        self.eval_mode = True
        self.fast_path = True

    # -- settings -----------------------------------------------------------------------------
    def configure(self, *, precision: Optional[str] = None, eval_mode: Optional[bool] = None,
                  fast_path: Optional[bool] = None, padding: Optional[str] = None) -> "Teacher":
        """Apply the ``teacher:`` settings (``None`` keeps the current one); returns ``self``.

        A reduced precision is applied by casting the weights at the first forward or move
        (``.to``), not here: a student initialised from the teacher right after it is built gets
        the float32 weights. Going back to ``float32`` after a cast does not restore the dropped
        bits (build a new teacher for that).

        Raises:
            TeacherError: an unknown precision, or ``padding: s3prl`` on a teacher without it.
        """
        if padding is not None:
            if padding not in ("masked", "s3prl"):
                raise TeacherError(f"teacher.padding: expected masked or s3prl, got {padding!r}")
            if hasattr(self, "padding"):  # the wav2vec 2.0 family has the switch
                self.padding = padding
            elif padding != self.inherent_padding:
                raise TeacherError(f"teacher.padding: {padding!r} is not available for a {self.arch} "
                                   f"teacher from source {self.source} (it has {self.inherent_padding!r} only)")
        if precision is not None:
            resolve_precision(precision, torch.device("cpu"))  # validates
            self.precision = precision
        if eval_mode is not None:
            self.eval_mode = bool(eval_mode)
        if fast_path is not None:
            self.fast_path = bool(fast_path)
        self._apply_mode()
        if precision is not None and self.dtype != torch.float32:  # already cast: follow the change now
            self._apply_precision()
        return self

    def _first_tensor(self) -> Optional[Tensor]:
        for tensor in self.parameters():
            if tensor.is_floating_point():
                return tensor
        for tensor in self.buffers():
            if tensor.is_floating_point():
                return tensor
        return None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the teacher's weights (and so its computation) are in now."""
        tensor = self._first_tensor()
        return torch.float32 if tensor is None else tensor.dtype

    @property
    def device(self) -> torch.device:
        """Where the teacher's weights are."""
        tensor = self._first_tensor()
        return torch.device("cpu") if tensor is None else tensor.device

    @property
    def deterministic(self) -> bool:
        """Whether equal inputs give equal targets (``False`` with ``eval_mode: false``: dropout)."""
        return self.eval_mode

    def _apply_precision(self) -> None:
        dtype = resolve_precision(self.precision, self.device)
        if self.dtype != dtype:
            super()._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)

    def _apply(self, fn, recurse: bool = True):
        """``.to(device)`` / ``.cuda()`` / ``.half()`` ...: then back to the precision the
        teacher's ``precision`` gives on the (new) device."""
        out = super()._apply(fn, recurse)
        if "precision" in self.__dict__:  # configured (not during construction)
            self._apply_precision()
        return out

    # -- frozen -----------------------------------------------------------------------------
    def freeze(self) -> "Teacher":
        """Turn off grads and fix the mode (subclasses call it at the end of ``__init__``)."""
        for param in self.parameters():
            param.requires_grad_(False)
        self._apply_mode()
        return self

    def _apply_mode(self) -> None:
        super().train(not self.eval_mode)

    def train(self, mode: bool = True) -> "Teacher":
        """Ignored: the teacher's mode is fixed by ``eval_mode`` (eval by default, so dropout and
        layer drop never act; train mode with ``eval_mode: false``)."""
        if mode == self.eval_mode:
            logger.debug("%s.train(%s) ignored: teacher.eval_mode is %s", type(self).__name__, mode,
                         self.eval_mode)
        return super().train(not self.eval_mode)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, wavs: Tensor, wav_lengths: Optional[Tensor] = None,
                layers: Optional[Sequence[int]] = None) -> TeacherOutput:
        """Run the frozen teacher.

        Args:
            wavs (Tensor): ``[B, S]`` float 16 kHz waveforms, zero-padded.
            wav_lengths (Tensor): ``[B]`` valid samples per waveform (``None``: all ``S``).
            layers (list of int): the hidden states to return, in this order (0 = input of the
                first transformer layer, ``i`` = output of layer ``i``); ``None``: all ``L + 1``.
        Returns:
            :class:`TeacherOutput` with one float32 ``[B, T, dim]`` tensor per requested layer
            and ``lengths [B]``. Frames past ``lengths`` are padding (their values are
            unspecified).
        Raises:
            ValueError: bad shapes, lengths or layers; a waveform over ``max_input_samples``.
        """
        lengths = check_wav_batch(wavs, wav_lengths)
        wanted = check_layers(layers, self.num_layers)
        if self.max_input_samples is not None and wavs.shape[0] and int(lengths.max()) > self.max_input_samples:
            i = int(lengths.argmax())
            raise ValueError(self._too_long_message(i, int(lengths[i])))
        if any(module.training != (not self.eval_mode) for module in self.modules()):
            self._apply_mode()  # a flag flipped directly on a submodule
        self._apply_precision()
        amp = self.precision == AUTOCAST_FLOAT16
        with torch.inference_mode(), torch.autocast(wavs.device.type, dtype=torch.float16, enabled=amp):
            out = self._forward(wavs.float(), lengths, wanted)
        if len(out.hidden_states) != len(wanted):
            raise RuntimeError(
                f"{type(self).__name__}: produced {len(out.hidden_states)} hidden states for "
                f"layers {wanted}"
            )
        # leave inference mode: plain float32 tensors the loss may save for backward, one copy
        # per requested layer
        copies: Dict[int, Tensor] = {}
        for k, h in zip(wanted, out.hidden_states):
            if k not in copies:
                copies[k] = h.float() if h.dtype != torch.float32 else h.clone()
        return TeacherOutput(
            hidden_states=[copies[k] for k in wanted],
            lengths=out.lengths.to(torch.long).clone(),
            layers=None if layers is None else wanted,
        )

    def _too_long_message(self, index: int, samples: int) -> str:
        """The error for waveform ``index`` of a batch being over ``max_input_samples``."""
        return (f"teacher input: waveform {index} of the batch has {samples} samples "
                f"({samples / self.sample_rate:.2f} s), more than this {self.arch} teacher takes "
                f"({self.max_input_samples} samples = {self.max_input_samples / self.sample_rate:.2f} s): "
                "crop or drop it")

    def _forward(self, wavs: Tensor, wav_lengths: Tensor, layers: List[int]) -> TeacherOutput:
        """Adapter forward (inside ``torch.inference_mode``, autocast off): ``wavs [B, S]``
        float32, checked ``wav_lengths [B]``, ``layers`` a checked list; returns the states of
        ``layers`` in that order (any float dtype) and ``lengths [B]``."""
        raise NotImplementedError

    @staticmethod
    def select(states: Dict[int, Tensor], layers: List[int]) -> List[Tensor]:
        """``[states[k] for k in layers]`` (for adapters that collect states by index)."""
        return [states[k] for k in layers]

    # -- initialisation / description --------------------------------------------------------
    def student_init_state(self, num_layers: int) -> Dict[str, Tensor]:
        """CNN front end + first ``num_layers`` transformer layers in the student's parameter
        names (torchaudio ``Wav2Vec2Model`` names). Adapters whose front end differs raise."""
        raise TeacherError(
            f"{type(self).__name__} ({self.source}, arch {self.arch}) cannot initialise a student: "
            "its weights are not available in torchaudio Wav2Vec2Model layout"
        )

    def _check_init_layers(self, num_layers: int) -> None:
        if self.dtype != torch.float32:
            logger.warning("student_init_state: the teacher's weights are already %s (teacher.precision "
                           "%s): the student gets them rounded; initialise before the teacher's first "
                           "forward or move", str(self.dtype).replace("torch.", ""), self.precision)
        if not isinstance(num_layers, int) or isinstance(num_layers, bool):
            raise TeacherError(f"student_init_state: num_layers must be an int, got {num_layers!r}")
        if not 0 <= num_layers <= self.num_layers:
            raise TeacherError(
                f"student_init_state: num_layers must lie in [0, {self.num_layers}] "
                f"(the teacher's layers), got {num_layers}"
            )

    def describe(self) -> Dict[str, Any]:
        """Plain description for checkpoints and cache checks: source, path, arch, num_layers,
        dim, rates, input limits and the settings that change the targets (precision as it
        resolves on the teacher's device, eval mode)."""
        return {
            "source": self.source,
            "path": self.path,
            "arch": self.arch,
            "num_layers": self.num_layers,
            "dim": self.dim,
            "downsample_rate": self.downsample_rate,
            "sample_rate": self.sample_rate,
            "max_input_samples": self.max_input_samples,
            "min_input_samples": self.min_input_samples,
            "precision": str(resolve_precision(self.precision, self.device)).replace("torch.", ""),
            "eval_mode": self.eval_mode,
        }

    def extra_repr(self) -> str:
        return (
            f"source={self.source}, arch={self.arch}, num_layers={self.num_layers}, dim={self.dim}, "
            f"downsample_rate={self.downsample_rate}, precision={self.precision}, eval_mode={self.eval_mode}, "
            f"fast_path={self.fast_path}"
        )
