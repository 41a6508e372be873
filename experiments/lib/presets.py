"""Paper-scale presets of the repro scripts (`--scale paper`): the paper's model size, sequence
length, tokens, batch and learning rate, on a corpus source rocket supports, trained by the standard
(sharded) trainer on a TPU or GPU host.

A `PaperPreset` holds one shared run setting and its arms (label -> `PaperArm`: ModelConfig
overrides and the parameter count the paper states). `preset.config(label, workdir)` builds an
arm's `ExperimentConfig`; `preset.plan()` its expected cost:

  FLOPs       = flops_per_token(model, T) x tokens           (rocket's analytic count, training)
  chip-hours  = FLOPs / (MFU x peak) / 3600,  MFU = 0.4, peak = 989e12 (H100 bf16 dense)

`tests/test_presets.py` builds every arm abstractly (`jax.eval_shape`, no training) and checks its
parameter count against the paper's. `run_paper` (the scripts' `--scale paper`) prints the plan,
then trains the arms and compares each with its baseline arm by final validation loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from experiments.lib import verdicts
from experiments.lib.results import Claim, Report, figure
from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig, override
from rocket.models import flops_per_token, param_count

MFU, PEAK_FLOPS, CHIP = 0.4, 989e12, "H100 (bf16 dense 989 TFLOP/s)"
# corpus sources by config string (a streamed Hugging Face dataset: "hf:<name>")
FINEWEB_EDU, FINEWEB, PILE, OPENWEBTEXT2, SLIMPAJAMA = (
    "hf:HuggingFaceFW/fineweb-edu",
    "hf:HuggingFaceFW/fineweb",
    "hf:EleutherAI/pile",
    "hf:segyges/OpenWebText2",
    "hf:cerebras/SlimPajama-627B",
)


@dataclasses.dataclass(frozen=True)
class PaperArm:
    """One model of a preset: ModelConfig overrides over the preset's base, the parameter count the
    paper states (`params`, counted as `count`: "total" or "non_embedding"), its training tokens
    (None: the preset's) and, for a compared arm, its baseline arm and the paper's relative loss
    gain over it (None: no number)."""

    overrides: dict[str, Any]
    params: float
    count: str = "total"
    tokens: float | None = None
    baseline: str | None = None
    paper_gain: float | None = None
    sections: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # e.g. {"loss": {...}}


@dataclasses.dataclass(frozen=True)
class PaperPreset:
    """The paper's setting of one repro script (see the module docstring)."""

    source: str  # the paper and where the numbers come from
    model: dict[str, Any]  # base ModelConfig fields
    arms: dict[str, PaperArm]
    seq_len: int
    batch_size: int  # sequences per step
    tokens: float  # training tokens per arm
    lr: float
    corpus: str
    vocab_size: int
    schedule: str = "cosine"
    warmup_steps: int = 2000
    needs: str = ""  # what the run needs beyond training from scratch ("" = nothing)
    tokenizer_vocab: int | None = None  # the tokenizer's vocabulary when smaller than the model's

    def model_config(self, label: str) -> ModelConfig:
        base = ModelConfig(vocab_size=self.vocab_size, max_seq_len=self.seq_len, dtype="bfloat16")
        return override(override(base, self.model), self.arms[label].overrides)

    def steps(self, label: str) -> int:
        tokens = self.arms[label].tokens or self.tokens
        return max(1, round(tokens / (self.seq_len * self.batch_size)))

    def config(self, label: str, workdir: str) -> ExperimentConfig:
        steps = self.steps(label)
        cfg = ExperimentConfig(
            model=self.model_config(label),
            data=DataConfig(
                corpus=self.corpus,
                tokenizer="sentencepiece",
                spm_vocab_size=self.tokenizer_vocab or self.vocab_size,
                seq_len=self.seq_len,
                batch_size=self.batch_size,
                eval_batches=32,
            ),
            optim=OptimConfig(
                lr=self.lr, warmup_steps=min(self.warmup_steps, steps // 10), schedule=self.schedule
            ),
            train=TrainConfig(
                steps=steps,
                workdir=os.path.join(workdir, label),
                log_every=100,
                eval_every=max(steps // 10, 1),
                ckpt_every=max(steps // 10, 1),
                sample_tokens=0,
            ),
        )
        sections = {
            k: dataclasses.replace(getattr(cfg, k), **v) for k, v in self.arms[label].sections.items()
        }
        return dataclasses.replace(cfg, **sections)

    def plan(self) -> list[dict[str, Any]]:
        """Per arm: parameters (as the paper counts them, and total), tokens, steps, training FLOPs
        and chip-hours at MFU on the reference chip."""
        out = []
        for label, arm in self.arms.items():
            cfg = self.model_config(label)
            tokens = arm.tokens or self.tokens
            flops = flops_per_token(cfg, self.seq_len) * tokens
            out.append(
                {
                    "arm": label,
                    "params": param_count(cfg, include_embedding=arm.count == "total"),
                    "paper_params": arm.params,
                    "params_total": param_count(cfg),
                    "tokens": tokens,
                    "steps": self.steps(label),
                    "train_flops": flops,
                    "chip_hours": flops / (MFU * PEAK_FLOPS) / 3600,
                }
            )
        return out


def iso_flop_tokens(
    preset_model: dict[str, Any],
    arm: dict[str, Any],
    budget_arm: dict[str, Any],
    tokens: float,
    *,
    vocab_size: int,
    seq_len: int,
) -> float:
    """Tokens that give `arm` the training FLOPs of `budget_arm` trained on `tokens` tokens."""
    base = override(ModelConfig(vocab_size=vocab_size, max_seq_len=seq_len), preset_model)
    fpt = lambda o: flops_per_token(override(base, o), seq_len)  # noqa: E731
    return tokens * fpt(budget_arm) / fpt(arm)


def format_plan(name: str, preset: PaperPreset) -> str:
    lines = [f"{name} --scale paper: {preset.source}"]
    lines.append(
        f"  T={preset.seq_len}, batch {preset.batch_size} sequences, lr {preset.lr:g} ({preset.schedule}), "
        f"corpus {preset.corpus}, vocab {preset.vocab_size}"
    )
    total = 0.0
    for p in preset.plan():
        total += p["chip_hours"]
        lines.append(
            f"  {p['arm']:<16s} {p['params'] / 1e6:8.1f}M params (paper {p['paper_params'] / 1e6:.0f}M), "
            f"{p['tokens'] / 1e9:6.1f}B tokens, {p['steps']} steps, {p['train_flops']:.2e} FLOPs, "
            f"{p['chip_hours']:,.0f} chip-hours"
        )
    lines.append(f"  total {total:,.0f} chip-hours at {MFU:.0%} MFU on {CHIP}")
    if preset.needs:
        lines.append(f"  needs: {preset.needs}")
    return "\n".join(lines)


def run_paper(args: argparse.Namespace, preset: PaperPreset) -> Report:
    """`--scale paper`: prints the plan, trains every arm (one seed) with the standard trainer and
    compares each compared arm with its baseline by final validation loss (two-sided verdict)."""
    from experiments.lib.runs import run  # the trainer: imported only when a paper run starts

    print(format_plan(args.name, preset), flush=True)
    if preset.needs:
        raise SystemExit(f"error: {args.name} --scale paper needs {preset.needs}")
    loss = {label: run(preset.config(label, args.workdir)) for label in preset.arms}
    rows = [p | {"val_loss": loss[p["arm"]]} for p in preset.plan()]
    claims = []
    for label, arm in preset.arms.items():
        if arm.baseline is None:
            continue
        base = loss[arm.baseline]
        rel = (loss[label] - base) / base
        claims.append(
            Claim(
                claim=f"{label} vs {arm.baseline} at the paper's scale (final validation loss)",
                paper=f"{arm.paper_gain:+.1%} relative loss gain" if arm.paper_gain else "-",
                paper_setup=preset.source,
                ours=f"{label} - {arm.baseline} = {loss[label] - base:+.4f} nats ({rel:+.2%}), one seed",
                our_setup=f"T={preset.seq_len}, batch {preset.batch_size}, {preset.corpus}",
                verdict=verdicts.at_most(rel, 0.0, 0.01, paper=arm.paper_gain),
            )
        )
    fig, ax = figure()
    ax.bar(range(len(rows)), [r["val_loss"] for r in rows], tick_label=[r["arm"] for r in rows])
    ax.set(title="final validation loss", ylabel="nats/token")
    summary = f"Paper-scale run ({preset.source}): " + ", ".join(
        f"{r['arm']} {r['val_loss']:.4f}" for r in rows
    )
    return Report(rows=rows, claims=claims, summary=summary, fig=fig, data={"plan": preset.plan()})
