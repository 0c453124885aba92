"""PNG figures of a demo run (matplotlib, headless Agg backend).

* :func:`plot_layer_weights` - learned softmax layer weights per task and model (DistilHuBERT
  Fig. 3 style),
* :func:`plot_score_vs_params` - task score against parameter count (DistilHuBERT Fig. 2 style),
* :func:`plot_loss_curves` - distillation loss (and its terms) against update step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

logger = logging.getLogger(__name__)

__all__ = ["plot_layer_weights", "plot_score_vs_params", "plot_loss_curves"]

TASK_TITLES = {"ks": "KS (acc %)", "ic": "IC (acc %)", "sid": "SID (acc %)", "pr": "PR (PER %)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layer_weights(models: Mapping[str, Mapping], path: Path) -> Path:
    """``models[name]["tasks"][task]["layer_weights"]`` -> one bar chart per (model, task).

    Models with a single hidden state (FBANK) are left out. Returns ``path``.
    """
    plt = _pyplot()
    names = [n for n, m in models.items()
             if any(len(t["layer_weights"]) > 1 for t in m["tasks"].values())]
    tasks = sorted({t for n in names for t in models[n]["tasks"]}, key=list(TASK_TITLES).index)
    fig, axes = plt.subplots(len(names), len(tasks), figsize=(3.2 * len(tasks), 2.4 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            weights = models[name]["tasks"][task]["layer_weights"]
            ax.bar(range(len(weights)), weights, color="tab:blue")
            ax.set_xticks(range(len(weights)))
            ax.set_ylim(0, 1)
            if r == 0:
                ax.set_title(TASK_TITLES.get(task, task))
            if c == 0:
                ax.set_ylabel(f"{name}\nweight")
            if r == len(names) - 1:
                ax.set_xlabel("hidden state (0 = CNN/input)")
    fig.suptitle("Learned layer weights of the weighted-sum featurizer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_score_vs_params(models: Mapping[str, Mapping], path: Path) -> Path:
    """Score of every model on every task against its parameter count (millions)."""
    plt = _pyplot()
    tasks = [t for t in TASK_TITLES if any(t in m["tasks"] for m in models.values())]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for name, model in models.items():
            if task not in model["tasks"]:
                continue
            x = model["params"] / 1e6
            y = model["tasks"][task]["test"]
            ax.scatter([x], [y], s=40)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_title(TASK_TITLES[task])
        ax.set_xlabel("parameters (M)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_curves(curves: Mapping[str, Mapping[str, Sequence[Tuple[int, float]]]],
                     path: Path) -> Path:
    """``curves[student][tag] = [(step, value)]`` -> one panel per student (log-scale y)."""
    plt = _pyplot()
    names = [n for n in curves if curves[n]]
    not_losses = {"lr", "frames", "gradient-norm", "audio-seconds-per-second"}
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.4),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        for tag, points in sorted(curves[name].items()):
            if not points or tag in not_losses:
                continue
            steps, values = zip(*points)
            ax.plot(steps, values, label=tag, linewidth=2 if tag == "loss" else 1)
        ax.set_title(f"{name}: distillation loss")
        ax.set_xlabel("update")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
