"""Tiny offline fixtures for the distillation / pretraining tests (teacher, students, audio, configs).

Everything is small enough for 2 shared CPU cores: a 2-layer x 32-dim torchaudio HuBERT teacher
with a 16-channel CNN (stride 320), students of the same CNN shape, a few seconds of audio.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import soundfile as sf
import torch
import yaml

import s3prl_distill  # noqa: F401
from s3prl_distill.config import to_dict

TINY_CONV = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2)]
TEACHER_DIM = 32
TEACHER_LAYERS = 2


def make_teacher(path: Path, seed: int = 0) -> Path:
    """A random tiny torchaudio HuBERT saved as ``{"state_dict", "arch", "kind"}``."""
    from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch, build_wav2vec2_model

    arch = Wav2Vec2Arch(conv_layers=[list(c) for c in TINY_CONV], embed_dim=TEACHER_DIM,
                        pos_conv_kernel=16, pos_conv_groups=4, num_layers=TEACHER_LAYERS,
                        num_heads=2, ffn_dim=64)
    torch.manual_seed(seed)
    model = build_wav2vec2_model(arch, "hubert")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "arch": to_dict(arch), "kind": "hubert"}, path)
    return path


def student_section(style: str = "distilhubert", dropout: float = 0.0) -> Dict[str, Any]:
    """Tiny DistilHuBERT- (2 layers, MLP heads -> teacher layers 1, 2) or FitHuBERT-style
    (time reduction 2, 2 thin layers, deconv heads on every layer) student config data."""
    encoder = {"dim": 24, "ffn_dim": 24, "num_heads": 2, "num_layers": 2, "pos_conv_kernel": 8,
               "pos_conv_groups": 4, "dropout": dropout, "attention_dropout": dropout,
               "activation_dropout": dropout}
    cnn = {"layers": [{"channels": c, "kernel": k, "stride": s} for c, k, s in TINY_CONV]}
    if style == "distilhubert":
        encoder.update(dim=32, ffn_dim=64, pos_conv_kernel=16)  # = the teacher (init test)
        heads = [{"student_layer": 2, "teacher_layer": 1, "type": "mlp", "inner_dim": 32},
                 {"student_layer": 2, "teacher_layer": 2, "type": "mlp", "inner_dim": 32}]
        return {"family": "custom", "cnn": cnn, "encoder": encoder, "heads": heads,
                "teacher_dim": TEACHER_DIM, "teacher_layers": TEACHER_LAYERS}
    heads = [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"} for i in (1, 2)]
    return {"family": "custom", "cnn": cnn, "encoder": encoder, "heads": heads, "time_reduction": 2,
            "teacher_dim": TEACHER_DIM, "teacher_layers": TEACHER_LAYERS}


def model_yaml(folder: Path, teacher_path: Path, style: str = "distilhubert",
               dropout: float = 0.0, init_from_teacher: bool = False) -> Path:
    data = {
        "student": student_section(style, dropout),
        "teacher": {"source": "torchaudio", "path": str(teacher_path)},
        "loss": {"type": "fithubert" if style == "fithubert" else "distilhubert"},
        "init": {"from_teacher": init_from_teacher, "num_layers": 2 if init_from_teacher else 0},
    }
    path = folder / f"model_{style}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def make_audio_dir(folder: Path, count: int = 8, seconds=(0.5, 1.2), sr: int = 16000,
                   seed: int = 0) -> List[Path]:
    """``count`` mono 16 kHz WAVs of random lengths (noise-modulated tones)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        n = int(rng.uniform(*seconds) * sr)
        t = np.arange(n) / sr
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n)
        path = folder / f"spk{i % 2}" / f"utt{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wav.astype(np.float32), sr)
        paths.append(path)
    return paths


def runner_config(folder: Path, audio_dir: Path, *, total_steps: int = 6, batch_size: int = 4,
                  save_step: int = 2, log_step: int = 1, crop_seconds: float = 0.5,
                  accum: int = 1, max_keep: int = 10, extra_datarc: Optional[Dict] = None,
                  name: str = "runner.yaml", lr: float = 1e-3) -> Path:
    datarc = {"train_batch_size": batch_size, "num_workers": 0, "audio_dir": str(audio_dir),
              "length_index": str(folder / "lengths.tsv"), "crop_seconds": crop_seconds}
    datarc.update(extra_datarc or {})
    data = {
        "runner": {"total_steps": total_steps, "n_epochs": -1, "gradient_clipping": 10.0,
                   "gradient_accumulate_steps": accum, "log_step": log_step,
                   "save_step": save_step, "max_keep": max_keep,
                   "plan_at_start": False},  # its own test: tests/test_plan.py
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": lr},
        "scheduler": {"name": "linear_schedule_with_warmup", "num_warmup_steps": 1},
        "pretrain_expert": {"datarc": datarc},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path
