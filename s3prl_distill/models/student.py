"""The distillation student: CNN -> projection -> positional conv -> [time reduction] -> layers -> heads.

Forward path (shapes for a batch of B waveforms of S samples, valid lengths explicit throughout)::

    wavs [B, S], wav_lengths [B]
      feature_extractor          -> [B, T, C]           cnn_lengths [B]  (rate = CNN stride, 320)
                                    (waveform CNN, or log-mel + convs: ``front_end: log_mel``)
      encoder.feature_projection -> [B, T, D]          (or none: ``feature_projection: false``)
      padded frames set to 0, encoder.transformer.pos_conv_embed (x + conv) or sinusoidal
      positions, layer_norm (post-LN)
      time_reduction (stride k)  -> [B, ceil(T/k), D]   lengths [B]      (rate = 320 k;
                                    floor(T/k) with ``time_reduction_tail: drop``)
      layer 0 = this; encoder.transformer.layers[i]     -> layer i, [B, T_enc, D]
      heads[j](layer s_j)        -> prediction j [B, T_teacher, D_teacher]

Hidden-states layout (``StudentOutput.hidden_states``, what S3PRL's weighted-sum featurizer sees;
every entry is [B, T, D] with one T and one D, and ``downsample_rate`` is the true rate):

* ``hidden_states: layers`` (default): layers 0..N at the encoder rate. DistilHuBERT: CNN
  projection (``layer0: projection``, as S3PRL's DistilHuBERT) + 2 layers at 320 samples/frame. FitHuBERT (k = 2): the time-reduced input + 12
  layers, all [B, T/2, 480] at **640** samples/frame. We keep FitHuBERT's states at the reduced
  rate because these are the representations the student actually computes: the only trained
  upsampler is each layer's own prediction head, which is dropped after distillation; the
  official FitHuBERT expert returns the last head's 320-rate, 768-wide output as its
  ``hidden_states`` and the reduced-rate layers under separate keys, and putting both in one list
  would give states of two rates and two widths, which S3PRL's featurizer cannot sum.
  S3PRL's downstreams read ``get_downsample_rates`` and align their labels to 640 themselves.
* ``hidden_states: layers+heads``: layers, then each kept head's output (DistilHuBERT with its
  heads kept: needs D == D_teacher and no time reduction, checked by the config).
* ``hidden_states: heads``: the kept heads' outputs only, [B, T_teacher, D_teacher] at the CNN
  rate (FitW2V2-960 as fine-tuned in the FitHuBERT paper: the weighted sum of its 12 heads).
* ``hidden_states: last_head``: the last head's output only, [B, T_teacher, D_teacher] at the CNN
  rate; the other heads are dropped after distillation (FitHuBERT-100/960 and FitW2V2-100 as
  fine-tuned in the FitHuBERT paper: "prediction head at the only last layer is remained").

Padding: padded frames are zeroed before the positional conv and time reduction, the first
group norm uses valid frames only and attention masks padded keys, so the valid frames of a padded
utterance equal those of the same utterance run alone. (``cnn.group_norm_over_padding: true``
normalises over the padded batch instead, as S3PRL's DistillerModel and the official FitHuBERT do.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Optional

import torch
from torch import Tensor, nn

from s3prl_distill.lengths import zero_padding
from s3prl_distill.models.cnn import FeatureExtractor, FeatureProjection
from s3prl_distill.models.config import StudentConfig
from s3prl_distill.models.heads import build_head
from s3prl_distill.models.log_mel_front_end import LogMelFrontEnd
from s3prl_distill.models.positions import sinusoids
from s3prl_distill.models.time_reduction import TimeReduction
from s3prl_distill.models.weight_init import init_weights
from s3prl_distill.models.transformer import (
    ConvolutionalPositionalEmbedding,
    EncoderLayer,
    key_padding_mask,
)

__all__ = ["StudentOutput", "Student", "build_student"]


@dataclass
class StudentOutput:
    """What :meth:`Student.forward` returns.

    hidden_states: List[Tensor]  each [B, T, D], one T and one D (see the module docstring)
    lengths: Tensor              [B] valid frames of hidden_states
    predictions: List[Tensor]    one per head, [B, T_teacher, D_teacher] (empty without heads)
    prediction_lengths: Optional[Tensor]  [B] valid frames of predictions
    predicted_frames: Optional[int]  frames of the batch the heads computed (<= T_teacher; the
                                 rest of the predictions is zero filling up to T_teacher)
    layer_outputs: List[Tensor]  [B, T_enc, D]: [0] = transformer input (or the CNN projection
                                 when ``config.layer0 == "projection"``), [i] = layer i
    layer_lengths: Tensor        [B] valid frames of layer_outputs
    """

    hidden_states: List[Tensor]
    lengths: Tensor
    predictions: List[Tensor] = field(default_factory=list)
    prediction_lengths: Optional[Tensor] = None
    predicted_frames: Optional[int] = None
    layer_outputs: List[Tensor] = field(default_factory=list)
    layer_lengths: Optional[Tensor] = None


class _Encoder(nn.Module):
    """Container giving torchaudio's names: ``encoder.feature_projection``, ``encoder.transformer``."""

    def __init__(self, cfg: StudentConfig, in_channels: int):
        super().__init__()
        enc = cfg.encoder
        self.feature_projection = (
            FeatureProjection(in_channels, enc.dim, enc.feature_dropout, layer_norm=enc.feature_layer_norm)
            if enc.feature_projection
            else nn.Dropout(enc.feature_dropout)
        )
        self.transformer = _Transformer(cfg)


class _Transformer(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        enc = cfg.encoder
        self.pos_conv_embed = (
            ConvolutionalPositionalEmbedding(enc.dim, enc.pos_conv_kernel, enc.pos_conv_groups)
            if enc.pos_conv_kernel
            else None
        )
        self.layer_norm = nn.LayerNorm(enc.dim)
        self.layers = nn.ModuleList(
            EncoderLayer(enc.dim, enc.ffn_dim, enc.num_heads, enc.layer_norm_first, enc.dropout,
                         enc.attention_dropout, enc.activation_dropout)
            for _ in range(enc.num_layers)
        )
        self.dropout = nn.Dropout(enc.dropout)


class _DroppedHead(nn.Module):
    """Placeholder (no parameters) for a head dropped while a later one is kept (``last_head``)."""

    def forward(self, x: Tensor, target_frames: int) -> Tensor:
        raise RuntimeError("this prediction head was dropped after distillation")


class Student(nn.Module):
    """A distillation student built from a :class:`StudentConfig`.

    Attributes:
        config: the config it was built from.
        target_layers: teacher layer predicted by each head, in head order.
        downsample_rate: samples per frame of ``hidden_states``.
    """

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.config = cfg
        self.feature_extractor = (
            LogMelFrontEnd(cfg.log_mel, cfg.feature_grad_mult) if cfg.front_end == "log_mel"
            else FeatureExtractor(cfg.cnn, cfg.feature_grad_mult)
        )
        self.encoder = _Encoder(cfg, self.feature_extractor.out_channels)
        self.time_reduction = (
            TimeReduction(cfg.encoder.dim, cfg.time_reduction, cfg.time_reduction_tail)
            if cfg.time_reduction > 1 else None
        )
        self.heads = nn.ModuleList(
            build_head(h, cfg.encoder.dim, cfg.teacher_dim, cfg.time_reduction) for h in cfg.heads
        )
        self._set_active_heads(list(range(len(cfg.heads))))
        self.heads_dropped = False
        init_weights(self, cfg.weight_init)

    def _set_active_heads(self, active: List[int]) -> None:
        """Heads ``active`` (indices into ``config.heads``) are attached; the others are gone."""
        self._active = list(active)
        self._head_layers = [self.config.heads[j].student_layer for j in self._active]
        self.target_layers: List[int] = [self.config.heads[j].teacher_layer for j in self._active]

    # ------------------------------------------------------------------ properties
    @property
    def num_layers(self) -> int:
        return self.config.encoder.num_layers

    @property
    def num_heads(self) -> int:
        """Prediction heads currently attached (all before distillation ends; after
        :meth:`drop_heads`: none, all, or the last one, as the config keeps them)."""
        return len(self._active)

    @property
    def hidden_states_layout(self) -> str:
        """The layout in effect: ``config.hidden_states``, or ``layers`` once the heads are gone."""
        return self.config.hidden_states if self._active else "layers"

    @property
    def _head_layout(self) -> bool:
        """Whether ``hidden_states`` are head outputs only (teacher rate and width)."""
        return self.hidden_states_layout in ("heads", "last_head")

    @property
    def dim(self) -> int:
        """Width D of ``hidden_states``."""
        return self.config.teacher_dim if self._head_layout else self.config.encoder.dim

    @property
    def downsample_rate(self) -> int:
        """Samples per frame of ``hidden_states`` (the true rate S3PRL is told)."""
        if self._head_layout:
            return self.config.front_end_stride
        return self.config.downsample_rate

    @property
    def cnn_rate(self) -> int:
        """Samples per frame of the front end's output and of the predictions (the teacher's rate)."""
        return self.config.front_end_stride

    @property
    def receptive_field(self) -> int:
        """Minimum input length in samples."""
        return self.config.front_end_receptive_field

    @property
    def num_hidden_states(self) -> int:
        """How many tensors ``hidden_states`` holds (with the heads currently attached)."""
        n_layers = self.config.encoder.num_layers + 1
        mode = self.hidden_states_layout
        if mode == "heads":
            return self.num_heads
        if mode == "last_head":
            return 1
        if mode == "layers+heads":
            return n_layers + self.num_heads
        return n_layers

    def output_lengths(self, wav_lengths: Tensor) -> Tensor:
        """[B] samples -> [B] valid frames of ``hidden_states`` (exact conv arithmetic)."""
        lengths = self.feature_extractor.output_lengths(wav_lengths)
        if self.time_reduction is None:
            return lengths
        if self._head_layout:
            return self.time_reduction.restored_lengths(lengths)
        return self.time_reduction.output_lengths(lengths)

    def drop_heads(self, force: bool = False) -> None:
        """Remove the prediction heads (after distillation), unless ``config.keep_heads``.

        With ``keep_heads`` and ``hidden_states: last_head`` only the last head stays (its
        parameters keep their names, ``heads.{J-1}.*``; the others become parameterless
        placeholders). ``force=True`` removes every head even then
        (``load_student(..., keep_heads=False)``); the hidden states then fall back to the
        ``layers`` layout.
        """
        if self.config.keep_heads and not force:
            if self.config.hidden_states == "last_head" and len(self._active) > 1:
                for j in self._active[:-1]:
                    self.heads[j] = _DroppedHead()
                self._set_active_heads(self._active[-1:])
            return
        self.heads = nn.ModuleList()
        self._set_active_heads([])
        self.heads_dropped = True

    def match_state_heads(self, keys: Iterable[str]) -> None:
        """Before loading a state dict saved after :meth:`drop_heads`: drop the heads it lacks.

        A state without any head parameter drops every head; one holding only the last head's
        (``hidden_states: last_head``) keeps that one. Any other gap is left for the loader to
        report as a mismatch.
        """
        keys = list(keys)
        with_params = [j for j in self._active if any(True for _ in self.heads[j].parameters())]
        missing = [j for j in with_params if not any(k.startswith(f"heads.{j}.") for k in keys)]
        if not missing:
            return
        if missing == with_params:
            self.drop_heads(force=True)
        elif (self.config.keep_heads and self.config.hidden_states == "last_head"
              and missing == with_params[:-1]):
            self.drop_heads()

    # ------------------------------------------------------------------ forward
    def forward(self, wavs: Tensor, wav_lengths: Optional[Tensor] = None, with_heads: bool = True,
                target_frames: Optional[int] = None) -> StudentOutput:
        """Run the student.

        Args:
            wavs (Tensor): [B, S] float32, 16 kHz, zero-padded after each utterance.
            wav_lengths (Tensor): [B] int64 valid samples (default: all S).
            with_heads: compute the heads' predictions (for the distillation loss).
            target_frames: frames of the teacher's hidden states the predictions are trimmed /
                zero-padded to (default: the CNN frame count, which equals the teacher's when the
                CNN arithmetic matches, as for HuBERT's and FitHuBERT's front ends).
        Returns:
            StudentOutput (see its docstring).
        """
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [B, S], got shape {tuple(wavs.shape)}")
        b, s = wavs.shape
        if wav_lengths is None:
            wav_lengths = torch.full((b,), s, dtype=torch.long, device=wavs.device)
        wav_lengths = wav_lengths.to(device=wavs.device, dtype=torch.long)
        if wav_lengths.shape != (b,):
            raise ValueError(f"wav_lengths must be [B] = [{b}], got shape {tuple(wav_lengths.shape)}")
        if bool((wav_lengths > s).any()):
            raise ValueError(f"wav_lengths {wav_lengths.tolist()} exceed the {s} samples of wavs")
        if bool((wav_lengths < self.receptive_field).any()):
            raise ValueError(
                f"every waveform needs at least {self.receptive_field} samples (the CNN's receptive "
                f"field), got lengths {wav_lengths.tolist()}"
            )
        # no work on padding beyond the longest utterance
        longest = int(wav_lengths.max())
        if longest < s:
            wavs = wavs[:, :longest]

        x, cnn_lengths = self.feature_extractor(wavs, wav_lengths)
        cnn_frames = x.shape[1]
        tr = self.encoder.transformer
        x = self.encoder.feature_projection(x)
        projection = x
        x = zero_padding(x, cnn_lengths)
        if tr.pos_conv_embed is not None:
            x = tr.pos_conv_embed(x)
        if self.config.encoder.sinusoidal_positions:
            x = x + sinusoids(x.shape[1], x.shape[2], device=x.device).to(x.dtype)
        if not self.config.encoder.layer_norm_first:
            x = tr.layer_norm(x)
        x = tr.dropout(x)
        lengths = cnn_lengths
        if self.time_reduction is not None:
            if not self.config.time_reduction_sees_padding:
                x = zero_padding(x, lengths)
            x, lengths = self.time_reduction(x, lengths)

        mask = key_padding_mask(lengths, x.shape[1])
        layer_outputs = [projection if self.config.layer0 == "projection" else x]
        for layer in tr.layers:
            x = layer(x, mask)
            layer_outputs.append(x)
        if self.config.encoder.layer_norm_first:
            layer_outputs[-1] = tr.layer_norm(layer_outputs[-1])

        mode = self.hidden_states_layout
        predictions: List[Tensor] = []
        prediction_lengths: Optional[Tensor] = None
        predicted_frames: Optional[int] = None
        if self._active and (with_heads or mode != "layers"):
            frames = cnn_frames if target_frames is None else int(target_frames)
            # the upstream of ``last_head`` needs only the last head
            run = range(len(self._active)) if with_heads or mode != "last_head" else [-1]
            predictions = [
                self.heads[self._active[i]](layer_outputs[self._head_layers[i]], frames) for i in run
            ]
            restored = (cnn_lengths if self.time_reduction is None
                        else self.time_reduction.restored_lengths(cnn_lengths))
            prediction_lengths = restored.clamp(max=frames)
            # frames the heads computed (a time reduction that drops a partial last group of k
            # predicts fewer than the CNN has); beyond them the predictions are zero filling
            predicted_frames = min(frames, layer_outputs[-1].shape[1] * self.config.time_reduction
                                   if self.time_reduction is not None else cnn_frames)

        if mode == "heads" and predictions:
            hidden_states, hs_lengths = list(predictions), prediction_lengths
        elif mode == "last_head" and predictions:
            hidden_states, hs_lengths = [predictions[-1]], prediction_lengths
        elif mode == "layers+heads" and predictions:
            hidden_states, hs_lengths = layer_outputs + predictions, lengths
        else:
            hidden_states, hs_lengths = list(layer_outputs), lengths
        if not with_heads:
            predictions, prediction_lengths, predicted_frames = [], None, None
        return StudentOutput(
            hidden_states=hidden_states,
            lengths=hs_lengths,
            predictions=predictions,
            prediction_lengths=prediction_lengths,
            predicted_frames=predicted_frames,
            layer_outputs=layer_outputs,
            layer_lengths=lengths,
        )


def build_student(cfg: StudentConfig) -> Student:
    """Build an untrained :class:`Student` from ``cfg`` (random weights per ``cfg.weight_init``)."""
    return Student(cfg)
