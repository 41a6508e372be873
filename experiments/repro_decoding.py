"""Speculative sampling and Token Recycling vs autoregressive decoding, on models trained here.

  python -m experiments.repro_decoding [--quick] [--out results/decoding] [--workdir runs/repro_decoding]

Trains (once; reruns reload) a byte-level 6-layer d=128 target and a 1-layer draft (full mode: also a
2-layer draft) on the built-in corpus with rocket's trainer, then decodes the same code prompts
(batch 1, the papers' latency setting) with autoregressive decoding (AR), speculative sampling
(Leviathan et al. 2023 / Chen et al. 2023: chains of gamma drafts; full mode sweeps gamma and adds
DySpec and RSD trees) and Token Recycling (Luo et al. 2024, no draft model: the 80-node "2.2.2"
tree over the adjacency matrix of recycled candidates), at temperature 0 (greedy) and 1.

Per method it records the draft acceptance rate, MAT (mean tokens emitted per target call), target
calls per token, the measured speedup (warm tokens/s over AR in the same run, compile excluded), and
the modelled speedup of `rocket.decode.cost_model` in the "flat" regime (a call of any width costs
the model's measured 1-token call: the memory-bound accelerator regime the papers ran in; a model,
not a measurement). Exactness is checked where it is cheap: greedy outputs of every method must equal
greedy AR's token for token. The measurement itself is `experiments.lib.decode_bench.measure`.

Runtime measured on the 2-core CPU while shared with other jobs (load ~8, so noisy and pessimistic):
--quick 3.7 min (120 training steps per model, 1 draft, 2 prompts, 48 new tokens), full 24 min (400
steps, 3 models, 6 prompts, 96 new tokens, the gamma sweep, DySpec and RSD).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from experiments.lib import decode_bench, verdicts
from experiments.lib.cli import script_main
from experiments.lib.presets import PaperArm, PaperPreset
from experiments.lib.results import Claim, Report, figure
from rocket.decode import Autoregressive, DySpec, SamplerConfig, Speculative, TokenRecycling
from rocket.utils import enable_compilation_cache

TITLE = "Speculative sampling and Token Recycling vs autoregressive decoding"
QUICK_HELP = "120 training steps, 1 draft, 2 prompts, 48 new tokens (~4 min)"

GREEDY, T1 = SamplerConfig(greedy=True), SamplerConfig(temperature=1.0)
STATS = ("acceptance", "position_acceptance", "mean_accepted_tokens", "target_calls_per_token")
STATS += ("draft_calls_per_token", "tokens_per_s", "speedup", "flat_speedup", "model_speedup", "theory_mat")


def chain(gamma: int) -> Speculative:
    return Speculative(branching=(1,) * gamma)


def plan(quick: bool) -> tuple[dict[str, Any], list[tuple[str, Any, str | None, SamplerConfig, dict]]]:
    """(settings, runs): each run is (name, method, draft, sampler, labels for the rows)."""
    if quick:
        settings = {"steps": 120, "drafts": {"1L": 1}, "prompts": 2, "max_new": 48, "repeats": 2}
        gammas = (2, 4)
    else:
        settings = {"steps": 400, "drafts": {"1L": 1, "2L": 2}, "prompts": 6, "max_new": 96, "repeats": 3}
        gammas = (1, 2, 4, 8)
    runs = []
    for temp, sampler in ((0.0, GREEDY), (1.0, T1)):
        label = {"temperature": temp}
        runs.append(("ar", Autoregressive(), None, sampler, {**label, "method": "ar"}))
        for g in gammas if temp == 0.0 else (4,):
            for d in settings["drafts"]:
                method = {**label, "method": "speculative", "gamma": g, "draft": d}
                runs.append((f"chain g={g} {d}", chain(g), d, sampler, method))
        if not quick:
            runs.append(("dyspec 4-8-8-8 1L", DySpec(), "1L", sampler, {**label, "method": "dyspec"}))
            rsd = Speculative(branching=(3, 2, 1), sampling="without_replacement")
            runs.append(("rsd 3-2-1 1L", rsd, "1L", sampler, {**label, "method": "rsd"}))
        runs.append(
            ("token recycling", TokenRecycling(), None, sampler, {**label, "method": "token_recycling"})
        )
    return settings, runs


def rows_of(results: list[dict], runs: list, bpb: dict[str, float]) -> list[dict]:
    """One flat row per run: its labels and its finite statistics (nan ones, e.g. AR's acceptance,
    are left out)."""
    rows = []
    for r, (_, _, draft, _, labels) in zip(results, runs):
        row = {"name": r["name"], **labels, "target_bpb": bpb["target"]}
        if draft is not None:
            row["draft_bpb"] = bpb[draft]
        row.update({k: float(r[k]) for k in STATS if r[k] is not None and np.isfinite(r[k])})
        if r["same_as_ar"] is not None:
            row["greedy_equals_ar"] = int(r["same_as_ar"])
        rows.append(row)
    return rows


def plot(rows: list[dict], gammas_rows: list[dict]):
    fig, axes = figure(ncols=3)
    names = list(dict.fromkeys(r["name"] for r in rows if r["method"] != "ar"))
    x = np.arange(len(names))
    for i, temp in enumerate((0.0, 1.0)):
        by_name = {r["name"]: r for r in rows if r["temperature"] == temp}
        mat = [by_name[n]["mean_accepted_tokens"] if n in by_name else 0.0 for n in names]
        axes[0].bar(x + (i - 0.5) * 0.4, mat, 0.4, label=f"T={temp:g}")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set(title="tokens per target call (MAT)", ylabel="MAT")
    greedy = {r["name"]: r for r in rows if r["temperature"] == 0.0}
    for i, (key, label) in enumerate((("speedup", "measured (CPU)"), ("flat_speedup", "modelled (flat)"))):
        vals = [greedy[n][key] if n in greedy else 0.0 for n in names]
        axes[1].bar(x + (i - 0.5) * 0.4, vals, 0.4, label=label)
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set(title="speedup over AR, T=0", ylabel="x AR")
    for ax in axes[:2]:
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    for draft in sorted({r["draft"] for r in gammas_rows}):
        pts = sorted((r["gamma"], r) for r in gammas_rows if r["draft"] == draft)
        g = [p[0] for p in pts]
        axes[2].plot(g, [p[1]["mean_accepted_tokens"] for p in pts], "o-", label=f"MAT, {draft} draft")
        axes[2].plot(g, [p[1]["theory_mat"] for p in pts], "x--", label=f"(1-a^(g+1))/(1-a), {draft}")
    axes[2].set(title="chain MAT vs gamma, T=0", xlabel="gamma (drafts per round)", ylabel="MAT")
    axes[2].legend(fontsize=7)
    return fig


def setup_of(settings: dict) -> str:
    return (
        f"byte-level 6L d=128 target, {'/'.join(settings['drafts'])} drafts, {settings['steps']} steps on "
        f"the built-in corpus; {settings['prompts']} prompts x {settings['max_new']} tokens, batch 1, CPU"
    )


def derive(record: dict[str, Any]) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored rows and settings (results.json).

    T=1 is the primary regime: the greedy text of these small models loops (the stored greedy
    sample), which inflates T=0 acceptance and MAT. The verdicts read the measured speedup only;
    the flat-cost model is reported beside it. The draft and gamma are fixed in advance (the 1L
    draft, gamma = 4, the common default), not picked on the scored prompts."""
    rows, settings, sample = record["rows"], record["data"]["settings"], record["data"]["greedy_sample"]
    settings = {"drafts": {"1L": 1, "2L": 2}, **settings}  # results written before drafts were stored
    setup = setup_of(settings)

    def pick(temp: float, method: str, draft: str | None = None, gamma: int | None = None) -> dict:
        return next(
            r
            for r in rows
            if r["temperature"] == temp
            and r["method"] == method
            and r.get("draft") == draft
            and (gamma is None or r.get("gamma") == gamma)
        )

    greedy = [r for r in rows if r["temperature"] == 0.0 and r["method"] != "ar"]
    spec, spec_t1 = (pick(t, "speculative", "1L", 4) for t in (0.0, 1.0))
    tr, tr_t1 = (pick(t, "token_recycling") for t in (0.0, 1.0))
    n_exact = sum(r["greedy_equals_ar"] for r in greedy)
    chains = [r for r in greedy if r["method"] == "speculative"]
    gap = max(abs(r["mean_accepted_tokens"] / r["theory_mat"] - 1) for r in chains)

    def fmt(r: dict) -> str:
        return (
            f"x{r['speedup']:.2f} measured on CPU (x{r['flat_speedup']:.2f} modelled, flat cost), MAT "
            f"{r['mean_accepted_tokens']:.2f}, {r['target_calls_per_token']:.2f} target calls/token"
        )

    loops = "greedy text loops (greedy AR: " + repr(sample[:48]) + "...)"
    claims = [
        Claim(
            claim="Speculative sampling speeds up decoding 2-3x with identical outputs",
            paper="2x-3x over T5X, T5-XXL (Leviathan, abstract); 2-2.5x, Chinchilla 70B (Chen, abstract)",
            paper_setup="T5-XXL 11B + T5-small draft, WMT/CNN-DM, TPU (Leviathan); Chinchilla 70B + 4B draft, "
            "XSum/HumanEval (Chen)",
            ours=f"chain gamma=4, 1L draft; T=1 (primary): {fmt(spec_t1)}, acceptance {spec_t1['acceptance']:.2f}; "
            f"T=0: {fmt(spec)}",
            our_setup=setup,
            control=f"draft and gamma fixed in advance (1L, gamma=4), not chosen on the scored prompts; T=0 is "
            f"secondary: the {loops}",
            verdict=verdicts.speed(spec_t1["speedup"], 2.0, paper_high=3.0),
        ),
        Claim(
            claim="Chain MAT follows (1 - a^(gamma+1)) / (1 - a) for per-position acceptance a",
            paper="Leviathan et al. eq. 1 (theory, i.i.d. acceptance)",
            paper_setup="i.i.d. acceptance assumption",
            ours=f"measured vs theory within {gap * 100:.1f}% over {len(chains)} greedy chains",
            our_setup=setup,
            verdict=verdicts.REPRODUCED if gap <= 0.1 else verdicts.PARTLY if gap <= 0.25 else verdicts.NOT,
        ),
        Claim(
            claim="Token Recycling (no draft model) gives ~2x with MAT ~2.7, lossless",
            paper="Table 1: 2.03x, MAT 2.70 (Vicuna-7B, Spec-Bench); 2.34x, MAT 2.93 (CodeLlama-7B, MBPP)",
            paper_setup="A100, greedy, batch 1, 80-node tree, k=8",
            ours=f"80-node tree; T=1 (primary; rocket's exact sampling extension): {fmt(tr_t1)}; T=0: {fmt(tr)}",
            our_setup=setup,
            control=f"T=0 (the paper's regime) is secondary here: the {loops}, which flatters recycled "
            "candidates most",
            verdict=verdicts.speed(tr_t1["speedup"], 2.03, paper_high=2.34),
        ),
        Claim(
            claim="Greedy speculative decoding is exact: the output equals greedy AR decoding",
            paper="identical outputs (lossless; all three papers)",
            paper_setup="all three papers",
            ours=f"{n_exact}/{len(greedy)} greedy methods token-identical to greedy AR",
            our_setup=setup,
            verdict=verdicts.REPRODUCED if n_exact == len(greedy) else verdicts.NOT,
        ),
    ]
    summary = (
        f"We trained a byte-level 6-layer d=128 target ({rows[0]['target_bpb']:.2f} bits/byte) and small "
        f"drafts on the built-in corpus ({settings['steps']} steps each) and decoded {settings['prompts']} code "
        f"prompts ({settings['max_new']} new tokens, batch 1). T=1 is the primary regime: the greedy text of these "
        f"small models loops (greedy AR: {sample[:60]!r}...), which inflates T=0 acceptance and MAT (Token "
        f"Recycling most). At T=1 speculative sampling (gamma=4, 1L draft, both fixed in advance) emits "
        f"{spec_t1['mean_accepted_tokens']:.2f} tokens per target call and runs at x{spec_t1['speedup']:.2f} "
        f"AR's measured speed; Token Recycling, with no draft model, {tr_t1['mean_accepted_tokens']:.2f} "
        f"tokens per call at x{tr_t1['speedup']:.2f} (T=0: {spec['mean_accepted_tokens']:.2f} and "
        f"{tr['mean_accepted_tokens']:.2f} tokens per call, x{spec['speedup']:.2f} and x{tr['speedup']:.2f}). "
        f"The verdicts read the measured speedups only. The flat-cost model (a verify block costs a 1-token "
        f"step, roughly a memory-bound accelerator) would give x{spec_t1['flat_speedup']:.2f} and "
        f"x{tr_t1['flat_speedup']:.2f} at T=1; on this CPU a wide verify block costs several 1-token steps and "
        "the models are tiny, and the timings were taken on a 2-core machine shared with other jobs. The "
        "papers' 2-3x are wall-clock numbers for billion-parameter models on accelerators, so only the call "
        "counts (MAT, calls/token) compare directly. Every greedy method reproduced greedy AR's output "
        f"token for token ({n_exact}/{len(greedy)})."
    )
    return claims, summary


def measure(args: argparse.Namespace) -> Report:
    enable_compilation_cache()
    settings, runs = plan(args.quick)
    workdir = os.path.join(args.workdir, "quick" if args.quick else "full")
    target, tok, target_bpb = decode_bench.train_or_load(workdir, "target_6l", 6, settings["steps"])
    models, bpb = {"target": target}, {"target": target_bpb}
    for name, layers in settings["drafts"].items():
        models[name], _, bpb[name] = decode_bench.train_or_load(
            workdir, f"draft_{layers}l", layers, settings["steps"]
        )
    prompts = decode_bench.PROMPTS[: settings["prompts"]]
    results = decode_bench.measure(
        [r[:4] for r in runs], models, tok, prompts, settings["max_new"], settings["repeats"]
    )
    rows = rows_of(results, runs, bpb)
    gamma_rows = [r for r in rows if r["method"] == "speculative" and r["temperature"] == 0.0]
    sample = decode_bench.PROMPTS[0] + tok.decode(results[0]["tokens"][0])
    data = {"settings": settings, "greedy_sample": sample}
    claims, summary = derive({"rows": rows, "data": data})
    return Report(rows=rows, claims=claims, summary=summary, fig=plot(rows, gamma_rows), data=data)


PAPER = PaperPreset(
    source="Token Recycling (Luo et al. 2024), Table 1: Vicuna-7B (LLaMA-7B shape) on Spec-Bench, greedy, "
    "batch 1, A100",
    model=dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008, tie_embeddings=False),
    arms={"target_7B": PaperArm({}, 6.74e9)},
    seq_len=4096,
    batch_size=1,
    tokens=0.0,
    lr=0.0,
    corpus="Spec-Bench prompts",
    vocab_size=32000,
    needs="the pretrained Vicuna-7B weights (import them into a rocket checkpoint first); decoding trains nothing",
)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
