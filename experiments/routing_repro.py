"""Shared pieces of the adaptive-depth reproductions (`repro_mod.py`, `repro_mor.py`).

- `iso_flop_family`: one run per model, every run spending the same total training FLOPs as the
  family's baseline: steps(model) = round(base_steps * F(baseline) / F(model)), F = the analytic
  `flops_per_token` of top-k routing as trained (the trainer's cosine schedule spans each run's own
  steps). Curves come from the trainer's eval log (`loss_vs_flops`: causal eval loss against
  cumulative training FLOPs = step * batch * seq_len * F).
- `two_mode_eval`: validation loss of a trained model with top-k routing (non-causal: whether token
  i is routed depends on later tokens, so it leaks the future) and with causal routing (each token
  decides by the sign of its router / predictor logit: the honest number), on the same batches,
  plus the model's routing statistics (`aux["metrics"]`, e.g. `mod/layer1/causal_acc`) averaged
  over the batches in each mode.
- `forward_seconds`: wall time of the eval forward of several models, timed round-robin (one call
  of each model in turn, repeated) so background load on a shared machine hits all of them alike.
- `run_family` / `evaluate_family` / `time_family` / `plot_loss_vs_flops`: the above over seeds,
  as result rows and a figure panel.
- `verdict_at_most`, `verdict_faster`: verdict rules (seed statistics: `experiments.results`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import eval_batches, experiment, logged, restore_params, run
from rocket.config import ExperimentConfig, ModelConfig
from rocket.models import Transformer, flops_per_token, param_count
from rocket.train.step import per_token_loss


@dataclasses.dataclass(frozen=True)
class Scale:
    """The size of a family's runs: model width, sequence length, the baseline's steps."""

    d_model: int
    seq_len: int
    base_steps: int
    batch_size: int = 16
    lr: float = 3e-3
    eval_points: int = 5  # trainer evals per run (the loss-vs-FLOPs curve)
    eval_batches: int = 8


def iso_flop_family(
    workdir: str, scale: Scale, models: dict[str, dict[str, Any]], *, baseline: str, seed: int
) -> dict[str, ExperimentConfig]:
    """name -> ExperimentConfig of every model (ModelConfig overrides), all at the FLOPs of `baseline`."""
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not one of the models {sorted(models)}")

    def model_cfg(overrides: dict[str, Any]) -> ModelConfig:
        return experiment("", steps=1, seq_len=scale.seq_len, d_model=scale.d_model, **overrides).model

    budget = scale.base_steps * flops_per_token(model_cfg(models[baseline]), scale.seq_len)
    out = {}
    for name, overrides in models.items():
        steps = round(budget / flops_per_token(model_cfg(overrides), scale.seq_len))
        cfg = experiment(
            os.path.join(workdir, f"{name}_s{seed}"),
            steps=steps,
            seq_len=scale.seq_len,
            batch_size=scale.batch_size,
            lr=scale.lr,
            seed=seed,
            eval_batches=scale.eval_batches,
            d_model=scale.d_model,
            **overrides,
        )
        every = max(steps // scale.eval_points, 1)
        out[name] = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, eval_every=every, log_every=max(every // 2, 1))
        )
    return out


def run_family(
    workdir: str,
    scale: Scale,
    models: dict[str, dict[str, Any]],
    *,
    baseline: str,
    seeds: list[int],
    first_seed_only: tuple[str, ...] = (),
) -> dict[str, list[ExperimentConfig]]:
    """Trains (or resumes) every model of the iso-FLOP family for every seed (the models named in
    `first_seed_only` for seeds[0] only) -> name -> cfg per seed."""
    out: dict[str, list[ExperimentConfig]] = {name: [] for name in models}
    for i, seed in enumerate(seeds):
        for name, cfg in iso_flop_family(workdir, scale, models, baseline=baseline, seed=seed).items():
            if i > 0 and name in first_seed_only:
                continue
            print(f"[{name} seed {seed}] {cfg.train.steps} steps", flush=True)
            run(cfg)
            out[name].append(cfg)
    return out


def training_flops(cfg: ExperimentConfig, step: int) -> float:
    """Model FLOPs spent by `step` training steps of run `cfg`."""
    tokens = step * cfg.data.batch_size * cfg.data.seq_len
    return tokens * flops_per_token(cfg.model, cfg.data.seq_len)


def loss_vs_flops(cfg: ExperimentConfig) -> tuple[list[float], list[float]]:
    """(cumulative training FLOPs, causal eval loss) at every eval the trainer logged for `cfg`."""
    evals = logged(cfg, "eval")
    return [training_flops(cfg, e["step"]) for e in evals], [e["loss"] for e in evals]


def describe(cfg: ExperimentConfig) -> dict[str, float]:
    """Size and cost of a run: parameters (unique, without embeddings too), FLOPs/token, steps."""
    m, t = cfg.model, cfg.data.seq_len
    return {
        "params": param_count(m),
        "params_no_embed": param_count(m, include_embedding=False),
        "fwd_flops_per_token": flops_per_token(m, t, training=False),
        "steps": cfg.train.steps,
        "train_flops": training_flops(cfg, cfg.train.steps),
    }


def two_mode_eval(
    cfg: ExperimentConfig, params: Any, n_batches: int, batch_size: int = 8
) -> dict[str, float]:
    """{"topk": loss, "causal": loss, "topk/<metric>": mean, "causal/<metric>": mean} on the
    validation set (nats/token over real targets; metrics are `aux["metrics"]` averaged over batches)."""
    model = Transformer(cfg.model)
    batches = eval_batches(cfg.data.seq_len, n_batches, batch_size)
    out: dict[str, float] = {}
    for routing in ("topk", "causal"):

        @jax.jit
        def score(params, batch, routing=routing):
            nats_bt, aux = per_token_loss(model, params, batch, routing=routing)
            w_bt = batch["weights"]
            return jnp.sum(nats_bt * w_bt), jnp.sum(w_bt), aux.get("metrics", {})

        nats, tokens, metrics = 0.0, 0.0, []
        for b in batches:
            s, n, m = jax.device_get(score(params, {k: jnp.asarray(v) for k, v in b.items()}))
            nats, tokens = nats + float(s), tokens + float(n)
            metrics.append(m)
        out[routing] = nats / tokens
        for key in metrics[0]:
            out[f"{routing}/{key}"] = float(np.mean([m[key] for m in metrics]))
    return out


def evaluate_family(
    family: dict[str, list[ExperimentConfig]], n_batches: int, *, layers: str = ""
) -> list[dict[str, Any]]:
    """One row per (model, seed): size, cost, both eval losses, their gap, routing statistics.

    Averaged over the routed layers whose metric names contain `layers` (e.g. "rec1/"), for
    routed models: `causal_acc`, the causal rule's agreement with top-k (in top-k mode), and
    `causal_selected`, the fraction of tokens the causal rule routes through (in causal mode;
    top-k routes exactly the capacity)."""
    rows = []
    for name, cfgs in family.items():
        for cfg in cfgs:
            ev = two_mode_eval(cfg, restore_params(cfg), n_batches)
            stats = {k: v for k, v in ev.items() if "/" in k}
            row = {"model": name, "seed": cfg.train.seed, **describe(cfg)}
            row |= {
                "loss_causal": ev["causal"],
                "loss_topk": ev["topk"],
                "topk_gap": ev["causal"] - ev["topk"],
            }
            metrics = {"causal_acc": ("topk", "causal_acc"), "causal_selected": ("causal", "selected")}
            for key, (mode, metric) in metrics.items():
                hits = [
                    v
                    for k, v in stats.items()
                    if k.startswith(f"{mode}/") and k.endswith(f"/{layers}{metric}")
                ]
                if hits:
                    row[key] = float(np.mean(hits))
            rows.append(row | stats)
    return rows


def time_family(family: dict[str, list[ExperimentConfig]], repeats: int = 7) -> list[dict[str, Any]]:
    """One row per model: eval-forward microseconds per token and tokens/s in both routing modes
    (first seed's parameters, timed side by side)."""
    first = {name: cfgs[0] for name, cfgs in family.items()}
    seq_len = next(iter(first.values())).data.seq_len
    batch_size = 8
    secs = forward_seconds(
        {name: (cfg.model, restore_params(cfg)) for name, cfg in first.items()},
        seq_len,
        batch_size=batch_size,
        repeats=repeats,
    )
    tokens = batch_size * seq_len
    return [
        {"model": name, "timing": "eval_forward"}
        | {f"fwd_us_per_token_{r}": 1e6 * s / tokens for r, s in by_mode.items()}
        | {f"fwd_tokens_per_s_{r}": tokens / s for r, s in by_mode.items()}
        for name, by_mode in secs.items()
    ]


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


def by_model(rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """model -> the values of `key` over its rows (seeds), in row order."""
    out: dict[str, list[float]] = {}
    for row in rows:
        if key in row:
            out.setdefault(row["model"], []).append(row[key])
    return out


def forward_seconds(
    entries: dict[str, tuple[ModelConfig, Any]], seq_len: int, *, batch_size: int = 8, repeats: int = 7
) -> dict[str, dict[str, float]]:
    """name -> {routing: median seconds of one eval forward [batch_size, seq_len]} for both modes,
    timed round-robin over the models (after one compile call each)."""
    batch = {k: jnp.asarray(v) for k, v in eval_batches(seq_len, 1, batch_size)[0].items()}
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for name, (model_cfg, params) in entries.items():
        model = Transformer(model_cfg)
        for routing in ("topk", "causal"):
            fwd = jax.jit(
                lambda p, b, model=model, routing=routing: model.apply(
                    {"params": p}, b["inputs"], b["positions"], segment_ids=b["segment_ids"], routing=routing
                )[0]
            )
            calls[name, routing] = lambda fwd=fwd, params=params: jax.block_until_ready(fwd(params, batch))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for call in calls.values():
        call()  # compile
    for _ in range(repeats):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    out: dict[str, dict[str, float]] = {name: {} for name in entries}
    for (name, routing), ts in times.items():
        out[name][routing] = float(np.median(ts))
    return out


def verdict_at_most(diff: float, spread: float, tol: float) -> str:
    """Verdict for a claim "diff <= 0" (e.g. routed loss minus dense loss): within the tolerance
    `tol` (at least the seed spread) it is reproduced ("matches"), within 3x partly, else not."""
    tol = max(tol, spread)
    if diff <= tol:
        return "reproduced"
    return "partly" if diff <= 3 * tol else "not reproduced"


def verdict_faster(time_ratio: float, flop_ratio: float, noise: float = 0.2) -> str:
    """Verdict for a claim "faster than the baseline" from a time ratio (model / baseline): timings
    on the shared CPU move by about +-`noise`, so only ratios beyond it decide. A time ratio far
    below the FLOP ratio (model / baseline) is faster than the arithmetic allows: load noise in
    the timing, hence inconclusive."""
    if time_ratio < flop_ratio * (1 - noise):
        return "inconclusive"
    if time_ratio < 1 - noise:
        return "reproduced"
    return "not reproduced" if time_ratio > 1 + noise else "inconclusive"
