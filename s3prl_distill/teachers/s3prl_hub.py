"""Any S3PRL upstream as a teacher (``source: s3prl``, ``name`` = hub entry, ``path`` = its ckpt).

S3PRL's HuBERT / wav2vec 2.0 entries on checkpoints in S3PRL's converted format
(:data:`ADAPTED_ENTRIES`: ``hubert_local``, ``wav2vec2_local``, ...) are read without S3PRL's
code into our :class:`~s3prl_distill.teachers.wav2vec2.Wav2Vec2Teacher` (same weights, the
fairseq name mapping), so they get its fast path, ``precision`` and ``layers=``; their
``teacher.padding`` defaults to ``s3prl`` (S3PRL's expert's numerics on padded batches, equal to
its module to 1e-4, tested); ``padding: masked`` gives ours (and the fast path). Every other
entry (and any file not in that format) runs S3PRL's own expert, :class:`S3PRLTeacher`:

The expert is built by S3PRL itself (``getattr(s3prl.hub, name)(ckpt=path, model_config=...)``,
after :func:`s3prl_distill.compat.apply` and, when available, our own entries' registration), fed
the unpadded waveforms as S3PRL does, and its ``hidden_states`` (``[B, T, D]`` each) are taken as
they are: for S3PRL's HuBERT/wav2vec 2.0 experts that is the input of every transformer layer plus
the encoder output, i.e. the same ``L + 1`` layout as our other adapters; for other upstreams it
is whatever the upstream exposes (``num_layers`` = their count - 1).

Valid lengths follow S3PRL's own featurizer rule, ``round(samples / downsample_rate)`` capped at
``T``, with the rate from the expert's ``get_downsample_rates("hidden_states")`` unless
``teacher.downsample_rate`` is set. S3PRL's experts compute group norm over the padded batch, so
unlike our torchaudio adapter their features of a short utterance depend on the batch.

``teacher.precision`` casts the expert's weights and its input waveforms (S3PRL's experts are
plain modules; a reduced precision works where their code does). ``eval_mode: false`` leaves the
expert in train mode, as S3PRL's distiller does; whatever layer drop the expert sets (S3PRL's
HuBERT / wav2vec 2.0 experts set 0) is kept. The fast path does not apply (S3PRL's own modules).

There is no ``student_init_state`` (arbitrary upstream; the weights' names are the upstream's):
use ``source: fairseq`` / ``torchaudio`` / ``huggingface`` to initialise a student.

:func:`save_as_s3prl_hubert` writes any HuBERT/wav2vec 2.0 teacher in the converted-checkpoint
format of S3PRL's ``hubert_local`` (``task_cfg``, ``model_cfg``, ``model_weight`` with fairseq
names, ``dictionaries_symbols``), e.g. to evaluate a teacher with S3PRL's own expert.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from s3prl_distill.teachers.base import Teacher, TeacherError, TeacherOutput

logger = logging.getLogger(__name__)

__all__ = ["S3PRLTeacher", "load_s3prl_teacher", "load_s3prl_expert", "save_as_s3prl_hubert",
           "ADAPTED_ENTRIES"]

_PROBE_SAMPLES = 16000


class S3PRLTeacher(Teacher):
    """A frozen S3PRL ``UpstreamExpert`` (S3PRL's own modules: its padding, no fast path).

    Args:
        expert: the expert module (``forward(List[Tensor [S]]) -> {"hidden_states": [...]}``).
        name / path: hub entry and checkpoint (for :meth:`describe`).
        downsample_rate: samples per frame; ``None`` asks the expert.
    """

    inherent_padding = "s3prl"

    def __init__(self, expert: torch.nn.Module, *, name: str, path: Optional[str],
                 downsample_rate: Optional[int] = None) -> None:
        if downsample_rate is None:
            try:
                downsample_rate = int(expert.get_downsample_rates("hidden_states"))
            except Exception as err:
                raise TeacherError(
                    f"teacher: S3PRL upstream {name!r} does not report get_downsample_rates('hidden_states') "
                    f"({err}); set teacher.downsample_rate"
                ) from err
        expert.eval()
        with torch.inference_mode():
            probe = expert([torch.zeros(_PROBE_SAMPLES)])
        states = self._states(probe, name)
        super().__init__(source="s3prl", path=path, arch=name, num_layers=len(states) - 1,
                         dim=int(states[0].shape[-1]), downsample_rate=downsample_rate)
        self.expert = expert
        self.name = name
        self.freeze()

    @staticmethod
    def _states(output: Any, name: str) -> List[Tensor]:
        states = output.get("hidden_states") if isinstance(output, dict) else None
        if not isinstance(states, (list, tuple)) or not states:
            raise TeacherError(f"teacher: S3PRL upstream {name!r} returned no 'hidden_states' list")
        shapes = {tuple(s.shape) for s in states}
        if len(shapes) != 1 or states[0].dim() != 3:
            raise TeacherError(f"teacher: S3PRL upstream {name!r} hidden_states must all be one [B, T, D] "
                               f"shape, got {sorted(shapes)}")
        return list(states)

    def _forward(self, wavs: Tensor, wav_lengths: Tensor, layers: List[int]) -> TeacherOutput:
        wavs = wavs.to(self.dtype)
        wav_list = [wavs[b, :n] for b, n in enumerate(wav_lengths.tolist())]
        states = self._states(self.expert(wav_list), self.name)  # the expert computes every layer
        if len(states) != self.num_layers + 1:
            raise TeacherError(f"teacher: S3PRL upstream {self.name!r} returned {len(states)} hidden "
                               f"states, {self.num_layers + 1} when it was loaded")
        frames = states[0].shape[1]
        lengths = torch.clamp(torch.round(wav_lengths.double() / self.downsample_rate).long(), max=frames)
        return TeacherOutput(hidden_states=[states[k] for k in layers], lengths=lengths.to(states[0].device))

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info["name"] = self.name
        return info


def _hub_entry(name: str):
    from s3prl_distill import compat

    compat.apply()
    try:  # our own students are S3PRL upstreams too (distilling from a distilled model)
        from s3prl_distill import registry

        registry.register()
    except ImportError:
        logger.debug("s3prl_distill.registry not available; using S3PRL's own hub entries only")
    import s3prl.hub as hub

    entry = getattr(hub, name, None)
    if entry is None or not callable(entry):
        close = sorted(n for n in dir(hub) if name.split("_")[0] in n and not n.startswith("_"))[:10]
        raise TeacherError(f"teacher.name: S3PRL has no hub entry {name!r} (similar: {close})")
    return entry


#: S3PRL hub entries whose checkpoints (S3PRL's converted fairseq format: ``task_cfg``,
#: ``model_cfg``, ``model_weight``) our wav2vec 2.0 adapter runs, with the model kind
ADAPTED_ENTRIES = {"hubert_local": "hubert", "hubert_custom": "hubert",
                   "wav2vec2_local": "wav2vec2", "wav2vec2_custom": "wav2vec2"}


def load_s3prl_teacher(cfg) -> Teacher:
    """``source: s3prl``: S3PRL's HuBERT / wav2vec 2.0 checkpoints (:data:`ADAPTED_ENTRIES`, in
    S3PRL's converted format) through our :class:`~s3prl_distill.teachers.wav2vec2.Wav2Vec2Teacher`
    (its fast path, precision and ``layers=``; ``teacher.padding`` defaults to ``s3prl`` for this
    source, i.e. S3PRL's expert's numerics); any other entry or file through S3PRL's own expert
    (:func:`load_s3prl_expert`). ``path: null``: the hub entry's own checkpoint (S3PRL downloads
    it on first use, e.g. ``hubert_base``, S3PRL's distiller teacher)."""
    if cfg.path is None:
        return load_s3prl_expert(cfg)
    path = os.fspath(cfg.path)
    if not os.path.exists(path):
        raise TeacherError(f"teacher.path {path}: no such file (the checkpoint for S3PRL's {cfg.name!r})")
    if cfg.name in ADAPTED_ENTRIES and cfg.model_config is None and os.path.isfile(path):
        adapted = _load_converted(path, cfg.name, ADAPTED_ENTRIES[cfg.name], cfg)
        if adapted is not None:
            return adapted
    return load_s3prl_expert(cfg)


def _load_converted(path: str, name: str, kind: str, cfg) -> Optional[Teacher]:
    """S3PRL's converted HuBERT / wav2vec 2.0 checkpoint as our adapter; ``None`` if the file is
    not in that format (then S3PRL's own expert reads it)."""
    from s3prl_distill.teachers.fairseq import (arch_from_fairseq, fairseq_to_torchaudio,
                                                fill_identity_projection, safe_load_fairseq)
    from s3prl_distill.teachers.wav2vec2 import teacher_from_state_dict

    try:
        ckpt = safe_load_fairseq(path)
    except TeacherError as err:
        logger.info("%s: not read as S3PRL's converted format (%s); using S3PRL's expert", path, err)
        return None
    weights, model_cfg, task_cfg = (ckpt.get(k) for k in ("model_weight", "model_cfg", "task_cfg"))
    if not all(isinstance(v, dict) for v in (weights, model_cfg, task_cfg)):
        return None
    where = f"teacher.path {path}"
    arch = arch_from_fairseq(model_cfg, cfg.arch_config, where)
    mapped = fairseq_to_torchaudio(weights, where)
    fill_identity_projection(mapped, arch)
    normalize = cfg.normalize_waveform
    if normalize is None:
        normalize = bool(task_cfg.get("normalize", False))
    teacher = teacher_from_state_dict(mapped, arch, kind, source="s3prl", path=path,
                                      normalize_waveform=normalize, where=where)
    teacher.hub_name = name
    return teacher


def load_s3prl_expert(cfg) -> S3PRLTeacher:
    """``s3prl.hub.<name>(ckpt=path, model_config=...)``: S3PRL's own expert as a teacher
    (``path`` None: the entry's own checkpoint, which S3PRL fetches into its download cache)."""
    path = os.fspath(cfg.path) if cfg.path is not None else None
    if path is not None and not os.path.exists(path):
        raise TeacherError(f"teacher.path {path}: no such file (the checkpoint for S3PRL's {cfg.name!r})")
    entry = _hub_entry(cfg.name)
    kwargs: Dict[str, Any] = {"ckpt": path} if path is not None else {}
    if cfg.model_config is not None:
        kwargs["model_config"] = cfg.model_config
    try:
        expert = entry(**kwargs)
    except TeacherError:
        raise
    except Exception as err:
        if path is None:
            raise TeacherError(
                f"teacher: S3PRL's hub model {cfg.name!r} could not be loaded ({type(err).__name__}: "
                f"{err}); S3PRL fetches its checkpoint on first use, so offline it must already be "
                "in S3PRL's download cache - or give a local copy (teacher.path, or teacher.local in "
                "S3PRL's config schema)") from err
        raise TeacherError(f"teacher.path {path}: S3PRL's {cfg.name!r} could not load it: "
                           f"{type(err).__name__}: {err}") from err
    return S3PRLTeacher(expert, name=cfg.name, path=path, downsample_rate=cfg.downsample_rate)


def save_as_s3prl_hubert(teacher, path: str) -> None:
    """Write a HuBERT / wav2vec 2.0 :class:`~s3prl_distill.teachers.wav2vec2.Wav2Vec2Teacher` in
    the converted format S3PRL's ``hubert_local`` reads. Training-only tensors it requires
    (``mask_emb``, ``final_proj``) are zero; no label embeddings (``dictionaries_symbols [None]``)."""
    from s3prl_distill.io import atomic_save
    from s3prl_distill.teachers.fairseq import fairseq_model_config, torchaudio_to_fairseq
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Teacher

    if not isinstance(teacher, Wav2Vec2Teacher) or teacher.arch == "wavlm":
        raise TeacherError("save_as_s3prl_hubert: needs a HuBERT / wav2vec 2.0 teacher (not WavLM/Whisper/S3PRL)")
    arch = teacher.arch_config
    model_cfg = fairseq_model_config(arch, "hubert")
    model_cfg.pop("_name")
    model_cfg.update({"label_rate": 50.0, "final_dim": arch.embed_dim})
    weights = torchaudio_to_fairseq(teacher.model.state_dict())
    if arch.conv_layers[-1][0] == arch.embed_dim:  # fairseq then builds no post_extract_proj
        w, b = weights.pop("post_extract_proj.weight"), weights.pop("post_extract_proj.bias")
        if not (torch.equal(w, torch.eye(arch.embed_dim, dtype=w.dtype)) and not b.any()):
            raise TeacherError("save_as_s3prl_hubert: the CNN width equals embed_dim, where S3PRL's "
                               "HuBERT has no feature projection, but this teacher's is not the identity")
    weights["mask_emb"] = torch.zeros(arch.embed_dim)
    weights["final_proj.weight"] = torch.zeros(arch.embed_dim, arch.embed_dim)
    weights["final_proj.bias"] = torch.zeros(arch.embed_dim)
    atomic_save({
        "task_cfg": {"sample_rate": 16000, "normalize": teacher.normalize_waveform, "label_rate": 50.0},
        "model_cfg": model_cfg,
        "model_weight": {k: v.detach().clone() for k, v in weights.items()},
        "dictionaries_symbols": [None],
    }, path)
