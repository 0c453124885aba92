"""Published checkpoints in: convert them into our self-describing student checkpoint.

``s3prl-distill convert SRC -o OUT.ckpt`` (:mod:`s3prl_distill.commands.convert`) detects the
format of ``SRC``, names it, and writes a student checkpoint (:mod:`s3prl_distill.checkpoint`).
One module per format, each with ``FORMAT``, ``DESCRIPTION``, ``matches(...)`` and
``convert(...) -> Converted``:

* :mod:`.fithubert_official`: the official FitHuBERT / FitW2V2 Lightning ``.ckpt``;
* :mod:`.s3prl_distiller`: S3PRL's distiller checkpoints (the released DistilHuBERT);
* :mod:`.huggingface`: a transformers ``HubertModel`` / ``Wav2Vec2Model`` folder
  (``ntu-spml/distilhubert``).

Files are read with weights_only (:mod:`.loading`): no pickled code runs.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import Any, Mapping, Optional

from s3prl_distill.checkpoint import FORMAT as STUDENT_FORMAT
from s3prl_distill.checkpoint import CheckpointError, save_student
from s3prl_distill.convert import fithubert_official, huggingface, s3prl_distiller
from s3prl_distill.convert.common import Converted
from s3prl_distill.convert.loading import load_published

__all__ = ["FORMATS", "formats_text", "detect", "convert_path", "write_converted"]

#: format key -> description, in detection order
FORMATS = {m.FORMAT: m.DESCRIPTION for m in (fithubert_official, s3prl_distiller, huggingface)}


def formats_text() -> str:
    """The formats ``convert`` understands, as one phrase for messages."""
    return "; ".join(FORMATS.values())


def detect(path: str) -> tuple:
    """``(format key, loaded checkpoint or None)`` for ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: not a format convert understands (one line naming the file and the formats).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such file or folder", path)
    if huggingface.matches(path):
        return huggingface.FORMAT, None
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: a folder without config.json and model weights; convert "
                              f"understands: {formats_text()}")
    ckpt = load_published(path, formats_text())
    if fithubert_official.matches(ckpt):
        return fithubert_official.FORMAT, ckpt
    if s3prl_distiller.matches(ckpt):
        return s3prl_distiller.FORMAT, ckpt
    if isinstance(ckpt, Mapping) and ckpt.get("format") == STUDENT_FORMAT:
        raise CheckpointError(f"{path}: already an s3prl-distill student checkpoint (nothing to "
                              "convert; `s3prl-distill export` writes the student of a pretraining one)")
    raise CheckpointError(f"{path}: not a checkpoint format convert understands: {formats_text()}")


def convert_path(path: str, distiller_config: Optional[Mapping[str, Any]] = None) -> Converted:
    """Detect and convert ``path`` (``distiller_config``: the official training YAML, if given)."""
    fmt, ckpt = detect(path)
    if fmt == huggingface.FORMAT:
        return huggingface.convert(path)
    if fmt == fithubert_official.FORMAT:
        return fithubert_official.convert(ckpt, path, distiller_config)
    return s3prl_distiller.convert(ckpt, path)


def write_converted(converted: Converted, output: str, keep_heads: Optional[bool] = None,
                    hidden_states: Optional[str] = None, time_reduction_tail: Optional[str] = None):
    """Build the student of ``converted`` (options applied), load its weights, save it.

    Returns the student (eval mode). The output is written atomically and never over an
    existing file.

    Raises:
        CheckpointError: the options do not fit the model, or the weights do not fit the config.
        FileExistsError: ``output`` exists.
    """
    from s3prl_distill.checkpoint import student_from_checkpoint
    from s3prl_distill.config import ConfigError, from_dict, to_dict

    output = os.fspath(output)
    if os.path.exists(output):
        raise FileExistsError(errno.EEXIST, "exists; convert never overwrites a file (choose another -o)",
                              output)
    changes = {}
    if keep_heads is not None:
        changes["keep_heads"] = keep_heads
    if hidden_states is not None:
        changes["hidden_states"] = hidden_states
    if time_reduction_tail is not None:
        changes["time_reduction_tail"] = time_reduction_tail
    try:
        config = from_dict(type(converted.config), to_dict(dataclasses.replace(converted.config, **changes)),
                           where="converted config")
    except ConfigError as err:
        raise CheckpointError(f"{output}: {err}") from err
    ckpt = {"config": to_dict(config), "state_dict": converted.state_dict}
    student = student_from_checkpoint(ckpt, keep_heads=True, where=f"{converted.format} conversion")
    training = dict(converted.training)
    if converted.dropped:
        training["dropped"] = list(converted.dropped)
    save_student(output, student, converted.teacher, training)
    return student.eval()
