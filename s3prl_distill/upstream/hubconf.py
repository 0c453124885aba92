"""S3PRL hub entries for s3prl-distill students (``ENTRIES``; put on ``s3prl.hub`` by registry.py).

* ``distilhubert_local(ckpt)``: a checkpoint whose ``student.family`` is ``distilhubert``,
* ``fithubert_local(ckpt)``: a checkpoint whose ``student.family`` is ``fithubert``,
* ``distill_student_local(ckpt)``: any s3prl-distill student checkpoint.

The family entries refuse a checkpoint of another family (e.g. a FitHuBERT checkpoint given to
``distilhubert_local``) with an error naming the file, the family found and the entry to use,
so that a run's name never misdescribes the model it evaluated. Every entry takes S3PRL's
``ckpt=``, ``model_config=`` and ``refresh=`` (ignored: nothing is ever downloaded).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

from s3prl_distill.checkpoint import CheckpointError, read_checkpoint
from s3prl_distill.upstream.expert import UpstreamExpert

__all__ = ["ENTRIES", "distilhubert_local", "fithubert_local", "distill_student_local"]


def _check_path(ckpt: Optional[str], entry: str) -> str:
    if not ckpt:
        raise ValueError(f"{entry} needs -k/ckpt=PATH to an s3prl-distill student checkpoint")
    ckpt = os.fspath(ckpt)
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"{entry}: checkpoint not found: {ckpt}")
    return ckpt


def _family_entry(family: str, entry: str, ckpt, model_config=None, **kwargs) -> UpstreamExpert:
    ckpt = _check_path(ckpt, entry)
    loaded = read_checkpoint(ckpt)  # read once: checked here, built by the expert
    found = loaded["config"].get("family", "custom")
    if found != family:
        raise CheckpointError(
            f"{ckpt}: {entry} expects a '{family}' student checkpoint, but this one is '{found}'"
            f"{' (use fithubert_local or distill_student_local)' if found == 'fithubert' else ''}"
            f"{' (use distilhubert_local or distill_student_local)' if found == 'distilhubert' else ''}"
            f"{' (use distill_student_local)' if found == 'custom' else ''}"
        )
    kwargs.pop("refresh", None)
    return UpstreamExpert(ckpt, model_config=model_config, loaded=loaded, **kwargs)


def distilhubert_local(ckpt=None, *args, model_config=None, **kwargs) -> UpstreamExpert:
    """DistilHuBERT-family student from a local checkpoint ``ckpt``."""
    return _family_entry("distilhubert", "distilhubert_local", ckpt, model_config, **kwargs)


def fithubert_local(ckpt=None, *args, model_config=None, **kwargs) -> UpstreamExpert:
    """FitHuBERT-family student (FitHuBERT, FitW2V2) from a local checkpoint ``ckpt``."""
    return _family_entry("fithubert", "fithubert_local", ckpt, model_config, **kwargs)


def distill_student_local(ckpt=None, *args, model_config=None, **kwargs) -> UpstreamExpert:
    """Any s3prl-distill student from a local checkpoint ``ckpt``."""
    ckpt = _check_path(ckpt, "distill_student_local")
    kwargs.pop("refresh", None)
    return UpstreamExpert(ckpt, model_config=model_config, **kwargs)


ENTRIES: Dict[str, Callable[..., UpstreamExpert]] = {
    "distilhubert_local": distilhubert_local,
    "fithubert_local": fithubert_local,
    "distill_student_local": distill_student_local,
}
