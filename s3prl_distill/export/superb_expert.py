"""SUPERB hidden-set upstream of an s3prl-distill student (copied as ``expert.py`` into the folder).

Self-contained: needs ``torch`` only (see ``requirements.txt``), not s3prl-distill. ``model.pt``
is the student traced with TorchScript (``torch.jit.load``); its ``meta.json`` extra file says
the rate and width of the hidden states. Interface (SUPERB challenge, upstream specification)::

    upstream = UpstreamExpert(ckpt="./model.pt")
    results = upstream([torch.randn(16000 * 10) for _ in range(8)])   # 16 kHz mono waveforms
    results["hidden_states"]   # list of N tensors [B, T, D], one shape
    upstream.get_downsample_rates("hidden_states")                   # samples per frame
"""

import json
from typing import Dict, List

import torch
from torch import Tensor, nn

SAMPLE_RATE = 16000


class UpstreamExpert(nn.Module):
    """The student behind S3PRL's upstream interface (frozen; eval mode)."""

    def __init__(self, ckpt: str = "./model.pt", upstream_feature_selection: str = "hidden_states",
                 **kwargs):
        super().__init__()
        self.name = "[s3prl-distill student]"
        self.ckpt = ckpt
        self.upstream_feature_selection = upstream_feature_selection
        extra = {"meta.json": ""}
        self.model = torch.jit.load(ckpt, map_location="cpu", _extra_files=extra).eval()
        self.meta = json.loads(extra["meta.json"])
        self._device = torch.device("cpu")

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        """Samples per frame of every hidden state (the same for all keys)."""
        return int(self.meta["downsample_rate"])

    def _graph(self, device: torch.device):
        # the traced graph's tensor constants (mel filters, windows) live where it was loaded
        if device != self._device:
            self.model = torch.jit.load(self.ckpt, map_location=device).eval()
            self._device = device
        return self.model

    def forward(self, wavs: List[Tensor]) -> Dict[str, object]:
        """wavs: B waveforms [S_i] (16 kHz) -> {"hidden_states": [B, T, D] x N, ...}."""
        if len(wavs) == 0:
            raise ValueError("the upstream got an empty list of waveforms")
        device = wavs[0].device
        lengths = torch.tensor([int(w.shape[-1]) for w in wavs], dtype=torch.long, device=device)
        shortest = int(self.meta["receptive_field"])
        if int(lengths.min()) < shortest:
            raise ValueError(f"every waveform needs at least {shortest} samples, got {lengths.tolist()}")
        batch = torch.zeros(len(wavs), int(lengths.max()), device=device)
        for i, wav in enumerate(wavs):
            batch[i, : wav.shape[-1]] = wav.reshape(-1).to(batch.dtype)
        outputs = self._graph(device)(batch, lengths)
        states = list(outputs[:-1])
        result: Dict[str, object] = {"hidden_states": states, "last_hidden_state": states[-1],
                                     "lengths": outputs[-1]}
        for i, state in enumerate(states):
            result[f"hidden_state_{i}"] = state
        return result
