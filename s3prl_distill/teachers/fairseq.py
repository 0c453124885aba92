"""``source: fairseq``: HuBERT / wav2vec 2.0 / WavLM ``.pt`` checkpoints, read without fairseq and
without running pickled code.

One job per module, in the order a checkpoint goes through them:

1. :mod:`.fairseq_unpickle` - torch's ``weights_only`` unpickler with inert stand-ins for the
   config objects a fairseq checkpoint pickles (no pickled code ever runs), turned into plain data;
2. :mod:`.fairseq_config` - the model / task sections of that data -> :class:`Wav2Vec2Arch`;
3. :mod:`.fairseq_names` - fairseq parameter names -> torchaudio ``Wav2Vec2Model`` names (and back);
4. this module - the loader: the three above, then
   :func:`~s3prl_distill.teachers.wav2vec2.teacher_from_state_dict`.

The public names of the three modules are re-exported here.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

from s3prl_distill.teachers.base import TeacherError
from s3prl_distill.teachers.fairseq_config import (  # noqa: F401  (re-exported)
    arch_from_fairseq, fairseq_configs, fairseq_model_config, parse_conv_layers,
)
from s3prl_distill.teachers.fairseq_names import (  # noqa: F401  (re-exported)
    fairseq_to_torchaudio, fill_identity_projection, is_wavlm_state, torchaudio_to_fairseq,
)
from s3prl_distill.teachers.fairseq_unpickle import (  # noqa: F401  (re-exported)
    HARMLESS_BUILTINS, STAND_IN_CLASSES, PickledObject, safe_load_fairseq, to_plain,
)
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Teacher, teacher_from_state_dict

logger = logging.getLogger(__name__)

__all__ = [
    "PickledObject",
    "STAND_IN_CLASSES",
    "HARMLESS_BUILTINS",
    "safe_load_fairseq",
    "to_plain",
    "fairseq_configs",
    "arch_from_fairseq",
    "parse_conv_layers",
    "fairseq_to_torchaudio",
    "torchaudio_to_fairseq",
    "fairseq_model_config",
    "load_fairseq_teacher",
]


def load_fairseq_teacher(cfg) -> Wav2Vec2Teacher:
    """``source: fairseq``: see the module docstring."""
    path = os.fspath(cfg.path)
    where = f"teacher.path {path}"
    ckpt = safe_load_fairseq(path)
    state = ckpt.get("model")
    if not isinstance(state, Mapping) or not state:
        raise TeacherError(f"{where}: no 'model' state dict in this fairseq checkpoint (keys: {sorted(ckpt)})")
    model_cfg, task_cfg = fairseq_configs(ckpt, where)
    arch = arch_from_fairseq(model_cfg, cfg.arch_config, where)
    mapped = fairseq_to_torchaudio(state, where)
    fill_identity_projection(mapped, arch)
    file_name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    kind = "wavlm" if is_wavlm_state(state) else ("wav2vec2" if file_name.startswith("wav2vec") else "hubert")
    if cfg.arch is not None and (cfg.arch == "wavlm") != (kind == "wavlm"):
        raise TeacherError(f"{where}: teacher.arch is {cfg.arch!r} but the checkpoint is a {kind} model")
    if cfg.arch is not None and file_name and cfg.arch != kind:
        logger.warning("%s: teacher.arch %r but the checkpoint says %r; using %r", where, cfg.arch, file_name, kind)
    normalize = cfg.normalize_waveform
    if normalize is None:
        normalize = bool(task_cfg.get("normalize", model_cfg.get("normalize", False)) or False)
    return teacher_from_state_dict(
        mapped, arch, kind, source="fairseq", path=path, normalize_waveform=normalize, where=where
    )
