"""Mixture-of-Recursions (Bae et al. 2025) against a vanilla transformer and a plain recursive
(parameter-shared) transformer at equal total training FLOPs, on the built-in byte-level corpus.

Trains three models, each for the training FLOPs of `base_steps` steps of the vanilla model (steps
scaled by the analytic FLOPs/token of top-k routing, `experiments/lib/routing.py`):

  vanilla_6L   6 dense layers
  recursive    middle-cycle sharing 1 + (2 x 2) + 1: 4 unique layers, every token takes both
               recursions (mor.router="none"; the same FLOPs as vanilla)
  mor_ec2      the same stack with expert-choice routing, N_r = 2, capacities (1, 1/2), sigmoid gate
               alpha = 0.1, BCE aux loss 0.001 (the causal rule is the router logit's sign); no
               capacity warm-up (rocket does not implement it)

Measures: causal eval loss against cumulative training FLOPs (plot); final eval loss with causal
routing (honest) and top-k routing (leaks the future) and their gap; unique parameter count;
eval-forward throughput (tokens/s) of every model in both modes, timed side by side; the fraction
of tokens the causal rule sends to the second recursion (top-k sends exactly 1/2) and its
agreement with top-k.

  python -m experiments.repro_mor           # full: d=128, T=128, 300 vanilla steps, seeds 0,1
  python -m experiments.repro_mor --quick   # d=64, T=128, 150 vanilla steps, seed 0

Runtime measured on the 2-core CPU shared with ~4 other jobs (load ~7): quick 4-6 min wall (2.3
CPU-min); full not run yet (estimated ~50 min shared from the repro_mod full step times, about half
that alone).
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments.lib.cli import repro_main
from experiments.lib.results import Claim, Report, figure
from experiments.lib.routing import FamilyModel, run_family, verdict_at_most, verdict_faster
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
)
REL_TOL = 0.01  # "matches": within 1% of the vanilla loss (the paper's gain is 1.1%) or the seed spread


def measure(args: argparse.Namespace) -> Report:
    result = run_family(args, TABLE, layers="rec1/")
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
    claims = [
        Claim(
            claim="MoR (expert-choice, N_r=2) beats vanilla at equal training FLOPs with fewer parameters",
            paper="val NLL 2.7511 vs 2.7824 with 167M vs 315M unique params (0.53x)",
            paper_setup="SmolLM-360M shape, 16.5e18 FLOPs, FineWeb-Edu, T=2048",
            ours=f"causal loss MoR - vanilla = {signed(d_van, s_van)} nats ({100 * d_van / vanilla:+.1f}%) "
            f"with {p_ratio:.2f}x the non-embedding params",
            our_setup=f"1+(2x2)+1 vs 6L, {setup}",
            verdict=verdict_at_most(d_van, s_van, REL_TOL * vanilla),
        ),
        Claim(
            claim="MoR beats the plain recursive model at equal FLOPs",
            paper="MoR beats the recursive baselines at every isoFLOP budget",
            paper_setup="135M-1.7B, N_r=3, 2e18-16.5e18 FLOPs",
            ours=f"causal loss MoR - recursive = {signed(d_rec, s_rec)} nats",
            our_setup=setup,
            verdict=verdict_at_most(d_rec, s_rec, 0.2 * REL_TOL * vanilla),
        ),
        Claim(
            claim="causal routing (router sign) loses little against top-k at eval",
            paper="the aux loss separates router outputs almost perfectly (selected ~1, others ~0)",
            paper_setup="360M, expert-choice, aux BCE 0.001",
            ours=f"causal - top-k = {signed(gap, gap_s)} nats; rule agrees with top-k on {100 * acc:.1f}% of "
            f"recursion-1 candidates and sends {100 * deep:.0f}% of tokens deeper (top-k: 50%)",
            our_setup=setup,
            verdict=verdict_at_most(gap, gap_s, 2 * REL_TOL * vanilla),
        ),
        Claim(
            claim="MoR has higher throughput than vanilla",
            paper="up to 2.06x inference throughput (MoR-4, depth-wise batching); 19% less training time",
            paper_setup="360M, H100, max batch",
            ours=f"MoR/vanilla eval-forward tokens/s: top-k {speed['topk']:.2f}x, causal {speed['causal']:.2f}x "
            f"(FLOPs {fpt_ratio:.2f}x)",
            our_setup=f"eval forward B=8, T={result.scale.seq_len}, CPU (shared, +-20%)",
            verdict=verdict_faster(1 / speed["topk"], fpt_ratio),
        ),
    ]

    fig, axes = figure(ncols=2, nrows=2)
    curves = plot_loss_vs_flops(axes[0], result.family)
    plot_topk_vs_causal(axes[1], result)
    names = result.labels
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

    summary = (
        f"We trained a 6-layer vanilla transformer, a middle-cycle recursive model (1 + 2x2 + 1 layer "
        f"applications, 4 unique layers) and MoR expert-choice with N_r = 2 on the same stack, at equal "
        f"total training FLOPs ({setup}). Final causal eval loss: vanilla {vanilla:.3f}, recursive "
        f"{np.mean(causal['recursive']):.3f}, MoR {np.mean(causal['mor_ec2']):.3f} (top-k eval "
        f"{np.mean(topk['mor_ec2']):.3f}) with {p_ratio:.2f}x vanilla's non-embedding parameters; "
        f"MoR spends {fpt_ratio:.2f}x the forward FLOPs per token and so trains {size['mor_ec2']['steps']} "
        f"steps to vanilla's {size['vanilla_6L']['steps']}. Its causal rule sends {100 * deep:.0f}% of "
        f"tokens to the second recursion (top-k: 50%). Routed (top-k) forward throughput is "
        f"{speed['topk']:.2f}x vanilla's; the causal forward ({speed['causal']:.2f}x) computes every token "
        f"with keys masked, so it saves no FLOPs on a full sequence. "
        + (
            "A lead over both baselines this large (> 2%) at this scale may come from the official gate "
            "h + g B(h), g <= alpha = 0.1 (a damped shared block, which the recursive baseline lacks), "
            "more than from routing; we did not ablate it (see the curves: compare the first evaluation). "
            if d_van < -2 * REL_TOL * vanilla and d_rec < -2 * REL_TOL * vanilla
            else ""
        )
        + f"The paper's claim (1.1% lower NLL "
        f"than vanilla at half the parameters) is at 360M scale with capacity warm-up, which rocket "
        f"does not implement; ours is {n} seed(s) at a tiny scale (the claims table gives the seed "
        f"spread where there are several), and timings are on a shared 2-core CPU, +-20%."
    )
    return Report(
        rows=result.rows + result.timing,
        claims=claims,
        summary=summary,
        fig=fig,
        data={"curves": curves, "seeds": result.seeds},
    )


def main(argv: list[str] | None = None) -> None:
    repro_main("mor", __doc__, title=TITLE, quick_help=QUICK_HELP, measure=measure, argv=argv)


if __name__ == "__main__":
    main()
