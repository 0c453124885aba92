"""``huggingface_hub.HfFolder`` / ``Repository``: removed in huggingface_hub 1.0, imported by S3PRL.

S3PRL 0.4.18's ``run_downstream`` imports both at module level. :func:`patch` adds stand-ins only
where the real names are missing.
"""

from __future__ import annotations

import os
from typing import List, Optional

from s3prl_distill.compat._shim import mark

__all__ = ["HfFolder", "Repository", "patch"]


@mark
class HfFolder:
    """Stand-in for ``huggingface_hub.HfFolder`` (removed in huggingface_hub 1.0)."""

    @staticmethod
    def get_token() -> Optional[str]:
        import huggingface_hub

        return huggingface_hub.get_token()

    @staticmethod
    def save_token(token: str) -> None:
        from huggingface_hub import constants

        path = constants.HF_TOKEN_PATH
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(token)

    @staticmethod
    def delete_token() -> None:
        from huggingface_hub import constants

        if os.path.exists(constants.HF_TOKEN_PATH):
            os.unlink(constants.HF_TOKEN_PATH)


@mark
class Repository:
    """Stand-in for ``huggingface_hub.Repository`` (removed in huggingface_hub 1.0).

    Importing it works (S3PRL imports it at module level); using it raises, because S3PRL uses it
    only to push experiments to the hub, which needs the git-based API that no longer exists.
    """

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "huggingface_hub.Repository was removed in huggingface_hub 1.0; S3PRL's "
            "--push_to_hf_hub needs it. Install huggingface_hub<1.0 to push experiments.")


def patch(hub_module) -> List[str]:
    """Add ``HfFolder`` / ``Repository`` to ``hub_module`` if they are missing; idempotent."""
    applied = []
    for name, obj in (("HfFolder", HfFolder), ("Repository", Repository)):
        try:
            getattr(hub_module, name)
        except (AttributeError, ImportError):
            setattr(hub_module, name, obj)
            applied.append(f"huggingface_hub.{name}")
    return applied
