"""Figure panels of the MoD / MoR families (`experiments.lib.routing`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.lib.routing import FamilyRun
from experiments.lib.routing_measure import loss_vs_flops
from rocket.config import ExperimentConfig


def plot_loss_vs_flops(ax: Any, family: dict[str, list[ExperimentConfig]]) -> dict[str, Any]:
    """Causal eval loss against cumulative training FLOPs, one colour per model (a line per seed)
    -> the curves as json-able data."""
    curves = {}
    for i, (name, cfgs) in enumerate(family.items()):
        for j, cfg in enumerate(cfgs):
            flops, loss = loss_vs_flops(cfg)
            curves[f"{name}/seed{cfg.train.seed}"] = {"flops": flops, "loss": loss}
            ax.plot(
                flops,
                loss,
                "o-",
                color=f"C{i}",
                ms=3,
                alpha=1.0 if j == 0 else 0.5,
                label=name if j == 0 else None,
            )
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss (causal routing, nats/token)")
    ax.set_title("equal total training FLOPs")
    ax.legend(fontsize=8)
    return curves


def grouped_bars(
    ax: Any, names: list[str], series: dict[str, list[float]], *, ylabel: str, title: str, zoom: bool = False
) -> None:
    """A group of bars per model name, one bar per series; `zoom` starts the y axis near the data."""
    x, width = np.arange(len(names)), 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    if zoom:
        lo, hi = min(min(v) for v in series.values()), max(max(v) for v in series.values())
        ax.set_ylim(lo - 0.5 * (hi - lo) - 0.01, hi + 0.25 * (hi - lo) + 0.01)
    ax.set_xticks(x, names, rotation=15, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)


def plot_topk_vs_causal(ax: Any, result: FamilyRun) -> None:
    """Final eval loss of every model with top-k and with causal routing (mean over seeds)."""
    causal, topk, names = result.values("loss_causal"), result.values("loss_topk"), result.labels
    grouped_bars(
        ax,
        names,
        {"top-k (leaks)": [np.mean(topk[m]) for m in names], "causal": [np.mean(causal[m]) for m in names]},
        ylabel="final eval loss (nats/token)",
        title="top-k vs causal routing",
        zoom=True,
    )
