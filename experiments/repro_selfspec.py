"""Self-speculative decoding from adaptive depth: LayerSkip's early exit, Draft & Verify's layer
skipping, and MoD / MoR models drafting with their own shallow path, against AR and a separate draft.

  python -m experiments.repro_selfspec [--quick] [--seeds 0,1]

Elhoushi et al., LayerSkip (arXiv 2404.16710); Zhang et al., Draft & Verify (arXiv 2309.08168).
Byte-level models (d=64, 4 layers, context 64, batch 8) trained on the built-in corpus with the standard
trainer: dense; dense with LayerSkip's early-exit loss (rotational curriculum R=2, layer dropout
p_max=0.1); MoD (routed layers 1 and 3, capacity 0.5); MoR (cycle sharing, 2 recursions, expert
router); and a separate 2-layer dense draft model (the cost of a half-depth self-draft).

Free choices are fixed on held-out *selection* prompts before anything is scored: the exit layer
(1..3, gamma = 4, on the early-exit-trained model) and Draft & Verify's skip set (every set of 1-2 of layers 1..3), each by the
fewest target-equivalent calls per token. Scored prompts are other validation rows. Greedy decoding
(the acceptance is deterministic), plus one sampled (T = 1) run of the LayerSkip configuration.
Measured: acceptance, mean accepted tokens (MAT), target-equivalent calls per token (each call
weighted by the depth it runs), measured wall-clock speedup over AR (batch of scored prompts,
median of repeats, a shared 2-core CPU), and the modelled speedup of `rocket.decode.cost_model` from
measured per-call times. Verdicts read the measured speedup only (two-sided: a gain more than 3x
the paper's beyond the seed spread reads "implausible - see controls").
Quick: 150 steps, seed 0, 8 scored prompts; full: 400 steps, seeds 0,1, 16 scored prompts.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax.numpy as jnp
import numpy as np

from experiments.lib.cli import repro_main, seeds
from experiments.lib.per_token import eval_batches
from experiments.lib.results import Claim, Report, figure
from experiments.lib.runs import experiment, fresh_workdir, restore_params, run
from experiments.lib.selfspec import call_times, choose, decode, prompts, skip_candidates
from rocket.config import LossConfig
from rocket.decode import ModelStep, SamplerConfig, Speculative
from rocket.decode.cost_model import modelled_speedup
from rocket.decode.methods import SelfExit, SelfMoD, SelfMoR, SelfSkip
from rocket.models import Transformer

TITLE = "Self-speculative decoding (LayerSkip early exit, Draft & Verify skipping, MoD / MoR drafts)"
QUICK_HELP = "150 steps, seed 0, 8 scored prompts (full: 400 steps, seeds 0,1, 16 scored prompts)"
GAMMA, PROMPT_LEN, MAX_NEW, CTX = 4, 24, 32, 64
ARCH = dict(d_model=64, n_layers=4, n_heads=4, n_kv_heads=2)
MODELS = {
    "dense": dict(ARCH),
    "dense_ee": dict(ARCH),
    "mod": dict(ARCH, mod=dict(pattern="dense,mod", capacity=0.5)),
    "mor": dict(ARCH, mor=dict(sharing="cycle", recursions=2)),
    "draft2": dict(ARCH, n_layers=2),
}
EARLY_EXIT = LossConfig(early_exit_scale=1.0, early_exit_rotation=2, layer_dropout=0.1)
PAPER = {"layerskip": 2.16, "draft_verify": 1.99}


def verdict(speedups: list[float], paper: float, noise: float) -> tuple[str, str]:
    """Two-sided verdict on a measured speedup (kept local; the shared experiments/lib helpers may
    replace it): effect = speedup - 1 against the paper's; spread = max(seed std, noise floor)."""
    effect, paper_effect = float(np.mean(speedups)) - 1.0, paper - 1.0
    spread = max(float(np.std(speedups, ddof=1)) if len(speedups) > 1 else 0.0, noise)
    if effect - spread > 3 * paper_effect:
        return "inconclusive", "implausible - see controls"
    if effect - spread > 0:
        return ("reproduced" if effect >= 0.5 * paper_effect else "partly"), ""
    if effect + spread < 0:
        return "not reproduced", ""
    return "inconclusive", ""


def train_all(root: str, seed: int, steps: int) -> dict[str, ModelStep]:
    out = {}
    for name, kw in MODELS.items():
        cfg = experiment(f"{root}/{name}", steps=steps, seed=seed, seq_len=CTX, batch_size=8, **kw)
        if name == "dense_ee":
            cfg = dataclasses.replace(cfg, loss=EARLY_EXIT)
        run(cfg)
        out[name] = ModelStep(Transformer(cfg.model), {"params": restore_params(cfg)})
    return out


def evaluate_seed(root: str, seed: int, steps: int, n_score: int) -> tuple[list[dict], dict]:
    models = train_all(root, seed, steps)
    select_bp, score_bp = prompts(eval_batches(CTX, 4), 4, n_score, PROMPT_LEN)
    chosen, trials = {}, {}
    exits = [SelfExit(exit_layer=k, gamma=GAMMA) for k in (1, 2, 3)]
    chosen["dense_ee/exit"], trials["dense_ee/exit"] = choose(models["dense_ee"], exits, select_bp, MAX_NEW)
    skips = [SelfSkip(skip=s, gamma=GAMMA) for s in skip_candidates(4)]
    chosen["dense/skip"], trials["dense/skip"] = choose(models["dense"], skips, select_bp, MAX_NEW)
    runs = [  # (label, model, method, draft, sampler)
        ("LayerSkip exit, EE-trained", "dense_ee", chosen["dense_ee/exit"], None, None),
        ("exit at 2, EE-trained", "dense_ee", SelfExit(exit_layer=2, gamma=GAMMA), None, None),
        ("exit at 2, plain-trained", "dense", SelfExit(exit_layer=2, gamma=GAMMA), None, None),
        ("separate 2-layer draft", "dense_ee", Speculative(branching=(1,) * GAMMA), "draft2", None),
        ("Draft & Verify skip, plain", "dense", chosen["dense/skip"], None, None),
        ("MoD: routed layers skipped", "mod", SelfMoD(gamma=GAMMA), None, None),
        ("MoR: first recursion", "mor", SelfMoR(recursions=1, gamma=GAMMA), None, None),
        ("LayerSkip exit, EE, sampled T=1", "dense_ee", chosen["dense_ee/exit"], None, SamplerConfig()),
        # control: the same run measured again, for the wall-clock noise of the shared machine
        (
            "control: exit at 2, EE-trained, repeated",
            "dense_ee",
            SelfExit(exit_layer=2, gamma=GAMMA),
            None,
            None,
        ),
    ]
    ar_seconds = {}
    for name in ("dense", "dense_ee", "mod", "mor"):
        ar_seconds[name] = decode(models[name], "ar", score_bp, MAX_NEW, repeats=3, seed=seed)["seconds"]
    rows = []
    max_len = PROMPT_LEN + MAX_NEW + GAMMA + 1
    for label, name, method, draft_name, sampler in runs:
        draft = models[draft_name] if draft_name else None
        kw = {} if sampler is None else {"sampler": sampler}
        s = decode(models[name], method, score_bp, MAX_NEW, draft=draft, repeats=3, seed=seed, **kw)
        t = call_times(models[name], method, draft, max_len)
        rows.append(
            dict(
                seed=seed,
                run=label,
                model=name,
                method=repr(method),
                acceptance=s["acceptance"],
                mat=s["mean_accepted_tokens"],
                teq_per_token=s["teq_per_token"],
                measured_speedup=ar_seconds[name] / s["seconds"],
                modelled_speedup=modelled_speedup(s, **t),
                depth_model_speedup=1.0 / s["teq_per_token"],
            )  # fmt: skip
        )
    mor = models["mor"]
    _, aux = mor.module.apply(
        mor.variables, score_bp, jnp.broadcast_to(jnp.arange(PROMPT_LEN), score_bp.shape), routing="causal"
    )
    routed = {k: float(v) for k, v in aux["metrics"].items()}  # the MoR router's causal decisions
    return rows, {
        "chosen": {k: repr(v) for k, v in chosen.items()},
        "selection_trials": trials,
        "mor_routing": routed,
    }


def measure(args: argparse.Namespace) -> Report:
    steps, n_score = (150, 8) if args.quick else (400, 16)
    run_seeds = seeds(args, [0] if args.quick else [0, 1])
    rows, data = [], {}
    for seed in run_seeds:
        r, d = evaluate_seed(fresh_workdir(f"{args.workdir}/seed{seed}"), seed, steps, n_score)
        rows += r
        data[f"seed{seed}"] = d
    labels = list(dict.fromkeys(r["run"] for r in rows))
    col = lambda label, key: [r[key] for r in rows if r["run"] == label]
    mean = lambda label, key: float(np.mean(col(label, key)))

    fig, axes = figure(ncols=2)
    y = np.arange(len(labels))
    for off, key in ((-0.2, "measured_speedup"), (0.0, "modelled_speedup"), (0.2, "depth_model_speedup")):
        axes[0].barh(y + off, [mean(lb, key) for lb in labels], height=0.2, label=key.replace("_", " "))
    axes[0].axvline(1.0, color="k", lw=0.8)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].set_xlabel("speedup over AR")
    axes[0].legend(fontsize=7)
    axes[1].barh(y, [mean(lb, "acceptance") for lb in labels])
    axes[1].set_yticks(y, [""] * len(labels))
    axes[1].set_xlabel("draft acceptance rate")

    setup = f"byte-level stdlib corpus, d=64, 4 layers, context {CTX}, {steps} steps, seeds {run_seeds}, greedy, CPU"
    # wall-clock noise of the shared CPU: the relative gap between two measurements of one run
    twice = [(a, b) for a, b in zip(col("exit at 2, EE-trained", "measured_speedup"),
                                    col("control: exit at 2, EE-trained, repeated", "measured_speedup"))]  # fmt: skip
    noise = max(0.1, max(abs(a - b) / ((a + b) / 2) for a, b in twice))
    acc_ee, acc_plain = (
        col("exit at 2, EE-trained", "acceptance"),
        col("exit at 2, plain-trained", "acceptance"),
    )
    fmt = lambda xs: f"{np.mean(xs):.2f}" + (f" +- {np.std(xs, ddof=1):.2f}" if len(xs) > 1 else "")

    def speed_claim(claim: str, run: str, paper: str, paper_setup: str, paper_x: float) -> Claim:
        """A speedup claim read from the measured speedup of `run` (never the modelled one)."""
        measured = col(run, "measured_speedup")
        v, note = verdict(measured, paper_x, noise)
        ours = f"measured {fmt(measured)}x (modelled {fmt(col(run, 'modelled_speedup'))}x)"
        return Claim(claim, paper, paper_setup, ours + (f" [{note}]" if note else ""), setup, v)

    claims = [
        speed_claim(
            "Early-exit self-speculation (LayerSkip recipe) decodes faster than AR, exactly",
            "LayerSkip exit, EE-trained",
            "up to 2.16x (CNN/DM), 1.82x (coding), 2.0x (TOPv2) (abstract)",
            "Llama2 7B/13B, Llama3 8B with LayerSkip continual pre-training / fine-tuning, GPU",
            PAPER["layerskip"],
        ),
        speed_claim(
            "Layer-skipping self-drafts (Draft & Verify) decode faster than AR, exactly",
            "Draft & Verify skip, plain",
            "up to 1.99x (abstract)",
            "LLaMA-2 13B / 70B, CodeLLaMA, skip set from Bayesian optimisation, GPU",
            PAPER["draft_verify"],
        ),
    ]
    table = "; ".join(
        f"{lb}: accept {mean(lb, 'acceptance'):.2f}, MAT {mean(lb, 'mat'):.2f}, "
        f"measured {mean(lb, 'measured_speedup'):.2f}x" for lb in labels
    )  # fmt: skip
    summary = (
        f"Small byte-level models ({steps} steps, seeds {run_seeds}) decode with their own shallow path; "
        f"every run is exact (greedy outputs equal AR's, tests/test_self_spec.py). {table}. At exit layer 2 the "
        f"early-exit loss moves greedy acceptance from {fmt(acc_plain)} (plain model) to "
        f"{fmt(acc_ee)}. The MoR model's causal router sends a fraction "
        f"{np.mean([data[f'seed{s}']['mor_routing']['mor/rec1/selected'] for s in run_seeds]):.3f} of tokens to its "
        "second recursion, so its first-recursion draft is nearly the model itself (acceptance near 1 says "
        "little about MoR drafting). Measured speedups are CPU wall-clock ratios of small models on a shared "
        f"2-core machine (the repeated control run differs by {noise:.0%}), where a call's fixed overhead "
        "dominates its depth; the depth-model column is the speedup if a call cost its depth, the modelled one "
        "uses measured per-call times (`rocket.decode.cost_model`)."
    )
    return Report(rows=rows, claims=claims, summary=summary, fig=fig, data=data)


def main(argv: list[str] | None = None) -> None:
    repro_main("selfspec", __doc__, title=TITLE, quick_help=QUICK_HELP, measure=measure, argv=argv)


if __name__ == "__main__":
    main()
