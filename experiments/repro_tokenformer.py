"""TokenFormer incremental scaling: grow a trained model vs train the larger one from scratch.

  python -m experiments.repro_tokenformer [--quick] [--seeds 0,1]

Wang et al., arXiv 2410.23168 (TokenFormer), section 3.6. Byte-level TokenFormers (d=64, 2 layers,
T=128, batch 16, cosine lr 3e-3) on the built-in corpus, per seed five runs of the standard trainer:
  small          n = d = 64 parameter tokens per projection (n_ffn = 256), S1 steps;
  grown          `grow_checkpoint` of `small` to n = 128 (n_ffn = 512, ~2x the parameters; zero new
                 keys, tau pinned: the same function), resumed for S2 more steps (cosine over S1 + S2,
                 re-entered at step S1);
  continue small `small` resumed for S2 more steps without growing (the same schedule as `grown`);
  scratch (total) the n = 128 model from scratch for the grown run's total FLOPs (small + grown stage);
  scratch (extra) the n = 128 model from scratch for the grown stage's FLOPs only (S2 steps).
Measured: max |logits(grown) - logits(small)| at the moment of growth on validation text (function
preservation), and validation loss vs cumulative training FLOPs (`flops_per_token` x tokens), evaluated
every few steps. Quick: S1 = S2 = 100, seed 0, ~2-3 min; full: S1 = S2 = 300, seeds 0,1, ~16 min
(2-core CPU shared with other jobs, timings noisy).
"""

from __future__ import annotations

import argparse
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from experiments.lib import verdicts
from experiments.lib.cli import script_main, seeds
from experiments.lib.per_token import eval_batches
from experiments.lib.presets import OPENWEBTEXT2, PaperArm, PaperPreset
from experiments.lib.results import Claim, Report, figure
from experiments.lib.runs import (
    experiment,
    fresh_workdir,
    logged,
    replace_model,
    replace_train,
    restore_params,
    run,
)
from experiments.lib.stats import signed, spread
from rocket.config import ExperimentConfig
from rocket.models import Transformer, flops_per_token, param_count
from rocket.train.checkpoint import run_checkpoint_dir
from rocket.train.grow import grow_checkpoint

TITLE = "TokenFormer: growth vs training from scratch"
QUICK_HELP = "S1 = S2 = 100 steps, one seed (full: 300 + 300, seeds 0,1)"

N_SMALL, N_BIG = 64, 128
RUNS = ("small", "grown", "continue small", "scratch (total)", "scratch (extra)")
COLORS = dict(zip(RUNS, ("tab:gray", "tab:red", "tab:blue", "tab:green", "tab:olive")))


def max_logit_diff(small: ExperimentConfig, grown: ExperimentConfig, batches: list[dict]) -> float:
    """max |logits(grown) - logits(small)| over two validation batches, right after growth."""
    out = []
    for cfg in (small, grown):
        model, params = Transformer(cfg.model), restore_params(cfg)
        apply = jax.jit(lambda p, b, model=model: model.apply({"params": p}, b["inputs"], b["positions"])[0])
        out.append([np.asarray(apply(params, {k: jnp.asarray(v) for k, v in b.items()})) for b in batches])
    return float(max(np.abs(a - b).max() for a, b in zip(*out)))


def train_seed(root: str, seed: int, s1: int, s2: int, batches: list[dict]) -> tuple[dict[str, list], float]:
    """The five runs of one seed -> ({run: [(cumulative FLOPs, eval loss)]}, max |logit diff| at growth)."""
    every = max((s1 + s2) // 10, 10)
    tf = {"projection.kind": "pattention", "seed": seed}
    small = experiment(f"{root}/small", steps=s1, **{"projection.param_tokens": N_SMALL}, **tf)
    small = replace_train(small, eval_every=every)
    big = replace_model(small, **{"projection.param_tokens": N_BIG}).model
    tokens = small.data.batch_size * small.data.seq_len
    f_small, f_big = (tokens * flops_per_token(m, small.data.seq_len) for m in (small.model, big))
    scratch_steps = s2 + round(s1 * f_small / f_big)  # the grown run's total FLOPs
    run(small)
    grown = grow_checkpoint(small.train.workdir, small, f"{root}/grown", N_BIG)
    grown = replace_train(grown, steps=s1 + s2)
    diff = max_logit_diff(small, grown, batches)
    cont = replace_train(small, steps=s1 + s2, workdir=f"{root}/cont")
    shutil.copytree(run_checkpoint_dir(f"{root}/small"), run_checkpoint_dir(f"{root}/cont"))
    scratch = {
        name: experiment(f"{root}/{tag}", steps=n, **{"projection.param_tokens": N_BIG}, **tf)
        for name, tag, n in (
            ("scratch (total)", "scratch_total", scratch_steps),
            ("scratch (extra)", "extra", s2),
        )
    }
    cfgs = {"small": small, "grown": grown, "continue small": cont, **scratch}
    for name, cfg in cfgs.items():
        if name != "small":
            run(replace_train(cfg, eval_every=every))
    print(f"seed {seed}: params small {param_count(small.model)}, big {param_count(grown.model)}")

    def flops(name: str, step: int) -> float:
        if name.startswith("scratch"):
            return step * f_big
        per_step = f_small if name == "continue small" else f_big
        return min(step, s1) * f_small + max(step - s1, 0) * per_step

    curves = {
        name: [(flops(name, r["step"]), r["loss"]) for r in logged(cfg, "eval")] for name, cfg in cfgs.items()
    }
    for name in ("grown", "continue small"):  # both start from the small model at step S1 (same function)
        curves[name].insert(0, curves["small"][-1])
    return curves, diff


def measure(args: argparse.Namespace) -> Report:
    s1 = s2 = 100 if args.quick else 300
    run_seeds = seeds(args, [0] if args.quick else [0, 1])
    batches = eval_batches(128, 2)
    results = {}
    for seed in run_seeds:
        results[seed] = train_seed(fresh_workdir(f"{args.workdir}/seed{seed}"), seed, s1, s2, batches)

    rows = []
    for seed in run_seeds:
        curves, diff = results[seed]
        for name in RUNS:
            flops, loss = curves[name][-1]
            rows.append(
                dict(model=name, seed=seed, train_flops=flops, val_loss=loss, max_logit_diff_at_growth=diff)
            )

    fig, axes = figure(ncols=2)
    for ax, zoom in zip(axes, (False, True)):
        for name in RUNS:
            for i, seed in enumerate(run_seeds):
                x, y = np.array(results[seed][0][name]).T
                keep = x >= results[seed][0]["small"][-1][0] * 0.99 if zoom else np.ones_like(x, bool)
                ax.plot(
                    x[keep] / 1e12,
                    y[keep],
                    "o-",
                    ms=3,
                    color=COLORS[name],
                    alpha=0.9 if i == 0 else 0.5,
                    label=name if i == 0 else None,
                )
        ax.set_xlabel("cumulative training FLOPs (TFLOP)")
        ax.set_ylabel("validation loss (nats/token)")
    axes[0].set_title(f"TokenFormer growth n={N_SMALL}->{N_BIG} at step {s1}")
    axes[1].set_title("after growth (zoom)")
    axes[0].legend(fontsize=8)

    data = {
        f"seed{s}": {
            name: {"flops": [p[0] for p in c], "loss": [p[1] for p in c]} for name, c in results[s][0].items()
        }
        for s in run_seeds
    }
    claims, summary = derive({"rows": rows, "data": data})
    return Report(rows=rows, claims=claims, summary=summary, fig=fig, data=data)


PAPER_GAP = float(np.log(11.8 / 11.6))  # the widest grown-vs-scratch gap Figure 2's 11.6-11.8 ppl allows


def derive(record: dict) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored rows (results.json).

    The control for "grown matches scratch" is the small model continued without growth to the same
    total FLOPs: when it beats the from-scratch model too, scratch is undertrained at this budget and
    the comparison with it says little about growth."""
    rows = record["rows"]
    run_seeds = sorted({r["seed"] for r in rows})
    final = {
        name: [next(r["val_loss"] for r in rows if r["model"] == name and r["seed"] == s) for s in run_seeds]
        for name in RUNS
    }
    diffs = [next(r["max_logit_diff_at_growth"] for r in rows if r["seed"] == s) for s in run_seeds]
    grown, total, extra, cont = (
        final[n] for n in ("grown", "scratch (total)", "scratch (extra)", "continue small")
    )

    def paired(a: list[float], b: list[float]) -> tuple[float, float]:
        d = np.subtract(a, b)
        return float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0

    noise = 0.01  # nats: the floor under one-seed differences
    gap_total, sd_total = paired(grown, total)
    gap_extra, sd_extra = paired(grown, extra)
    gap_cont, sd_cont = paired(grown, cont)
    cont_total, _ = paired(cont, total)
    f_of = {r["model"]: r["train_flops"] for r in rows if r["seed"] == run_seeds[0]}
    setup = f"byte-level stdlib corpus, d=64, 2 layers, T=128, n {N_SMALL}->{N_BIG}, seeds {run_seeds}"
    undertrained = cont_total < -max(noise, 2 * sd_total)
    control = (
        f"continue small (no growth) at the same total FLOPs: {spread(cont)}; grown - continue = "
        f"{signed(gap_cont, sd_cont)}"
        + (
            "; continuing the small model also beats scratch, so scratch is undertrained here"
            if undertrained
            else ""
        )
    )
    claims = [
        Claim(
            claim="Growth with zero new keys and pinned tau preserves the model's function exactly",
            paper="exact (zero keys, tau pinned; our reading of the official code)",
            paper_setup="incremental scaling 124M -> 1.4B, OpenWebText2",
            ours=f"max |logit diff| = {max(diffs):.1e}",
            our_setup=setup,
            verdict=verdicts.REPRODUCED if max(diffs) < 1e-4 else verdicts.NOT,
        ),
        Claim(
            claim="A grown model matches or beats the larger model trained from scratch at equal total compute",
            paper="Figure 2: about 11.6-11.8 ppl at 1.4B either way, growth at about 1/3 of the TPU-hours "
            "(our reading of the plot)",
            paper_setup="124M -> 354M -> 757M -> 1.4B, 15-60B tokens per stage vs 300B from scratch",
            ours=f"val loss grown {spread(grown)} vs scratch {spread(total)} at {f_of['scratch (total)'] / 1e12:.2f} "
            f"TFLOP (grown {f_of['grown'] / 1e12:.2f}); grown - scratch = {signed(gap_total, sd_total)}",
            our_setup=setup,
            control=control,
            verdict=verdicts.at_most(gap_total, sd_total, noise, paper=PAPER_GAP),
        ),
        Claim(
            claim="control: growing beats continuing the small model at equal total FLOPs",
            paper="-",
            paper_setup="-",
            ours=f"grown {spread(grown)} vs continue small {spread(cont)}; grown - continue = {signed(gap_cont, sd_cont)}",
            our_setup=setup,
            verdict=verdicts.beats(-gap_cont, sd_cont, noise),
        ),
        Claim(
            claim="Growing beats training the larger model from scratch with only the extra compute",
            paper="reuse of the small model's training (Figure 2's cost saving)",
            paper_setup="as above",
            ours=f"grown {spread(grown)} vs scratch (extra FLOPs) {spread(extra)}; grown - scratch = "
            f"{signed(gap_extra, sd_extra)}",
            our_setup=setup,
            verdict=verdicts.beats(-gap_extra, sd_extra, noise),
        ),
    ]
    summary = (
        f"We trained a byte-level TokenFormer with n={N_SMALL} parameter tokens per projection, grew it to "
        f"n={N_BIG} (zero new keys, tau pinned; max |logit diff| at growth {max(diffs):.1e}) and trained on, next "
        f"to the n={N_BIG} model from scratch for the same total FLOPs and for the same extra FLOPs, and the small "
        f"model continued without growth to the same total FLOPs (seeds {run_seeds}). Final validation loss: grown "
        f"{spread(grown)}, scratch at equal total FLOPs {spread(total)}, scratch at equal extra FLOPs "
        f"{spread(extra)}, continue small {spread(cont)}. "
        + (
            "Continuing the small model already beats the from-scratch big model, so at this budget scratch is "
            "undertrained and 'grown beats scratch' does not isolate growth; the control that does is grown vs "
            "continue small. "
            if undertrained
            else ""
        )
        + "The paper's claim is that growth reaches the from-scratch quality at a fraction of the compute, at "
        "124M-1.4B scale on OpenWebText2; ours is a tiny model on a few hundred steps, where the lr schedule "
        "re-entry at growth and short training dominate, so read it as a directional check."
    )
    return claims, summary


TF_354M = dict(d_model=1024, n_layers=24, n_heads=16, n_kv_heads=16, **{"projection.kind": "pattention"})
PAPER = PaperPreset(
    source="Wang et al. 2024, incremental scaling on OpenWebText2, T=1024: the 354M base (768/3072 parameter "
    "tokens) and the 757M model (1792/7168) from scratch; the growth step itself (grow_checkpoint of the base, "
    "then resume) is the CPU path's code and is not run by this preset",
    model=TF_354M,
    arms={
        "small_354M": PaperArm({"projection.param_tokens": 768}, 354e6, tokens=30e9),
        "scratch_757M": PaperArm(
            {"projection.param_tokens": 1792}, 757e6, tokens=60e9, baseline="small_354M", paper_gain=None
        ),
    },
    seq_len=1024,
    batch_size=512,
    tokens=30e9,
    lr=6e-4,
    corpus=OPENWEBTEXT2,
    vocab_size=50304,
)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
