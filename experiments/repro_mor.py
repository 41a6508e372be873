"""Mixture-of-Recursions (Bae et al. 2025) against a vanilla transformer and a plain recursive
(parameter-shared) transformer at equal total training FLOPs, on the built-in byte-level corpus,
with the controls that separate MoR's learned gate from its routing.

Trains four models, each for the training FLOPs of `base_steps` steps of the vanilla model (steps
scaled by the analytic FLOPs/token of top-k routing, `experiments/lib/routing.py`):

  vanilla_6L     6 dense layers
  recursive      middle-cycle sharing 1 + (2 x 2) + 1: 4 unique layers, every token takes both
                 recursions (mor.router="none"; the same FLOPs as vanilla)
  mor_ec2        the same stack with expert-choice routing, N_r = 2, capacities (1, 1/2), sigmoid
                 gate h + g B(h), g = alpha sigmoid(router), alpha = 0.1, BCE aux loss 0.001 (the
                 causal rule is the router logit's sign); no capacity warm-up (the released 360M
                 expert-choice config sets cap_warmup_step: 0 too)
  mor_gate_only  control: MoR with capacity 1 at every recursion (mor.gate_only, no aux loss): the
                 recursive model with the same learned gate and no routing; g starts near
                 alpha / 2 = 0.05, a learned LayerScale that the ungated baselines lack

Each model's peak learning rate is chosen from LRS on a selection seed (`routing.SELECT_SEED`)
that is not scored; the scored seeds train at that rate (each arm at its best rate).

Measures: causal eval loss against cumulative training FLOPs (plot); final eval loss with causal
routing (honest) and top-k routing (leaks the future) and their gap; unique parameter count;
eval-forward throughput (tokens/s) of every model in both modes, timed side by side; the fraction
of tokens the causal rule sends to the second recursion (top-k sends exactly 1/2) and its
agreement with top-k.

  python -m experiments.repro_mor           # full: d=128, T=128, 300 vanilla steps, seeds 0,1
  python -m experiments.repro_mor --quick   # d=64, T=128, 150 vanilla steps, seed 0
  python -m experiments.repro_mor --scale paper   # the paper's 360M setting (a TPU/GPU host)

Runtime measured on the 2-core CPU shared with ~4 other jobs (load ~7): full without the controls
22 min; the controls and the sweep add 2 arms and 3 rates per arm (about 3.5x the runs).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from experiments.lib import verdicts
from experiments.lib.cli import script_main
from experiments.lib.presets import FINEWEB_EDU, PaperArm, PaperPreset
from experiments.lib.results import Claim, Report, figure
from experiments.lib.routing import FamilyModel, FamilyRun, run_family
from experiments.lib.routing_plots import grouped_bars, plot_loss_vs_flops, plot_topk_vs_causal
from experiments.lib.stats import diff_over_seeds, mean_spread, signed

TITLE = "Mixture-of-Recursions vs recursive and vanilla at equal training FLOPs"
QUICK_HELP = "d=64, 150 vanilla steps, one seed"

STACK = dict(
    n_layers=6,
    mor=dict(sharing="middle_cycle", recursions=2),
)
TABLE = (
    FamilyModel("vanilla_6L", dict(n_layers=6), flops="budget"),
    FamilyModel("recursive", {**STACK, "mor.router": "none"}),
    FamilyModel("mor_ec2", {**STACK, "mor.router": "expert"}),
    FamilyModel(
        "mor_gate_only", {**STACK, "mor.router": "expert", "mor.gate_only": True, "mor.aux_coef": 0.0}
    ),
)
LRS = (1.5e-3, 3e-3, 6e-3)  # each arm's rate is picked on the selection seed
REL_TOL = 0.01  # "matches": within 1% of the vanilla loss or the seed spread
PAPER_GAIN = 1 - 2.7511 / 2.7824  # the paper's relative NLL gain over vanilla (1.1%)


def measure(args: argparse.Namespace) -> Report:
    result = run_family(args, TABLE, layers="rec1/", lrs=LRS)
    fig, axes = figure(ncols=2, nrows=2)
    curves = plot_loss_vs_flops(axes[0], result.family)
    plot_topk_vs_causal(axes[1], result)
    size, tps, names = result.size, result.forward, result.labels
    grouped_bars(
        axes[2],
        names,
        {"unique non-embedding params": [size[m]["params_no_embed"] / 1e6 for m in names]},
        ylabel="parameters (millions)",
        title="unique parameters",
    )
    grouped_bars(
        axes[3],
        names,
        {mode: [tps[m][f"fwd_tokens_per_s_{mode}"] / 1e3 for m in names] for mode in ("topk", "causal")},
        ylabel="eval forward, thousand tokens / s",
        title="throughput (side by side)",
    )
    data = {
        "curves": curves,
        "seeds": result.seeds,
        "scale": dataclasses.asdict(result.scale),
        "lrs": list(LRS),
    }
    record = {
        "rows": result.rows + result.sweep + result.timing,
        "data": data,
        "mode": "quick" if args.quick else "full",
    }
    claims, summary = derive(record)
    return Report(rows=record["rows"], claims=claims, summary=summary, fig=fig, data=data)


def derive(record: dict) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored rows (results.json)."""
    result = FamilyRun.from_record(record)
    causal, topk = result.values("loss_causal"), result.values("loss_topk")
    size, tps = result.size, result.forward
    deep = mean_spread(result.values("causal_selected")["mor_ec2"])[0]
    acc = mean_spread(result.values("causal_acc")["mor_ec2"])[0]
    vanilla = mean_spread(causal["vanilla_6L"])[0]
    d_van, s_van = diff_over_seeds(causal["mor_ec2"], causal["vanilla_6L"])
    d_rec, s_rec = diff_over_seeds(causal["mor_ec2"], causal["recursive"])
    gap, gap_s = mean_spread(result.values("topk_gap")["mor_ec2"])
    p_ratio = size["mor_ec2"]["params_no_embed"] / size["vanilla_6L"]["params_no_embed"]
    speed = {
        m: tps["mor_ec2"][f"fwd_tokens_per_s_{m}"] / tps["vanilla_6L"][f"fwd_tokens_per_s_{m}"]
        for m in ("topk", "causal")
    }
    fpt_ratio = size["mor_ec2"]["fwd_flops_per_token"] / size["vanilla_6L"]["fwd_flops_per_token"]
    n, setup = len(result.seeds), result.setup("vanilla")
    gated = "mor_gate_only" in causal
    lr = {m: size[m].get("lr", result.scale.lr) for m in result.labels}
    lr_note = (
        "rates picked on seed 100 (not scored) from "
        + "/".join(f"{x:g}" for x in record["data"]["lrs"])
        + ": "
        + ", ".join(f"{m} {lr[m]:g}" for m in result.labels)
        if result.sweep
        else f"one rate ({result.scale.lr:g}) for every arm, no sweep"
    )
    if gated:
        d_gv, s_gv = diff_over_seeds(causal["mor_gate_only"], causal["vanilla_6L"])
        d_mg, s_mg = diff_over_seeds(causal["mor_ec2"], causal["mor_gate_only"])
        control = (
            f"gate only (capacity 1, the same learned gate, no routing) - vanilla = {signed(d_gv, s_gv)} nats "
            f"({100 * d_gv / vanilla:+.1f}%); MoR - gate only = {signed(d_mg, s_mg)}; {lr_note}"
        )
    else:
        control = "none run: this result predates the gate-only control and the learning-rate sweep"
    claims = [
        Claim(
            claim="MoR (expert-choice, N_r=2) beats vanilla at equal training FLOPs with fewer parameters",
            paper="val NLL 2.7511 vs 2.7824 (-1.1%) with 167M vs 315M unique params (isoFLOP comparison "
            "at 16.5e18 FLOPs; second-hand: from a summary of the paper, not checked against its table)",
            paper_setup="SmolLM-360M shape, 16.5e18 FLOPs, FineWeb-Edu, T=2048",
            ours=f"causal loss MoR - vanilla = {signed(d_van, s_van)} nats ({100 * d_van / vanilla:+.1f}%) "
            f"with {p_ratio:.2f}x the non-embedding params",
            our_setup=f"1+(2x2)+1 vs 6L, {setup}",
            control=control,
            verdict=verdicts.at_most(d_van / vanilla, s_van / vanilla, REL_TOL, paper=PAPER_GAIN),
        ),
        Claim(
            claim="MoR beats the plain recursive model at equal FLOPs",
            paper="MoR beats the recursive baselines at every isoFLOP budget (isoFLOP figure; no single "
            "number quoted here)",
            paper_setup="135M-1.7B, N_r=3, 2e18-16.5e18 FLOPs",
            ours=f"causal loss MoR - recursive = {signed(d_rec, s_rec)} nats",
            our_setup=setup,
            control=control,
            verdict=verdicts.at_most(d_rec, s_rec, 0.2 * REL_TOL * vanilla),
        ),
    ]
    if gated:
        claims.append(
            Claim(
                claim="control: MoR's routing (not its gate) carries its gain: MoR vs the same gate without routing",
                paper="-",
                paper_setup="-",
                ours=f"causal loss MoR - gate only = {signed(d_mg, s_mg)} nats ({100 * d_mg / vanilla:+.1f}%)",
                our_setup=setup,
                control=lr_note,
                verdict=verdicts.at_most(d_mg, s_mg, 0.2 * REL_TOL * vanilla),
            )
        )
    claims += [
        Claim(
            claim="causal routing (router sign) loses little against top-k at eval",
            paper="the aux loss separates router outputs almost perfectly (selected ~1, others ~0); "
            "second-hand, from a summary of the paper",
            paper_setup="360M, expert-choice, aux BCE 0.001",
            ours=f"causal - top-k = {signed(gap, gap_s)} nats; rule agrees with top-k on {100 * acc:.1f}% of "
            f"recursion-1 candidates and sends {100 * deep:.0f}% of tokens deeper (top-k: 50%)",
            our_setup=setup,
            verdict=verdicts.at_most(gap, gap_s, 2 * REL_TOL * vanilla),
        ),
        Claim(
            claim="MoR has higher throughput than vanilla",
            paper="up to 2.06x inference throughput (MoR-4, depth-wise batching); 19% less training time "
            "(second-hand: from a summary of the paper)",
            paper_setup="360M, H100, max batch",
            ours=f"MoR/vanilla eval-forward tokens/s: top-k {speed['topk']:.2f}x, causal {speed['causal']:.2f}x "
            f"(FLOPs {fpt_ratio:.2f}x)",
            our_setup=f"eval forward B=8, T={result.scale.seq_len}, CPU (shared, +-20%)",
            control="we compare a full-sequence eval forward at equal batch, not the paper's depth-wise "
            "batched generation at maximum batch",
            verdict=verdicts.faster(1 / speed["topk"], fpt_ratio),
        ),
    ]
    summary = (
        "We trained a 6-layer vanilla transformer, a middle-cycle recursive model (1 + 2x2 + 1 layer "
        "applications, 4 unique layers) and MoR expert-choice with N_r = 2 on the same stack"
        + (
            ", plus the control MoR with capacity 1 everywhere (the same learned gate h + g B(h), no routing)"
            if gated
            else ""
        )
        + f", at equal total training FLOPs ({setup}; {lr_note}). Final causal eval loss: vanilla {vanilla:.3f}, "
        f"recursive {np.mean(causal['recursive']):.3f}, MoR {np.mean(causal['mor_ec2']):.3f} (top-k eval "
        f"{np.mean(topk['mor_ec2']):.3f})"
        + (f", gate only {np.mean(causal['mor_gate_only']):.3f}" if gated else "")
        + f", with {p_ratio:.2f}x vanilla's non-embedding parameters; MoR spends {fpt_ratio:.2f}x the forward "
        f"FLOPs per token and so trains {size['mor_ec2']['steps']} steps to vanilla's "
        f"{size['vanilla_6L']['steps']}. Its causal rule sends {100 * deep:.0f}% of tokens to the second "
        f"recursion (top-k: 50%). "
        + (
            (
                "The gate alone accounts for most of MoR's lead: "
                if d_gv < 0.5 * d_van
                else "The gate alone does not account for MoR's lead: "
            )
            + f"the gate-only control is {100 * d_gv / vanilla:+.1f}% from vanilla, MoR {100 * d_van / vanilla:+.1f}%. "
            if gated
            else "A lead this large may come from the official gate h + g B(h) (g about 0.05 at init, a learned "
            "LayerScale the ungated baselines lack) more than from routing; this result predates the gate-only "
            "control. "
        )
        + f"Routed (top-k) forward throughput is {speed['topk']:.2f}x vanilla's; the causal forward "
        f"({speed['causal']:.2f}x) computes every token with keys masked, so it saves no FLOPs on a full "
        "sequence. The paper's claim (1.1% lower NLL than vanilla at half the parameters) is at 360M scale; its "
        "released 360M expert-choice config sets the capacity warm-up to 0 (cap_warmup_step: 0), as here. "
        f"Ours is {n} seed(s) at a tiny scale (the claims table gives the seed spread where there are several), "
        "and timings are on a shared 2-core CPU, +-20%."
    )
    return claims, summary


SMOLLM_360M = dict(d_model=960, n_layers=32, n_heads=15, n_kv_heads=5, d_ff=2560)
MOR_360M = {**STACK, "n_layers": 32, "mor.router": "expert"}
PAPER = PaperPreset(
    source="Bae et al. 2025, 360M isoFLOP comparison (16.5e18 FLOPs): vanilla 20B tokens, MoR-2 27B tokens; "
    "the released config: batch 1024 x 2048, lr 3e-3 warmup-stable-decay, cap_warmup_step 0",
    model=SMOLLM_360M,
    arms={
        "vanilla_360M": PaperArm({}, 315e6, count="non_embedding", tokens=20e9),
        "mor_ec2_360M": PaperArm(
            MOR_360M,
            167e6,
            count="non_embedding",
            tokens=27e9,
            baseline="vanilla_360M",
            paper_gain=PAPER_GAIN,
        ),
    },
    seq_len=2048,
    batch_size=1024,
    tokens=20e9,
    lr=3e-3,
    corpus=FINEWEB_EDU,
    vocab_size=49152,
    schedule="wsd",
    warmup_steps=86,
)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
