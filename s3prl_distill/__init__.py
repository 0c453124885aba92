"""s3prl-distill: layer-wise knowledge distillation of speech SSL models as an S3PRL plugin.

Importing the package makes torchaudio importable on CPU-only machines whose torchaudio build
links CUDA libraries (see :mod:`s3prl_distill.compat`); everything else is imported lazily.
"""

__version__ = "0.1.0"

from s3prl_distill import compat as _compat

_compat.ensure_torchaudio()
