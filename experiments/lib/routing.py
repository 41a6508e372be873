"""MoD / MoR families at equal total training FLOPs, run from a table of models: the shared runner
of `repro_mod.py` and `repro_mor.py` (each script keeps its table, its claims and its figure).

A family is a tuple of `FamilyModel` rows (label, ModelConfig overrides, FLOP rule, seed rule). One
row sets the budget (`flops="budget"`): the training FLOPs of `Scale.base_steps` of its steps; every
row trains steps(model) = round(base_steps * F(budget row) / F(model)), F = the analytic
`flops_per_token` of top-k routing as trained (the trainer's cosine schedule spans each run's own
steps; its evals give the loss-vs-FLOPs curve, `routing_measure.loss_vs_flops`).

`run_family` trains every row for every seed (rows with seeds="first": the first seed only),
evaluates each run in both routing modes (`routing_measure.two_mode_eval`) and times the eval forward
of the first seed's models side by side -> a `FamilyRun` (result rows, timing rows, per-model views).
`sweep_lr` picks each row's learning rate on a selection seed that is not scored (the scored runs
use other seeds). Verdict rules: `experiments.lib.verdicts`; seed statistics: `experiments.lib.stats`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

import numpy as np

from experiments.lib.cli import seeds
from experiments.lib.routing_measure import describe, forward_seconds, two_mode_eval
from experiments.lib.runs import experiment, restore_params, run
from rocket.config import ExperimentConfig, ModelConfig
from rocket.models import flops_per_token


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


QUICK = Scale(d_model=64, seq_len=128, base_steps=150, eval_points=4)  # --quick, seed 0
FULL = Scale(128, 128, 300)  # seeds 0, 1


@dataclasses.dataclass(frozen=True)
class FamilyModel:
    """One row of a family's table.

    label: the model's name in the result rows, the figure and its runs' work directories.
    overrides: ModelConfig fields over the byte-level base of `runs.experiment` at the scale's width.
    flops: "budget" for the one row whose `Scale.base_steps` steps set the family's training FLOPs,
        "matched" for a row trained for those FLOPs (fewer steps when it costs more per token).
    seeds: "all" (every seed) or "first" (the first seed only, e.g. a side comparison).
    lr: the row's peak learning rate (None: the scale's).
    """

    label: str
    overrides: dict[str, Any]
    flops: str = "matched"
    seeds: str = "all"
    lr: float | None = None

    def __post_init__(self):
        if self.flops not in ("budget", "matched"):
            raise ValueError(f"{self.label}: flops must be 'budget' or 'matched', got {self.flops!r}")
        if self.seeds not in ("all", "first"):
            raise ValueError(f"{self.label}: seeds must be 'all' or 'first', got {self.seeds!r}")


def iso_flop_family(
    workdir: str, scale: Scale, table: tuple[FamilyModel, ...], *, seed: int
) -> dict[str, ExperimentConfig]:
    """label -> ExperimentConfig of every row of `table`, all at the training FLOPs of its budget row."""
    budget_rows = [m for m in table if m.flops == "budget"]
    if len(budget_rows) != 1:
        raise ValueError(
            f"a family needs exactly one row with flops='budget', got {[m.label for m in budget_rows]}"
        )
    if len({m.label for m in table}) != len(table):
        raise ValueError(f"the labels of a family must differ: {[m.label for m in table]}")

    def model_cfg(overrides: dict[str, Any]) -> ModelConfig:
        return experiment("", steps=1, seq_len=scale.seq_len, d_model=scale.d_model, **overrides).model

    budget = scale.base_steps * flops_per_token(model_cfg(budget_rows[0].overrides), scale.seq_len)
    out = {}
    for m in table:
        steps = round(budget / flops_per_token(model_cfg(m.overrides), scale.seq_len))
        cfg = experiment(
            os.path.join(workdir, f"{m.label}_s{seed}"),
            steps=steps,
            seq_len=scale.seq_len,
            batch_size=scale.batch_size,
            lr=scale.lr if m.lr is None else m.lr,
            seed=seed,
            eval_batches=scale.eval_batches,
            d_model=scale.d_model,
            **m.overrides,
        )
        every = max(steps // scale.eval_points, 1)
        out[m.label] = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, eval_every=every, log_every=max(every // 2, 1))
        )
    return out


def train_family(
    workdir: str, scale: Scale, table: tuple[FamilyModel, ...], seed_list: list[int]
) -> dict[str, list[ExperimentConfig]]:
    """Trains (or resumes) every row of `table` for every seed (rows with seeds="first": seed_list[0]
    only), seed by seed -> label -> cfg per seed it trained."""
    out: dict[str, list[ExperimentConfig]] = {m.label: [] for m in table}
    for i, seed in enumerate(seed_list):
        cfgs = iso_flop_family(workdir, scale, table, seed=seed)
        for m in table:
            if i > 0 and m.seeds == "first":
                continue
            cfg = cfgs[m.label]
            print(f"[{m.label} seed {seed}] {cfg.train.steps} steps", flush=True)
            run(cfg)
            out[m.label].append(cfg)
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


@dataclasses.dataclass(frozen=True)
class FamilyRun:
    """A trained, evaluated and timed family: `rows` (`evaluate_family`, one per model and seed) and
    `timing` (`time_family`, one per model) are the result rows; the rest are views of them."""

    scale: Scale
    seeds: list[int]
    family: dict[str, list[ExperimentConfig]]  # label -> cfg per seed it trained
    rows: list[dict[str, Any]]
    timing: list[dict[str, Any]]
    sweep: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # `sweep_lr`'s rows

    @property
    def labels(self) -> list[str]:
        return list(self.family)

    def values(self, key: str) -> dict[str, list[float]]:
        """label -> the values of `key` over its rows (seeds), in row order."""
        out: dict[str, list[float]] = {}
        for row in self.rows:
            if key in row:
                out.setdefault(row["model"], []).append(row[key])
        return out

    @property
    def size(self) -> dict[str, dict[str, Any]]:
        """label -> a row of the model, for its size and cost columns (the same for every seed)."""
        return {r["model"]: r for r in self.rows}

    @property
    def forward(self) -> dict[str, dict[str, Any]]:
        """label -> its timing row."""
        return {t["model"]: t for t in self.timing}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FamilyRun:
        """The views of a stored result (results.json of a family script): its model rows (one per
        model and seed), timing rows and sweep rows; no configs (`family` holds the labels only)."""
        data, rows = record["data"], record["rows"]
        scale = Scale(**data["scale"]) if "scale" in data else (QUICK if record["mode"] == "quick" else FULL)
        model_rows = [r for r in rows if "seed" in r and not r.get("sweep")]
        labels = dict.fromkeys(r["model"] for r in model_rows)
        return cls(
            scale,
            list(data["seeds"]),
            {label: [] for label in labels},
            model_rows,
            [r for r in rows if r.get("timing")],
            [r for r in rows if r.get("sweep")],
        )

    def setup(self, baseline: str) -> str:
        """The scale in a claim's "our setup", e.g. "d=128, T=128, 300 dense steps, ..."."""
        s = self.scale
        return (
            f"d={s.d_model}, T={s.seq_len}, {s.base_steps} {baseline} steps, byte corpus, "
            f"{len(self.seeds)} seed(s)"
        )


SELECT_SEED = 100  # the learning-rate sweep's seed: never one of the scored seeds


def sweep_lr(
    workdir: str, scale: Scale, table: tuple[FamilyModel, ...], lrs: tuple[float, ...], n_batches: int
) -> tuple[tuple[FamilyModel, ...], list[dict[str, Any]]]:
    """Trains every row of `table` at every learning rate of `lrs` on `SELECT_SEED` (each row at the
    family's FLOPs), evaluates each run (causal routing) -> (the table with each row at the rate of
    its lowest causal loss, the sweep's result rows with "lr" and "sweep": 1)."""
    rows = []
    for lr in lrs:
        runs = tuple(dataclasses.replace(m, label=f"{m.label}@lr{lr:g}", lr=lr) for m in table)
        for row in evaluate_family(train_family(workdir, scale, runs, [SELECT_SEED]), n_batches):
            rows.append(row | {"model": row["model"].split("@")[0], "lr": lr, "sweep": 1})
    best = {
        m.label: min((r for r in rows if r["model"] == m.label), key=lambda r: r["loss_causal"])["lr"]
        for m in table
    }
    return tuple(dataclasses.replace(m, lr=best[m.label]) for m in table), rows


def run_family(
    args: argparse.Namespace,
    table: tuple[FamilyModel, ...],
    *,
    layers: str = "",
    lrs: tuple[float, ...] = (),
) -> FamilyRun:
    """The family of `table` at the scale of a repro script's command line (`QUICK` with --quick, one
    seed; else `FULL`, seeds 0 and 1; --seeds overrides): trained, evaluated in both routing modes
    (routing statistics of the layers matching `layers`, see `evaluate_family`) and timed. With
    `lrs`, each row first gets its best rate from `sweep_lr` (its rows lead `FamilyRun.rows`'s
    sweep part, `FamilyRun.sweep`)."""
    scale = QUICK if args.quick else FULL
    seed_list = seeds(args, [0] if args.quick else [0, 1])
    if SELECT_SEED in seed_list:
        raise SystemExit(f"error: seed {SELECT_SEED} selects the learning rates and cannot be scored")
    n_batches = 4 if args.quick else 8
    sweep: list[dict[str, Any]] = []
    if lrs:
        table, sweep = sweep_lr(os.path.join(args.workdir, "lr_sweep"), scale, table, lrs, n_batches)
    family = train_family(args.workdir, scale, table, seed_list)
    rows = evaluate_family(family, n_batches=n_batches, layers=layers)
    lr = {m.label: scale.lr if m.lr is None else m.lr for m in table}
    rows = [r | {"lr": lr[r["model"]]} for r in rows]
    return FamilyRun(scale, seed_list, family, rows, time_family(family), sweep)
