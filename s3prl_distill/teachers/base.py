"""The frozen teacher interface every adapter implements (:class:`Teacher`, :class:`TeacherOutput`).

A teacher is always frozen: its parameters never require grad, it stays in eval mode even when
``.train()`` is called on it or on a module that owns it (S3PRL's own distiller left its teacher's
dropout active through exactly that route), and its forward runs under ``torch.inference_mode``.

The outputs are cloned out of inference mode before they are returned, so that the loss may use
them in autograd ops that save their inputs for backward (e.g. cosine similarity): inference
tensors cannot be saved for backward.

Layer convention (all adapters): ``hidden_states[0]`` is the input of the first transformer layer
(after the front end, feature projection, positional embedding and - for post-LN models - the
encoder LayerNorm), ``hidden_states[i]`` the output of transformer layer ``i`` (1-based). For
pre-LN models (wav2vec 2.0 Large, WavLM, Whisper) the encoder's final LayerNorm is applied to the
last entry, ``hidden_states[L]``, because that normalised tensor is the model's output (what
fine-tuning and, for Whisper, the decoder consume) and the un-normalised residual stream of pre-LN
models has a few huge dimensions that would dominate an L1 target. The same convention as
transformers' ``output_hidden_states`` and S3PRL's experts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["Teacher", "TeacherOutput", "TeacherError", "check_wav_batch"]


class TeacherError(UserError):
    """A teacher checkpoint, folder or configuration cannot be used (the message says why)."""


@dataclass
class TeacherOutput:
    """All layer outputs of a teacher for one batch.

    Attributes:
        hidden_states: ``L + 1`` tensors ``[B, T, D]`` (float32); ``[0]`` = input of the first
            transformer layer, ``[i]`` = output of transformer layer ``i``.
        lengths: ``[B]`` int64, valid frames of every entry of ``hidden_states``.
    """

    hidden_states: List[Tensor]
    lengths: Tensor


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
    """A frozen speech model exposing all its layer outputs.

    Subclasses implement :meth:`_forward` (called under ``torch.inference_mode`` with checked
    inputs) and, where the front end matches the student's, :meth:`student_init_state`.

    Attributes:
        num_layers (int): transformer layers ``L``; ``forward`` returns ``L + 1`` hidden states.
        dim (int): ``D`` of every hidden state.
        downsample_rate (int): input samples per output frame (320 = 20 ms at 16 kHz).
        source, path, arch (str): where it came from (for :meth:`describe`).
    """

    def __init__(
        self,
        *,
        source: str,
        path: Optional[str],
        arch: str,
        num_layers: int,
        dim: int,
        downsample_rate: int = 320,
    ) -> None:
        super().__init__()
        self.source = source
        self.path = path
        self.arch = arch
        self.num_layers = int(num_layers)
        self.dim = int(dim)
        self.downsample_rate = int(downsample_rate)

    # -- frozen -----------------------------------------------------------------------------
    def freeze(self) -> "Teacher":
        """Turn off grads and put every submodule in eval mode (subclasses call it at the end of
        ``__init__``)."""
        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> "Teacher":
        """Ignored: a teacher is always in eval mode (so dropout / layer drop never act)."""
        if mode:
            logger.debug("%s.train(True) ignored: teachers stay in eval mode", type(self).__name__)
        return super().train(False)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, wavs: Tensor, wav_lengths: Optional[Tensor] = None) -> TeacherOutput:
        """Run the frozen teacher.

        Args:
            wavs (Tensor): ``[B, S]`` float 16 kHz waveforms, zero-padded.
            wav_lengths (Tensor): ``[B]`` valid samples per waveform (``None``: all ``S``).
        Returns:
            :class:`TeacherOutput` with ``num_layers + 1`` hidden states ``[B, T, dim]`` and
            ``lengths [B]``. Frames past ``lengths`` are padding (their values are unspecified).
        """
        lengths = check_wav_batch(wavs, wav_lengths)
        if any(module.training for module in self.modules()):  # a flag flipped directly
            super().train(False)
        with torch.inference_mode():
            out = self._forward(wavs.float(), lengths)
        if len(out.hidden_states) != self.num_layers + 1:
            raise RuntimeError(
                f"{type(self).__name__}: produced {len(out.hidden_states)} hidden states, "
                f"expected num_layers + 1 = {self.num_layers + 1}"
            )
        # leave inference mode: plain tensors the loss may save for backward
        return TeacherOutput(
            hidden_states=[h.float().clone() for h in out.hidden_states],
            lengths=out.lengths.to(torch.long).clone(),
        )

    def _forward(self, wavs: Tensor, wav_lengths: Tensor) -> TeacherOutput:
        """Adapter forward (inside ``torch.inference_mode``), same contract as :meth:`forward`."""
        raise NotImplementedError

    # -- initialisation / description --------------------------------------------------------
    def student_init_state(self, num_layers: int) -> Dict[str, Tensor]:
        """CNN front end + first ``num_layers`` transformer layers in the student's parameter
        names (torchaudio ``Wav2Vec2Model`` names). Adapters whose front end differs raise."""
        raise TeacherError(
            f"{type(self).__name__} ({self.source}, arch {self.arch}) cannot initialise a student: "
            "its weights are not available in torchaudio Wav2Vec2Model layout"
        )

    def _check_init_layers(self, num_layers: int) -> None:
        if not isinstance(num_layers, int) or isinstance(num_layers, bool):
            raise TeacherError(f"student_init_state: num_layers must be an int, got {num_layers!r}")
        if not 0 <= num_layers <= self.num_layers:
            raise TeacherError(
                f"student_init_state: num_layers must lie in [0, {self.num_layers}] "
                f"(the teacher's layers), got {num_layers}"
            )

    def describe(self) -> Dict[str, Any]:
        """Plain description for checkpoints: source, path, arch, num_layers, dim (+ rate)."""
        return {
            "source": self.source,
            "path": self.path,
            "arch": self.arch,
            "num_layers": self.num_layers,
            "dim": self.dim,
            "downsample_rate": self.downsample_rate,
        }

    def extra_repr(self) -> str:
        return (
            f"source={self.source}, arch={self.arch}, num_layers={self.num_layers}, dim={self.dim}, "
            f"downsample_rate={self.downsample_rate}"
        )
