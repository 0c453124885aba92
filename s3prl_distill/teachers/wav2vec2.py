"""HuBERT / wav2vec 2.0 / WavLM teachers on torchaudio's ``Wav2Vec2Model``.

Every HuBERT-family source (fairseq checkpoint, torchaudio state dict, Hugging Face folder) ends
here: its weights are renamed to torchaudio's ``Wav2Vec2Model`` state-dict names, an architecture
:class:`Wav2Vec2Arch` is read from the file (or inferred from tensor shapes), and
:class:`Wav2Vec2Teacher` runs the model layer by layer.

Two deliberate differences from running torchaudio's model on a padded batch:

* **Padding-invariant group norm.** HuBERT Base / wav2vec 2.0 Base normalise the first CNN layer
  with a per-channel GroupNorm over *time*; on a zero-padded batch the statistics include the
  padding, so an utterance's features depend on what it was batched with. Here the statistics are
  taken over each utterance's valid frames only, so every utterance gets exactly the features it
  gets alone (which is how these models were trained: fairseq crops batches to equal length).
  ``teacher.padding: s3prl`` reproduces S3PRL's HuBERT / wav2vec 2.0 experts instead (the
  statistics over the padded batch, and fairseq's rule for valid frames:
  :func:`s3prl_frame_lengths`), for exact reproduction of S3PRL's distiller.
* **Final LayerNorm** of pre-LN models (``layer_norm_first``) is applied to the last hidden state
  (see :mod:`s3prl_distill.teachers.base`).

Example:
    >>> arch = Wav2Vec2Arch(num_layers=2, embed_dim=64, num_heads=4, ffn_dim=128,
    ...                     conv_layers=[(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)],
    ...                     pos_conv_kernel=16, pos_conv_groups=4)
    >>> teacher = Wav2Vec2Teacher(build_wav2vec2_model(arch), arch, source="torchaudio", path=None)
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from s3prl_distill.config import ConfigError, from_dict, to_dict
from s3prl_distill.models.fast import (DerivedCache, attention_packed, conv_stack_channels_last,
                                       feed_forward_inplace, inference_fast_path_ok,
                                       positional_conv_fft, stacked_qkv)
from s3prl_distill.state_dict import describe_mismatch
from s3prl_distill.lengths import ceil_div, conv_output_lengths, masked_group_norm, valid_mask
from s3prl_distill.teachers.base import Teacher, TeacherError, TeacherOutput

logger = logging.getLogger(__name__)

__all__ = [
    "Wav2Vec2Arch",
    "Wav2Vec2Teacher",
    "build_wav2vec2_model",
    "infer_arch",
    "normalize_state_dict_names",
    "load_torchaudio_teacher",
    "STANDARD_CONV_LAYERS",
]

#: The CNN of every published HuBERT / wav2vec 2.0 / WavLM model: (channels, kernel, stride).
STANDARD_CONV_LAYERS: List[Tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


@dataclass
class Wav2Vec2Arch:
    """Architecture of a torchaudio ``Wav2Vec2Model`` teacher.

    Attributes:
        extractor_mode: ``group_norm`` (GroupNorm on the first conv only; Base models) or
            ``layer_norm`` (LayerNorm on every conv; Large models).  fairseq ``extractor_mode``
            ``default`` is ``group_norm``.
        conv_layers: CNN ``[(channels, kernel, stride), ...]``.
        conv_bias: conv layers have a bias.
        embed_dim: transformer width ``D``.
        pos_conv_kernel / pos_conv_groups: convolutional positional embedding.
        num_layers / num_heads / ffn_dim: transformer layers, attention heads, FFN width.
        layer_norm_first: fairseq's meaning: pre-LN blocks and a final encoder LayerNorm
            (Large models); ``False`` = post-LN blocks with the encoder LayerNorm before layer 1.
        num_buckets / max_distance: WavLM relative position buckets (arch ``wavlm`` only).
        dropout / attention_dropout / activation_dropout / dropout_input: the checkpoint's
            dropout rates (fairseq names; where the file does not say, fairseq's HuBERT /
            wav2vec 2.0 defaults 0.1 / 0.1 / 0 / 0, as the other defaults here are HuBERT Base).
            They act only when the teacher runs in train mode (``teacher.eval_mode: false``,
            S3PRL's distiller behaviour); the encoder layer drop is always 0 (S3PRL sets it to 0
            too).
    """

    extractor_mode: Literal["group_norm", "layer_norm"] = "group_norm"
    conv_layers: List[Tuple[int, int, int]] = field(default_factory=lambda: list(STANDARD_CONV_LAYERS))
    conv_bias: bool = False
    embed_dim: int = 768
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    layer_norm_first: bool = False
    num_buckets: int = 320
    max_distance: int = 800
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.0

    def validate(self) -> None:
        if not self.conv_layers:
            raise ConfigError("conv_layers: at least one conv layer is needed")
        for i, (channels, kernel, stride) in enumerate(self.conv_layers):
            if min(channels, kernel, stride) <= 0:
                raise ConfigError(f"conv_layers[{i}]: channels, kernel and stride must be positive")
        for name in ("embed_dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel", "pos_conv_groups"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"num_heads: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.embed_dim % self.pos_conv_groups:
            raise ConfigError(
                f"pos_conv_groups: embed_dim {self.embed_dim} is not divisible by {self.pos_conv_groups}"
            )
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must lie in [0, 1), got {getattr(self, name)}")

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame: the product of the conv strides (320 for the standard CNN)."""
        return int(math.prod(stride for _, _, stride in self.conv_layers))

    @property
    def receptive_field(self) -> int:
        """Samples one output frame sees: the shortest input that gives a frame (400 for the
        standard CNN)."""
        field_, jump = 1, 1
        for _, kernel, stride in self.conv_layers:
            field_ += (kernel - 1) * jump
            jump *= stride
        return field_


def build_wav2vec2_model(arch: Wav2Vec2Arch, kind: str = "hubert") -> torch.nn.Module:
    """An untrained torchaudio ``Wav2Vec2Model`` of architecture ``arch`` (its dropout rates,
    layer drop 0).

    Args:
        arch: the architecture.
        kind: ``hubert`` / ``wav2vec2`` (same network) or ``wavlm`` (gated relative positions).
    """
    from torchaudio.models import wav2vec2_model, wavlm_model

    common = dict(
        extractor_mode=arch.extractor_mode,
        extractor_conv_layer_config=[tuple(c) for c in arch.conv_layers],
        extractor_conv_bias=arch.conv_bias,
        encoder_embed_dim=arch.embed_dim,
        encoder_projection_dropout=arch.dropout_input,
        encoder_pos_conv_kernel=arch.pos_conv_kernel,
        encoder_pos_conv_groups=arch.pos_conv_groups,
        encoder_num_layers=arch.num_layers,
        encoder_num_heads=arch.num_heads,
        encoder_attention_dropout=arch.attention_dropout,
        encoder_ff_interm_features=arch.ffn_dim,
        encoder_ff_interm_dropout=arch.activation_dropout,
        encoder_dropout=arch.dropout,
        encoder_layer_norm_first=arch.layer_norm_first,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    if kind == "wavlm":
        return wavlm_model(
            encoder_num_buckets=arch.num_buckets, encoder_max_distance=arch.max_distance, **common
        )
    if kind not in ("hubert", "wav2vec2"):
        raise TeacherError(f"arch: expected hubert, wav2vec2 or wavlm, got {kind!r}")
    return wav2vec2_model(**common)


# ---------------------------------------------------------------------------------------------
# state dicts: names and shapes
# ---------------------------------------------------------------------------------------------
_POS_CONV = "encoder.transformer.pos_conv_embed.conv."
_OLD_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def normalize_state_dict_names(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Torchaudio state dict with the positional conv in current ``parametrizations`` names.

    torchaudio < 2.1 (``nn.utils.weight_norm``) saved ``pos_conv_embed.conv.weight_g/weight_v``;
    current torchaudio saves ``...conv.parametrizations.weight.original0/original1``. A plain
    ``...conv.weight`` (weight norm removed) is turned into ``g = ||v||`` over dims (0, 1), ``v``.
    """
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_POS_CONV):
            rest = key[len(_POS_CONV):]
            if rest in _OLD_WEIGHT_NORM:
                key = _POS_CONV + _OLD_WEIGHT_NORM[rest]
            elif rest == "weight":
                out[_POS_CONV + "parametrizations.weight.original0"] = torch.linalg.vector_norm(
                    value, dim=(0, 1), keepdim=True
                )
                key = _POS_CONV + "parametrizations.weight.original1"
        out[key] = value
    return out


def _layer_indices(state: Mapping[str, Tensor], prefix: str) -> List[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state for m in [pattern.match(k)] if m})


def _need(state: Mapping[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise TeacherError(
            f"{where}: not a torchaudio Wav2Vec2Model state dict: missing key '{key}' "
            f"(found e.g. {sorted(state)[:5]})"
        )
    return state[key]


def infer_arch(
    state: Mapping[str, Tensor], overrides: Optional[Mapping[str, Any]] = None, where: str = "teacher"
) -> Tuple[Wav2Vec2Arch, str]:
    """Read the architecture off a torchaudio-named state dict.

    Everything but the conv strides, the number of heads and ``layer_norm_first`` is in the tensor
    shapes. Those three come from ``overrides`` (``teacher.arch_config``) when given; otherwise
    the standard strides are assumed when the kernels are the standard ones, ``num_heads =
    embed_dim // 64`` (true of every published Base/Large model) and ``layer_norm_first`` follows
    the extractor mode (layer_norm CNN <=> pre-LN in every published model), with a warning.

    Returns:
        ``(arch, kind)`` with kind ``wavlm`` when the layers carry relative position buckets,
        else ``hubert`` (wav2vec 2.0 and HuBERT share the network).
    Raises:
        TeacherError / ConfigError: naming ``where`` and the missing key or bad value.
    """
    overrides = dict(overrides or {})
    allowed = {f for f in Wav2Vec2Arch.__dataclass_fields__}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"{where}: arch_config: unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")
    conv_ids = _layer_indices(state, "feature_extractor.conv_layers.")
    if not conv_ids:
        _need(state, "feature_extractor.conv_layers.0.conv.weight", where)
    shapes = [tuple(_need(state, f"feature_extractor.conv_layers.{i}.conv.weight", where).shape) for i in conv_ids]
    kernels = [s[2] for s in shapes]
    found: Dict[str, Any] = {}
    if "conv_layers" not in overrides:
        if kernels != [k for _, k, _ in STANDARD_CONV_LAYERS]:
            raise TeacherError(
                f"{where}: the CNN kernels {kernels} are not the standard HuBERT ones, so the strides "
                "cannot be inferred: give teacher.arch_config.conv_layers as [[channels, kernel, stride], ...]"
            )
        found["conv_layers"] = [(s[0], s[2], st) for s, (_, _, st) in zip(shapes, STANDARD_CONV_LAYERS)]
    found["conv_bias"] = "feature_extractor.conv_layers.0.conv.bias" in state
    has_ln = [f"feature_extractor.conv_layers.{i}.layer_norm.weight" in state for i in conv_ids]
    found["extractor_mode"] = "layer_norm" if len(has_ln) > 1 and all(has_ln) else "group_norm"
    proj = _need(state, "encoder.feature_projection.projection.weight", where)
    found["embed_dim"] = int(proj.shape[0])
    pos_v = _need(state, _POS_CONV + "parametrizations.weight.original1", where)
    found["pos_conv_kernel"] = int(pos_v.shape[2])
    found["pos_conv_groups"] = int(pos_v.shape[0] // pos_v.shape[1])
    layer_ids = _layer_indices(state, "encoder.transformer.layers.")
    if layer_ids != list(range(len(layer_ids))) or not layer_ids:
        raise TeacherError(f"{where}: transformer layers must be numbered 0..L-1, found {layer_ids}")
    found["num_layers"] = len(layer_ids)
    found["ffn_dim"] = int(
        _need(state, "encoder.transformer.layers.0.feed_forward.intermediate_dense.weight", where).shape[0]
    )
    rel = "encoder.transformer.layers.0.attention.rel_attn_embed.weight"
    kind = "wavlm" if rel in state else "hubert"
    if kind == "wavlm":
        found["num_buckets"] = int(state[rel].shape[0])
    guessed = []
    if "num_heads" not in overrides:
        found["num_heads"] = max(1, found["embed_dim"] // 64)
        guessed.append(f"num_heads={found['num_heads']}")
    if "layer_norm_first" not in overrides:
        found["layer_norm_first"] = found["extractor_mode"] == "layer_norm"
        guessed.append(f"layer_norm_first={found['layer_norm_first']}")
    if guessed:
        logger.warning(
            "%s: the file does not say %s; assumed as in every published model (set "
            "teacher.arch_config to override)", where, ", ".join(guessed)
        )
    found.update(overrides)
    return from_dict(Wav2Vec2Arch, to_dict(found), where=f"{where}: arch"), kind


# ---------------------------------------------------------------------------------------------
# the teacher
# ---------------------------------------------------------------------------------------------
def s3prl_frame_lengths(wav_lengths: Tensor, samples: int, frames: int) -> Tensor:
    """Valid frames by fairseq's HuBERT / WavLM rule (S3PRL's experts, ``forward_padding_mask``;
    S3PRL's wav2vec 2.0 uses the conv arithmetic): with ``r = S // T`` samples per frame (the last ``S % T`` samples
    dropped), a frame is padding only if all its ``r`` samples are, so ``min(T, ceil(L / r))``
    frames are valid - one or two more than the conv arithmetic gives.

    Args:
        wav_lengths (Tensor): ``[B]`` valid samples; samples: ``S`` of the padded batch; frames: ``T``.
    """
    r = samples // frames
    return torch.clamp(ceil_div(wav_lengths, r), max=frames)


def _normalize_waveforms(wavs: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance over each waveform's valid samples (fairseq ``normalize``),
    padding kept at 0. ``wavs [B, S]`` -> ``[B, S]``."""
    mask = valid_mask(lengths, wavs.shape[1]).to(wavs.dtype)
    count = mask.sum(1, keepdim=True)
    mean = (wavs * mask).sum(1, keepdim=True) / count
    var = (((wavs - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (wavs - mean) / torch.sqrt(var + 1e-5) * mask


class Wav2Vec2Teacher(Teacher):
    """A frozen torchaudio ``Wav2Vec2Model`` (HuBERT, wav2vec 2.0 or WavLM) with its layer outputs.

    Two paths compute the same function (equal to 1e-4 on padded batches,
    ``tests/test_teachers_fast_paths.py``):

    * plain: torchaudio's modules (batched CNN with the group norm masked to valid frames,
      additive attention mask); used with autograd, on accelerators, in train mode
      (``eval_mode: false``) and with ``fast_path`` off;
    * fast (CPU inference, eval mode): the students' kernels from
      :mod:`s3prl_distill.models.fast` on the same weights - each utterance's CNN alone on its
      valid samples, channels last, the first conv as a GEMM with its group norm folded in, GELU
      in place; then the rest per utterance too, on its valid frames only: projection,
      positional conv by FFT (spectrum cached), the layers without a mask (one GEMM for q/k/v
      from cached stacked weights, the feed-forward's GELU in place). No work on padding, and an
      utterance's targets are bit-identical whatever it is batched with. WavLM's gated
      relative-position attention keeps torchaudio's batched layers (its CNN and positional
      conv take the fast path).

    Args:
        model: torchaudio ``Wav2Vec2Model`` matching ``arch`` (its ``aux`` head, if any, unused).
        arch: its architecture.
        kind: ``hubert`` | ``wav2vec2`` | ``wavlm``.
        source / path: for :meth:`describe`.
        normalize_waveform: normalise each waveform before the CNN (fairseq ``task.normalize``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        arch: Wav2Vec2Arch,
        kind: str = "hubert",
        *,
        source: str,
        path: Optional[str],
        normalize_waveform: bool = False,
    ) -> None:
        super().__init__(
            source=source,
            path=path,
            arch=kind,
            num_layers=arch.num_layers,
            dim=arch.embed_dim,
            downsample_rate=arch.downsample_rate,
            max_input_samples=None,  # relative positions (conv / WavLM buckets): no length limit
            min_input_samples=arch.receptive_field,
        )
        self.model = model
        self.arch_config = arch
        self.normalize_waveform = bool(normalize_waveform)
        self.padding = "masked"  # teacher.padding (TeacherConfig); "s3prl": fairseq's padded-batch rules
        # derived weights of the fast path (plain attributes: not parameters, not in state_dict)
        self._pos_cache = DerivedCache()
        self._qkv_caches = [DerivedCache() for _ in range(arch.num_layers)]
        self._conv_caches = [DerivedCache() for _ in arch.conv_layers]
        self.freeze()

    # -- plain path ----------------------------------------------------------------------------
    def _features(self, wavs: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """CNN. ``wavs [B, S]`` -> ``([B, T, C], lengths [B])``."""
        x = wavs.unsqueeze(1)
        for block in self.model.feature_extractor.conv_layers:
            x = block.conv(x)
            lengths = conv_output_lengths(lengths, block.kernel_size, block.stride)
            norm = block.layer_norm
            if isinstance(norm, torch.nn.GroupNorm) and self.padding == "s3prl":
                x = norm(x)  # statistics over the padded batch, as fairseq / S3PRL
            elif isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == norm.num_channels:
                # per-channel statistics over each utterance's valid frames only
                x = masked_group_norm(x, lengths, norm.weight, norm.bias, norm.eps)
            elif isinstance(norm, torch.nn.GroupNorm):
                x = norm(x)
            elif block.layer_norm is not None:
                x = block.layer_norm(x)
            x = F.gelu(x)
        return x.transpose(1, 2), lengths

    # -- fast path -----------------------------------------------------------------------------
    def _fast_ok(self, wavs: Tensor, wav_lengths: Tensor) -> bool:
        """The fast path runs on CPU without autograd, in eval mode, with ``fast_path`` on and
        every utterance long enough for one frame."""
        return (self.fast_path and self.padding == "masked" and not self.model.training
                and inference_fast_path_ok(wavs)
                and bool((wav_lengths >= self.arch_config.receptive_field).all()))

    def _features_fast(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """CNN per utterance, channels last. ``wavs [B, S]`` -> ``([B, T, C], lengths [B])``."""
        blocks = self.model.feature_extractor.conv_layers
        lengths = wav_lengths
        for block in blocks:
            lengths = torch.clamp(
                torch.div(lengths - block.kernel_size, block.stride, rounding_mode="floor") + 1, min=0
            )
        channels = self.arch_config.conv_layers[-1][0]
        return conv_stack_channels_last(blocks, wavs, wav_lengths, lengths, channels, self._conv_caches), lengths

    def _layer_fast(self, index: int, layer: torch.nn.Module, x: Tensor, splits: List[int]) -> Tensor:
        """One torchaudio ``EncoderLayer`` (not WavLM) in eval mode on valid frames only:
        ``x [N, D]`` (``splits``: frames per utterance) -> ``[N, D]``."""
        attn, ff = layer.attention, layer.feed_forward
        weight, bias = stacked_qkv(attn.q_proj, attn.k_proj, attn.v_proj, self._qkv_caches[index])
        if layer.layer_norm_first:
            x = x + attention_packed(layer.layer_norm(x), weight, bias, attn.out_proj, attn.num_heads, splits)
            return x + feed_forward_inplace(layer.final_layer_norm(x), ff.intermediate_dense, ff.output_dense)
        x = layer.layer_norm(attention_packed(x, weight, bias, attn.out_proj, attn.num_heads, splits).add_(x))
        return layer.final_layer_norm(feed_forward_inplace(x, ff.intermediate_dense, ff.output_dense).add_(x))

    def _encode_per_utterance(self, feats: Tensor, lengths: Tensor, layers: List[int]) -> TeacherOutput:
        """Fast path after the CNN, each utterance alone on its valid frames: projection,
        positional conv by FFT, the layers (no mask, no padding work). An utterance's states are
        then bit-identical whatever it is batched with (a data-parallel split, a cache build, a
        batch of one). ``feats [B, T, C]`` -> the ``layers`` states ``[B, T, D]`` (padding 0)."""
        transformer = self.model.encoder.transformer
        wanted, last, top = set(layers), max(layers), self.num_layers
        batch, frames = feats.shape[:2]
        out = {k: feats.new_zeros(batch, frames, self.dim) for k in wanted}
        for b, n in enumerate(lengths.tolist()):
            x = self.model.encoder.feature_projection(feats[b:b + 1, :n])  # [1, n, D]
            x = x + positional_conv_fft(transformer.pos_conv_embed.conv, x, self._pos_cache)
            if transformer.layer_norm_first:  # torchaudio's flag is inverted: a post-LN model
                x = transformer.layer_norm(x)
            x = x[0]  # [n, D]
            if 0 in wanted:
                out[0][b, :n] = x
            for i, layer in enumerate(transformer.layers[:last]):
                x = self._layer_fast(i, layer, x, [n])
                if i + 1 in wanted:
                    if i + 1 == top and not transformer.layer_norm_first:  # torchaudio's flag: pre-LN
                        x = transformer.layer_norm(x)
                    out[i + 1][b, :n] = x
        return TeacherOutput(hidden_states=self.select(out, layers), lengths=lengths)

    # -- forward -------------------------------------------------------------------------------
    def _forward(self, wavs: Tensor, wav_lengths: Tensor, layers: List[int]) -> TeacherOutput:
        if self.normalize_waveform:  # in float32, before the cast to the teacher's precision
            wavs = _normalize_waveforms(wavs, wav_lengths)
        wavs = wavs.to(self.dtype)
        fast = self._fast_ok(wavs, wav_lengths)
        feats, lengths = self._features_fast(wavs, wav_lengths) if fast else self._features(wavs, wav_lengths)
        encoder = self.model.encoder
        transformer = encoder.transformer
        if fast and self.arch != "wavlm":
            return self._encode_per_utterance(feats, lengths, layers)
        x = encoder.feature_projection(feats)  # [B, T, D]
        batch, frames = x.shape[:2]
        if self.padding == "s3prl" and self.arch != "wav2vec2":  # S3PRL's wav2vec 2.0: conv arithmetic
            lengths = s3prl_frame_lengths(wav_lengths, wavs.shape[1], frames)
        valid = valid_mask(lengths, frames)
        x = x.masked_fill(~valid[..., None], 0.0)
        if fast:  # WavLM: the positional conv by FFT, then torchaudio's gated layers
            x = x + positional_conv_fft(transformer.pos_conv_embed.conv, x, self._pos_cache)
            if transformer.layer_norm_first:  # torchaudio's flag is inverted: a post-LN model
                x = transformer.layer_norm(x)
        else:
            x = transformer._preprocess(x)
        wanted, last = set(layers), max(layers)
        states: Dict[int, Tensor] = {0: x} if 0 in wanted else {}
        top = self.num_layers
        attention_mask: Optional[Tensor] = None
        key_padding_mask: Optional[Tensor] = None
        if self.arch == "wavlm":  # additive float mask: same dtype as WavLM's position bias
            key_padding_mask = -10000.0 * (~valid).to(x.dtype)
        else:
            attention_mask = (-10000.0 * (~valid)[:, None, None, :].to(x.dtype)).expand(batch, 1, frames, frames)
        position_bias = None
        for index, layer in enumerate(transformer.layers[:last]):
            x, position_bias = layer(
                x, attention_mask, position_bias=position_bias, key_padding_mask=key_padding_mask
            )
            if index + 1 in wanted:
                states[index + 1] = x
        if top in states and not transformer.layer_norm_first:  # torchaudio's flag is inverted: a pre-LN model
            states[top] = transformer.layer_norm(states[top])
        return TeacherOutput(hidden_states=self.select(states, layers), lengths=lengths)

    def student_init_state(self, num_layers: int) -> Dict[str, Tensor]:
        """CNN, feature projection, positional conv, encoder LayerNorm and layers ``0..n-1`` in
        torchaudio ``Wav2Vec2Model`` names (cloned tensors)."""
        self._check_init_layers(num_layers)
        keep_prefixes = (
            "feature_extractor.",
            "encoder.feature_projection.",
            "encoder.transformer.pos_conv_embed.",
            "encoder.transformer.layer_norm.",
        ) + tuple(f"encoder.transformer.layers.{i}." for i in range(num_layers))
        return {
            key: value.detach().clone()
            for key, value in self.model.state_dict().items()
            if key.startswith(keep_prefixes)
        }

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info["arch_config"] = to_dict(self.arch_config)
        info["normalize_waveform"] = self.normalize_waveform
        info["padding"] = self.padding
        if getattr(self, "hub_name", None):
            info["name"] = self.hub_name  # source s3prl: the hub entry
        return info


def teacher_from_state_dict(
    state: Mapping[str, Tensor],
    arch: Wav2Vec2Arch,
    kind: str,
    *,
    source: str,
    path: Optional[str],
    normalize_waveform: bool,
    where: str,
) -> Wav2Vec2Teacher:
    """Build the torchaudio model of ``arch`` and load ``state`` (torchaudio names) strictly.

    Raises:
        TeacherError: naming ``where`` and the missing / unexpected / mis-shaped keys.
    """
    model = build_wav2vec2_model(arch, kind)
    state = normalize_state_dict_names(state)
    state = {k: v for k, v in state.items() if not k.startswith("aux.")}
    problem = describe_mismatch(model.state_dict(), state, given_name="file")
    if problem:
        raise TeacherError(
            f"{where}: weights do not match the architecture {to_dict(arch)} ({kind}): {problem}"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return Wav2Vec2Teacher(
        model, arch, kind, source=source, path=path, normalize_waveform=normalize_waveform
    )


def load_torchaudio_teacher(cfg) -> Wav2Vec2Teacher:
    """``source: torchaudio``: a ``Wav2Vec2Model`` state dict, or ``{"state_dict": ..., "arch":
    {...Wav2Vec2Arch fields...}, "kind": "hubert"}``. ``cfg.arch_config`` overrides the file."""
    from s3prl_distill.io import safe_load

    path = os.fspath(cfg.path)
    where = f"teacher.path {path}"
    if not os.path.isfile(path):
        raise TeacherError(f"{where}: no such file (expected a torchaudio Wav2Vec2Model state dict)")
    try:
        data = safe_load(path)
    except ValueError as err:
        raise TeacherError(f"{where}: {err}") from err
    if not isinstance(data, Mapping):
        raise TeacherError(f"{where}: expected a state dict (a mapping), got {type(data).__name__}")
    file_arch: Dict[str, Any] = {}
    file_kind = None
    if "state_dict" in data:
        state = data["state_dict"]
        file_arch = dict(data.get("arch") or {})
        file_kind = data.get("kind")
    else:
        state = data
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TeacherError(f"{where}: expected a mapping of parameter names to tensors")
    state = normalize_state_dict_names(state)
    overrides = {**file_arch, **cfg.arch_config}
    arch, inferred_kind = infer_arch(state, overrides, where=where)
    kind = cfg.arch or file_kind or inferred_kind
    if inferred_kind == "wavlm" and kind != "wavlm":
        raise TeacherError(f"{where}: the weights are WavLM's (relative position buckets) but arch is {kind!r}")
    if kind == "wavlm" and inferred_kind != "wavlm":
        raise TeacherError(f"{where}: arch is wavlm but the weights have no relative position buckets")
    return teacher_from_state_dict(
        state,
        arch,
        kind,
        source="torchaudio",
        path=path,
        normalize_waveform=bool(cfg.normalize_waveform),
        where=where,
    )
