"""Students out of S3PRL: Hugging Face ``transformers`` folders, ONNX graphs and SUPERB hidden-set
submission folders, each checked against the student it came from.

* :mod:`.hf` - ``save_pretrained``-style ``HubertModel`` / ``Wav2Vec2Model`` folders.
* :mod:`.onnx` - ``wavs [B, S]`` + ``lengths [B]`` -> every hidden state + output lengths, with an
  int8 (ONNX Runtime dynamic quantisation) variant.
* :mod:`.superb_hidden` - the ``expert.py`` + weights + ``requirements.txt`` folder the SUPERB
  hidden set takes, runnable with torch alone; :mod:`.validate` checks any such folder.
* :mod:`.plain` - the plain path (fast paths off) that exports and profiles use.

Import the submodules directly; this package imports nothing heavy.
"""

from s3prl_distill.errors import UserError

__all__ = ["ExportError"]


class ExportError(UserError):
    """A student cannot be exported to the requested target (the message says why and what to use)."""
