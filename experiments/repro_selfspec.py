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
measured per-call times. Verdicts read the measured speedup only (`experiments/lib/verdicts.py`,
`speed`: reproduced at the paper's speedup, "implausible - see controls" above 3x the top of its range);
the controls are a separate 2-layer draft of equal draft cost and the same run measured twice (the
wall-clock noise). `--rederive` re-derives the claims from a stored results.json. No `--scale paper`
preset: the papers' speedups need their pretrained 7B-70B models on a GPU.
Quick: 150 steps, seed 0, 8 scored prompts; full: 400 steps, seeds 0,1, 16 scored prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from experiments.lib import verdicts
from experiments.lib.cli import script_main, seeds
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
SETTINGS = {  # per mode: training steps, scored prompts, seeds (stored in data["settings"] since)
    "quick": dict(steps=150, n_score=8, seeds=[0]),
    "full": dict(steps=400, n_score=16, seeds=[0, 1]),
}
LAYERSKIP, DRAFT_VERIFY = "LayerSkip exit, EE-trained", "Draft & Verify skip, plain"
EXIT2, REPEATED, DRAFT2 = (
    "exit at 2, EE-trained",
    "control: exit at 2, EE-trained, repeated",
    "separate 2-layer draft",
)


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


def plot(rows: list[dict]):
    labels = list(dict.fromkeys(r["run"] for r in rows))
    mean = lambda label, key: float(np.mean([r[key] for r in rows if r["run"] == label]))
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
    return fig


def derive(record: dict[str, Any]) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored rows and data (results.json).

    The verdicts read the mean measured wall-clock speedup over AR only (`verdicts.speed`; the
    modelled and depth-model speedups are reported beside it and never decide): LayerSkip's
    abstract reports 1.82x-2.16x over its tasks ("up to 2.16x"), Draft & Verify's "up to 1.99x".
    The wall-clock noise is the relative gap between two measurements of one run (the repeated
    control run), at least 10%."""
    rows, data = record["rows"], record["data"]
    settings = data.get("settings") or SETTINGS["quick" if record.get("mode") == "quick" else "full"]
    run_seeds = sorted({r["seed"] for r in rows})
    labels = list(dict.fromkeys(r["run"] for r in rows))
    col = lambda label, key: [r[key] for r in rows if r["run"] == label]
    mean = lambda label, key: float(np.mean(col(label, key)))
    fmt = lambda xs: f"{np.mean(xs):.2f}" + (f" +- {np.std(xs, ddof=1):.2f}" if len(xs) > 1 else "")
    setup = (
        f"byte-level stdlib corpus, d=64, 4 layers, context {CTX}, {settings['steps']} steps, seeds "
        f"{run_seeds}, greedy, CPU"
    )
    twice = list(zip(col(EXIT2, "measured_speedup"), col(REPEATED, "measured_speedup")))
    noise = max(0.1, max(abs(a - b) / ((a + b) / 2) for a, b in twice))
    repeated = (
        f"the same run (exit at 2, EE-trained) measured twice: {fmt(col(EXIT2, 'measured_speedup'))}x and "
        f"{fmt(col(REPEATED, 'measured_speedup'))}x, up to {noise:.0%} apart"
    )

    def ours(run: str) -> str:
        return (
            f"measured {fmt(col(run, 'measured_speedup'))}x (modelled {fmt(col(run, 'modelled_speedup'))}x)"
        )

    def below_noise(run: str) -> str:
        top = mean(run, "measured_speedup") * (1 + noise)
        return f"{mean(run, 'measured_speedup'):.2f}x plus {noise:.0%} is {top:.2f}x, " + (
            "still below 1: a slowdown beyond the timing noise" if top < 1 else "not clear of 1"
        )

    claims = [
        Claim(
            claim="Early-exit self-speculation (LayerSkip recipe) decodes faster than AR, exactly",
            paper="up to 2.16x (CNN/DM), 1.82x (coding), 2.0x (TOPv2) (abstract)",
            paper_setup="Llama2 7B/13B, Llama3 8B with LayerSkip continual pre-training / fine-tuning, GPU",
            ours=ours(LAYERSKIP),
            our_setup=setup,
            control=f"a separate 2-layer draft model of equal draft cost (vs the exit at 2): acceptance "
            f"{fmt(col(DRAFT2, 'acceptance'))} vs {fmt(col(EXIT2, 'acceptance'))}, measured "
            f"{fmt(col(DRAFT2, 'measured_speedup'))}x vs {fmt(col(EXIT2, 'measured_speedup'))}x: as slow within "
            "the noise, so the slowdown is the small models' per-call cost on this CPU, not self-drafting; "
            f"wall-clock noise: {repeated}; " + below_noise(LAYERSKIP),
            verdict=verdicts.speed(mean(LAYERSKIP, "measured_speedup"), 1.82, paper_high=2.16),
        ),
        Claim(
            claim="Layer-skipping self-drafts (Draft & Verify) decode faster than AR, exactly",
            paper="up to 1.99x (abstract)",
            paper_setup="LLaMA-2 13B / 70B, CodeLLaMA, skip set from Bayesian optimisation, GPU",
            ours=ours(DRAFT_VERIFY),
            our_setup=setup,
            control=f"wall-clock noise: {repeated}; " + below_noise(DRAFT_VERIFY),
            verdict=verdicts.speed(mean(DRAFT_VERIFY, "measured_speedup"), 1.99),
        ),
    ]
    table = "; ".join(
        f"{lb}: accept {mean(lb, 'acceptance'):.2f}, MAT {mean(lb, 'mat'):.2f}, "
        f"measured {mean(lb, 'measured_speedup'):.2f}x" for lb in labels
    )  # fmt: skip
    routed = np.mean([data[f"seed{s}"]["mor_routing"]["mor/rec1/selected"] for s in run_seeds])
    summary = (
        f"Small byte-level models ({settings['steps']} steps, seeds {run_seeds}) decode with their own shallow "
        f"path; every run is exact (greedy outputs equal AR's, tests/test_self_spec.py). {table}. At exit layer "
        f"2 the early-exit loss moves greedy acceptance from {fmt(col('exit at 2, plain-trained', 'acceptance'))} "
        f"(plain model) to {fmt(col(EXIT2, 'acceptance'))}. The MoR model's causal router sends a fraction "
        f"{routed:.3f} of tokens to its second recursion, so its first-recursion draft is nearly the model itself "
        "(acceptance near 1 says little about MoR drafting). Measured speedups are CPU wall-clock ratios of small "
        f"models on a shared 2-core machine (the repeated control run differs by {noise:.0%}), where a call's "
        "fixed overhead dominates its depth; the verdicts read the measured speedup only. The depth-model "
        "column is the speedup if a call cost its depth, the modelled one uses measured per-call times "
        "(`rocket.decode.cost_model`)."
    )
    return claims, summary


def measure(args: argparse.Namespace) -> Report:
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    settings["seeds"] = seeds(args, settings["seeds"])
    rows, data = [], {"settings": settings}
    for seed in settings["seeds"]:
        r, d = evaluate_seed(
            fresh_workdir(f"{args.workdir}/seed{seed}"), seed, settings["steps"], settings["n_score"]
        )
        rows += r
        data[f"seed{seed}"] = d
    claims, summary = derive({"rows": rows, "data": data})
    return Report(rows=rows, claims=claims, summary=summary, fig=plot(rows), data=data)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
