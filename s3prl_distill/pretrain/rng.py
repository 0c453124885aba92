"""Random-number state of a run as plain data (tensors, ints, lists), for exact resumption."""

from __future__ import annotations

import random
from typing import Any, Dict, Mapping

import numpy as np
import torch

__all__ = ["capture_rng", "restore_rng", "seed_everything"]


def capture_rng() -> Dict[str, Any]:
    """Python, NumPy, torch (CPU and CUDA) RNG states as tensors and plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) and make cuDNN deterministic
    (``deterministic = True``, ``benchmark = False``), as S3PRL's ``run_pretrain.py`` does before
    it builds its runner (0.4.18, lines 143-148). The flags only act on CUDA; they cost some GPU
    speed and buy run-to-run equality."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
