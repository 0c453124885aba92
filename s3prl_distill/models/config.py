"""Typed configuration of a student model (the ``student:`` and ``init:`` sections of a model YAML).

A student is: a convolutional front end (``cnn``) on the raw 16 kHz waveform, a feature projection
to the encoder width, a convolutional positional embedding, an optional time-reduction layer
(FitHuBERT), ``encoder.num_layers`` transformer layers, and prediction heads that map student
layers to teacher layers for the distillation loss.

Layer numbering (used by ``heads[j].student_layer``): ``0`` = the input of the first transformer
layer (the CNN projection after positional embedding, and after time reduction when enabled),
``i`` = output of transformer layer ``i`` (1-based). Teacher layers use the same convention
(``teacher_layer: 12`` = HuBERT Base's last layer).

Example (DistilHuBERT, abridged)::

    student:
      family: distilhubert
      cnn: {norm: group_norm_first}          # HuBERT's 7 x 512 front end by default
      encoder: {dim: 768, ffn_dim: 3072, num_heads: 12, num_layers: 2}
      heads:
        - {student_layer: 2, teacher_layer: 4, type: mlp}
        - {student_layer: 2, teacher_layer: 8, type: mlp}
        - {student_layer: 2, teacher_layer: 12, type: mlp}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from s3prl_distill.config import ConfigError

__all__ = [
    "ConvLayerConfig",
    "CNNConfig",
    "LogMelFrontEndConfig",
    "EncoderConfig",
    "HeadConfig",
    "StudentConfig",
    "InitConfig",
    "TEACHER_CNN",
    "FITHUBERT_CNN",
]


@dataclass
class ConvLayerConfig:
    """One 1-D convolution of the front end: ``channels`` outputs, ``kernel`` and ``stride`` in samples/frames."""

    channels: int
    kernel: int
    stride: int

    def validate(self) -> None:
        for key in ("channels", "kernel", "stride"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")


def _layers(spec) -> List[ConvLayerConfig]:
    return [ConvLayerConfig(c, k, s) for c, k, s in spec]


# HuBERT / wav2vec 2.0 Base: 7 layers x 512 channels, receptive field 400, stride 320 samples.
TEACHER_CNN = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
# FitHuBERT: channel-increasing with pointwise convs. The paper's text lists 8 layers whose strides
# multiply to 160, but says "9-layer CNNs"; its released config (and its parameter counts in
# Tables 1, 2 and 4, which we reproduce exactly) has four (256, 3, 2) layers: 9 layers, stride 320.
FITHUBERT_CNN = (
    [(128, 10, 5), (256, 1, 1)] + [(256, 3, 2)] * 4 + [(512, 1, 1)] + [(512, 2, 2)] * 2
)


@dataclass
class CNNConfig:
    """Convolutional front end on the raw waveform [B, S] -> [B, C_last, T].

    ``norm``: ``group_norm_first`` = a per-channel group norm after the first conv only (HuBERT Base,
    wav2vec 2.0 Base; computed over valid samples only, so padding never changes the output),
    ``layer_norm`` = a layer norm over channels after every conv (wav2vec 2.0 Large style),
    ``none``. ``bias``: conv biases (HuBERT has none).

    ``group_norm_over_padding``: ``false`` (default, ours) = the first group norm's statistics come
    from each utterance's valid frames; ``true`` = from all frames of the zero-padded batch, as
    S3PRL's ``DistillerModel`` and the official FitHuBERT compute it (fairseq's ``Fp32GroupNorm``
    on the padded batch): then an utterance's features depend on how much padding its batch has.
    Only for reproducing those codes exactly on padded batches.
    """

    layers: List[ConvLayerConfig] = field(default_factory=lambda: _layers(TEACHER_CNN))
    norm: Literal["group_norm_first", "layer_norm", "none"] = "group_norm_first"
    bias: bool = False
    group_norm_over_padding: bool = False

    def validate(self) -> None:
        if not self.layers:
            raise ConfigError("layers: at least one conv layer is needed")
        if self.group_norm_over_padding and self.norm != "group_norm_first":
            raise ConfigError(
                f"group_norm_over_padding: true needs norm: group_norm_first (got norm: {self.norm}, "
                "which has no group norm)"
            )

    @property
    def stride(self) -> int:
        """Samples per output frame (product of the strides)."""
        out = 1
        for layer in self.layers:
            out *= layer.stride
        return out

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (the minimum input length)."""
        field_, jump = 1, 1
        for layer in self.layers:
            field_ += (layer.kernel - 1) * jump
            jump *= layer.stride
        return field_


@dataclass
class LogMelFrontEndConfig:
    """Log-mel front end (Whisper's): log-mel frames [B, n_mels, F] at 10 ms -> 1-D convs ->
    [B, T, C_last], GELU after every conv.

    The log-mel is Whisper's (:mod:`s3prl_distill.models.log_mel`, per utterance on its valid
    samples). Each conv has "same" padding ``kernel // 2`` (odd kernels only), so a layer of stride
    ``s`` maps ``F`` frames to ``ceil(F / s)``. Whisper's encoder front end is
    ``[(D, 3, 1), (D, 3, 2)]``: 20 ms frames, the rate of HuBERT's waveform CNN.
    """

    n_mels: int = 80
    layers: List[ConvLayerConfig] = field(default_factory=lambda: _layers([(384, 3, 1), (384, 3, 2)]))

    def validate(self) -> None:
        if self.n_mels < 1:
            raise ConfigError(f"n_mels must be >= 1, got {self.n_mels}")
        if not self.layers:
            raise ConfigError("layers: at least one conv layer is needed")
        for i, layer in enumerate(self.layers):
            if layer.kernel % 2 == 0:
                raise ConfigError(f"layers[{i}].kernel must be odd ('same' padding), got {layer.kernel}")

    @property
    def stride(self) -> int:
        """Samples per output frame: the 160-sample hop times the conv strides."""
        from s3prl_distill.models.log_mel import HOP_LENGTH

        out = HOP_LENGTH
        for layer in self.layers:
            out *= layer.stride
        return out

    @property
    def receptive_field(self) -> int:
        """The shortest input in samples (the log-mel's minimum; "same" padding needs no more)."""
        from s3prl_distill.models.log_mel import MIN_SAMPLES

        return MIN_SAMPLES


@dataclass
class EncoderConfig:
    """Transformer encoder: ``num_layers`` layers of width ``dim``, FFN width ``ffn_dim``.

    ``layer_norm_first``: False = post-LN (HuBERT / wav2vec 2.0 Base), True = pre-LN (Large, WavLM).
    ``pos_conv_kernel`` / ``pos_conv_groups``: the convolutional positional embedding
    (128 / 16 in HuBERT; kernel 0 disables it).
    ``sinusoidal_positions``: add Whisper's sinusoidal positions to the transformer input instead
    (needs ``pos_conv_kernel: 0``; computed for any length, so no 30 s limit).
    ``feature_projection``: False feeds the front end's output to the transformer as it is (Whisper:
    its second conv already has width D; needs front-end channels == ``dim``).
    """

    dim: int = 768
    ffn_dim: int = 3072
    num_heads: int = 12
    num_layers: int = 2
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feature_dropout: float = 0.0
    # LayerNorm on the CNN features before the projection: HuBERT / wav2vec 2.0 (fairseq,
    # torchaudio) have it; S3PRL's DistillerModel (the published DistilHuBERT) does not.
    feature_layer_norm: bool = True
    sinusoidal_positions: bool = False
    feature_projection: bool = True

    def validate(self) -> None:
        if self.sinusoidal_positions and self.pos_conv_kernel:
            raise ConfigError(
                f"sinusoidal_positions: true needs pos_conv_kernel: 0 (got {self.pos_conv_kernel}): "
                "choose one positional embedding"
            )
        if self.sinusoidal_positions and self.dim % 2:
            raise ConfigError(f"sinusoidal_positions need an even dim, got {self.dim}")
        for key in ("dim", "ffn_dim", "num_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_layers < 0:
            raise ConfigError(f"num_layers must be >= 0, got {self.num_layers}")
        if self.dim % self.num_heads:
            raise ConfigError(
                f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.pos_conv_kernel < 0:
            raise ConfigError(f"pos_conv_kernel must be >= 0, got {self.pos_conv_kernel}")
        if self.pos_conv_kernel and (self.pos_conv_groups < 1 or self.dim % self.pos_conv_groups):
            raise ConfigError(
                f"pos_conv_groups ({self.pos_conv_groups}) must divide dim ({self.dim})"
            )
        for key in ("dropout", "attention_dropout", "activation_dropout", "feature_dropout"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value}")


@dataclass
class HeadConfig:
    """A prediction head: student layer ``student_layer`` -> teacher layer ``teacher_layer``.

    ``type``:
      * ``mlp``: Linear(D, inner) -> GELU -> Linear(inner, D_teacher) (DistilHuBERT's heads),
      * ``linear``: Linear(D, D_teacher),
      * ``deconv_linear``: ConvTranspose1d(D, D, k, stride k) undoing the time reduction, then
        Linear(D, D_teacher) (FitHuBERT's layer-wise heads),
      * ``identity``: the student layer itself predicts the teacher layer (DistilHuBERT's
        "predict w/ hidden" baseline; needs D == D_teacher and no time reduction).
    ``inner_dim``: hidden width of ``mlp`` (default: the encoder width).
    """

    student_layer: int
    teacher_layer: int
    type: Literal["mlp", "linear", "deconv_linear", "identity"] = "mlp"
    inner_dim: Optional[int] = None

    def validate(self) -> None:
        if self.inner_dim is not None and self.inner_dim < 1:
            raise ConfigError(f"inner_dim must be >= 1, got {self.inner_dim}")


@dataclass
class StudentConfig:
    """The whole student (``student:`` section of a model YAML).

    ``family``: which published design this follows (``distilhubert``, ``fithubert``, ``custom``);
    the S3PRL entries ``distilhubert_local`` / ``fithubert_local`` accept only their family.
    ``front_end``: ``cnn`` = the waveform CNN of ``cnn`` (HuBERT, wav2vec 2.0, FitHuBERT), or
    ``log_mel`` = the log-mel convs of ``log_mel`` (Whisper's front end, for Whisper teachers).
    ``time_reduction``: stride k of the time-reduction conv before the transformer (1 = none).
    ``time_reduction_tail``: the last ``T mod k`` CNN frames: ``pad`` (zero-pad them into one more
    reduced frame, ``ceil(T/k)``; ours) or ``drop`` (ignore them, ``floor(T/k)``; the official
    FitHuBERT code). See :mod:`s3prl_distill.models.time_reduction`.
    ``time_reduction_sees_padding``: ``false`` (ours) = padded frames are zeroed again before the
    time reduction; ``true`` = it reads them as the official FitHuBERT encoder leaves them (after
    the positional conv and layer norm). Valid frames are the same either way; only a loss that
    averages over padded frames (``loss.include_padded_frames``) sees the difference.
    ``teacher_dim`` / ``teacher_layers``: width and depth of the teacher the heads predict.
    ``keep_heads``: keep the heads after distillation (``drop_heads`` is then a no-op).
    ``hidden_states``: what the S3PRL upstream exposes:
      * ``layers``: layer 0..N (one D, rate = CNN stride x k),
      * ``layers+heads``: layers then head outputs (needs D == D_teacher, k == 1, kept heads),
      * ``heads``: head outputs only, at the teacher's rate and width (needs kept heads),
      * ``last_head``: the last head's output only, at the teacher's rate and width; the other
        heads are dropped after distillation (FitHuBERT as its paper fine-tunes it; needs
        ``keep_heads: true``).
    ``feature_grad_mult``: gradient scale into the CNN (S3PRL's DistilHuBERT config: 0.1; the
    official FitHuBERT config: 1.0, its paper does not say).
    ``weight_init``: random initialisation before any teacher copy: ``pytorch`` = PyTorch's module
    defaults; ``fairseq`` = what S3PRL's ``DistillerModel`` and the official FitHuBERT model do
    (:mod:`s3prl_distill.models.weight_init`: kaiming-normal waveform convs, the wav2vec 2.0
    positional-conv init, N(0, 0.02) weights and zero biases in the transformer layers).
    ``layer0``: what student layer 0 is: ``transformer_input`` (after positional conv, layer norm
    and time reduction; like the teachers' hidden state 0) or ``projection`` (the CNN projection
    before them, as S3PRL's published DistilHuBERT exposes it and its "predict w/ hidden" baseline
    uses it; needs ``time_reduction: 1``).
    """

    family: Literal["distilhubert", "fithubert", "custom"] = "custom"
    front_end: Literal["cnn", "log_mel"] = "cnn"
    cnn: CNNConfig = field(default_factory=CNNConfig)
    log_mel: LogMelFrontEndConfig = field(default_factory=LogMelFrontEndConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    time_reduction: int = 1
    time_reduction_tail: Literal["pad", "drop"] = "pad"
    time_reduction_sees_padding: bool = False
    heads: List[HeadConfig] = field(default_factory=list)
    teacher_dim: int = 768
    teacher_layers: int = 12
    keep_heads: bool = False
    hidden_states: Literal["layers", "layers+heads", "heads", "last_head"] = "layers"
    feature_grad_mult: float = 1.0
    layer0: Literal["transformer_input", "projection"] = "transformer_input"
    weight_init: Literal["pytorch", "fairseq"] = "pytorch"

    def validate(self) -> None:
        if not self.encoder.feature_projection and self.front_end_channels != self.encoder.dim:
            raise ConfigError(
                f"encoder.feature_projection: false needs the front end's last layer to have "
                f"encoder.dim ({self.encoder.dim}) channels, got {self.front_end_channels}"
            )
        if self.time_reduction < 1:
            raise ConfigError(f"time_reduction: stride must be >= 1, got {self.time_reduction}")
        if self.teacher_dim < 1:
            raise ConfigError(f"teacher_dim must be >= 1, got {self.teacher_dim}")
        if self.teacher_layers < 0:
            raise ConfigError(f"teacher_layers must be >= 0, got {self.teacher_layers}")
        if self.feature_grad_mult < 0:
            raise ConfigError(f"feature_grad_mult must be >= 0, got {self.feature_grad_mult}")
        n_layers = self.encoder.num_layers
        for j, head in enumerate(self.heads):
            if not 0 <= head.student_layer <= n_layers:
                raise ConfigError(
                    f"heads[{j}].student_layer: {head.student_layer} is out of range "
                    f"0..{n_layers} (encoder.num_layers = {n_layers})"
                )
            if not 0 <= head.teacher_layer <= self.teacher_layers:
                raise ConfigError(
                    f"heads[{j}].teacher_layer: {head.teacher_layer} is out of range "
                    f"0..{self.teacher_layers} (teacher_layers = {self.teacher_layers})"
                )
            if head.type == "identity":
                if self.encoder.dim != self.teacher_dim:
                    raise ConfigError(
                        f"heads[{j}].type: identity needs encoder.dim ({self.encoder.dim}) == "
                        f"teacher_dim ({self.teacher_dim})"
                    )
                if self.time_reduction != 1:
                    raise ConfigError(
                        f"heads[{j}].type: identity cannot undo time_reduction "
                        f"{self.time_reduction}; use deconv_linear"
                    )
            if head.type in ("mlp", "linear") and self.time_reduction != 1:
                raise ConfigError(
                    f"heads[{j}].type: {head.type} cannot undo time_reduction "
                    f"{self.time_reduction}; use deconv_linear"
                )
        if self.layer0 == "projection" and self.time_reduction != 1:
            raise ConfigError(
                f"layer0: 'projection' runs at the CNN rate and cannot join layers reduced by "
                f"time_reduction {self.time_reduction}"
            )
        if self.hidden_states != "layers":
            if not self.heads:
                raise ConfigError(f"hidden_states: '{self.hidden_states}' needs heads")
            if not self.keep_heads:
                raise ConfigError(
                    f"hidden_states: '{self.hidden_states}' needs keep_heads: true "
                    f"(heads are dropped after distillation otherwise)"
                )
        if self.hidden_states == "layers+heads":
            if self.encoder.dim != self.teacher_dim or self.time_reduction != 1:
                raise ConfigError(
                    "hidden_states: 'layers+heads' needs encoder.dim == teacher_dim and "
                    f"time_reduction == 1 (got {self.encoder.dim}, {self.teacher_dim}, "
                    f"{self.time_reduction}): every hidden state must have one D and one rate"
                )

    @property
    def front_end_stride(self) -> int:
        """Samples per frame of the front end's output (and of the heads' predictions)."""
        return self.log_mel.stride if self.front_end == "log_mel" else self.cnn.stride

    @property
    def front_end_receptive_field(self) -> int:
        """The shortest input in samples."""
        return self.log_mel.receptive_field if self.front_end == "log_mel" else self.cnn.receptive_field

    @property
    def front_end_channels(self) -> int:
        """Channels of the front end's output."""
        spec = self.log_mel if self.front_end == "log_mel" else self.cnn
        return spec.layers[-1].channels

    @property
    def downsample_rate(self) -> int:
        """Samples per frame of the transformer layers."""
        return self.front_end_stride * self.time_reduction


@dataclass
class InitConfig:
    """``init:`` section: initialise the student from its teacher before distillation.

    ``from_teacher``: copy the teacher's CNN (+ projection, positional conv) and its first
    ``num_layers`` transformer layers (DistilHuBERT: 2). ``num_layers: 0`` copies the front end only.

    ``copy_encoder_layer_norm`` (post-LN students): also copy the teacher's encoder LayerNorm
    (``encoder.transformer.layer_norm``, between the positional conv and layer 1). ``false``
    (default) is S3PRL's DistilHuBERT initialisation (``pretrain/distiller/pretrain_expert.py``
    copies the feature extractor, ``post_extract_proj``, ``encoder.pos_conv`` and the first layers,
    not ``encoder.layer_norm``): the copied layers then start on inputs normalised without the
    teacher's gain and bias. ``true`` gives the copied layers the inputs they were trained on (a
    student copying every layer then reproduces the teacher exactly; see docs/MODELS.md).
    """

    from_teacher: bool = False
    num_layers: int = 0
    copy_encoder_layer_norm: bool = False

    def validate(self) -> None:
        if self.num_layers < 0:
            raise ConfigError(f"num_layers must be >= 0, got {self.num_layers}")
