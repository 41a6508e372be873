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

from experiments.lib import decode_bench
from experiments.lib.cli import repro_main
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


def speed_verdict(measured: float, flat: float, paper_low: float) -> str:
    """reproduced: the measured speedup reaches the paper's; partly: a real gain (over 5%), measured or
    in the flat-cost model, short of it; not reproduced: no gain either way."""
    if measured >= paper_low:
        return "reproduced"
    return "partly" if max(measured, flat) > 1.05 else "not reproduced"


def claims_of(rows: list[dict], settings: dict, setup: str, sample: str) -> tuple[list[Claim], str]:
    """The claims table and the summary, computed from the rows; `sample` is greedy AR's first text."""
    greedy = [r for r in rows if r["temperature"] == 0.0 and r["method"] != "ar"]
    # the common default gamma = 4, with the draft that models faster at T=0 (both drafts are in the rows)
    spec = max(
        (r for r in greedy if r["method"] == "speculative" and r["gamma"] == 4),
        key=lambda r: r["flat_speedup"],
    )

    def at_t1(method: str, draft: str | None = None) -> dict:
        return next(
            r for r in rows if r["temperature"] == 1.0 and r["method"] == method and r.get("draft") == draft
        )

    spec_t1, tr = (
        at_t1("speculative", spec["draft"]),
        next(r for r in greedy if r["method"] == "token_recycling"),
    )
    n_exact = sum(r["greedy_equals_ar"] for r in greedy)
    chains = [r for r in greedy if r["method"] == "speculative"]
    gap = max(abs(r["mean_accepted_tokens"] / r["theory_mat"] - 1) for r in chains)

    def fmt(r: dict) -> str:
        return (
            f"MAT {r['mean_accepted_tokens']:.2f}, {r['target_calls_per_token']:.2f} target calls/token, "
            f"x{r['flat_speedup']:.2f} modelled (flat), x{r['speedup']:.2f} measured on CPU"
        )

    claims = [
        Claim(
            claim="Speculative sampling speeds up decoding 2-3x with identical outputs",
            paper="2x-3x (Leviathan); 2-2.5x (Chen)",
            paper_setup="T5-XXL 11B + T5-small draft, WMT/CNN-DM, TPU (Leviathan); Chinchilla 70B + 4B draft, "
            "XSum/HumanEval (Chen)",
            ours=f"chain gamma=4, {spec['draft']} draft; T=0: {fmt(spec)}, acceptance {spec['acceptance']:.2f}; "
            f"T=1: {fmt(spec_t1)}, acceptance {spec_t1['acceptance']:.2f}",
            our_setup=setup,
            # the weaker temperature decides: small models' greedy text repeats, which flatters T=0
            verdict=speed_verdict(
                min(spec["speedup"], spec_t1["speedup"]),
                min(spec["flat_speedup"], spec_t1["flat_speedup"]),
                2.0,
            ),
        ),
        Claim(
            claim="Chain MAT follows (1 - a^(gamma+1)) / (1 - a) for per-position acceptance a",
            paper="Leviathan et al. eq. 1 (theory)",
            paper_setup="i.i.d. acceptance assumption",
            ours=f"measured vs theory within {gap * 100:.1f}% over {len(chains)} greedy chains",
            our_setup=setup,
            verdict="reproduced" if gap <= 0.1 else "partly" if gap <= 0.25 else "not reproduced",
        ),
        Claim(
            claim="Token Recycling (no draft model) gives ~2x with MAT ~2.7, lossless",
            paper="2.03x, MAT 2.70 (Vicuna-7B); 2.34x, MAT 2.93 (CodeLlama-7B, MBPP)",
            paper_setup="Spec-Bench / MBPP, A100, greedy, batch 1, 80-node tree, k=8",
            ours=f"80-node tree, T=0: {fmt(tr)}; T=1 (rocket's exact sampling extension, not in the paper): "
            f"MAT {at_t1('token_recycling')['mean_accepted_tokens']:.2f}",
            our_setup=setup,
            verdict=speed_verdict(tr["speedup"], tr["flat_speedup"], 2.0),
        ),
        Claim(
            claim="Greedy speculative decoding is exact: the output equals greedy AR decoding",
            paper="identical outputs (lossless)",
            paper_setup="all three papers",
            ours=f"{n_exact}/{len(greedy)} greedy methods token-identical to greedy AR",
            our_setup=setup,
            verdict="reproduced" if n_exact == len(greedy) else "not reproduced",
        ),
    ]
    summary = (
        f"We trained a byte-level 6-layer d=128 target ({rows[0]['target_bpb']:.2f} bits/byte) and small "
        f"drafts on the built-in corpus ({settings['steps']} steps each) and decoded {settings['prompts']} code "
        f"prompts ({settings['max_new']} new tokens, batch 1). Speculative sampling (gamma=4, {spec['draft']} "
        f"draft) emits {spec['mean_accepted_tokens']:.2f} tokens per target call at T=0 and "
        f"{spec_t1['mean_accepted_tokens']:.2f} at T=1; Token Recycling, with no draft model, "
        f"{tr['mean_accepted_tokens']:.2f} at T=0. In the flat-cost model (a verify block costs a 1-token "
        f"step, roughly a memory-bound accelerator) that is x{spec['flat_speedup']:.2f} / "
        f"x{spec_t1['flat_speedup']:.2f} and x{tr['flat_speedup']:.2f} over AR; measured on this CPU, where a "
        f"wide verify block costs several 1-token steps and the models are tiny, x{spec['speedup']:.2f} / "
        f"x{spec_t1['speedup']:.2f} and x{tr['speedup']:.2f}. Caveats: the greedy text of these small models "
        f"repeats itself (greedy AR: {sample[:60]!r}...), which inflates T=0 acceptance and MAT (Token "
        "Recycling most), so T=1 is the fairer regime; the timings were taken on a 2-core machine shared with "
        "other jobs and are noisy (they also enter the flat model through the draft/target cost ratio); the "
        "papers' 2-3x are wall-clock numbers for billion-parameter models on accelerators, so only the "
        "call counts (MAT, calls/token) compare directly. Every greedy method reproduced greedy AR's output "
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
    setup = (
        f"byte-level 6L d=128 target, {'/'.join(settings['drafts'])} drafts, {settings['steps']} steps on "
        f"the built-in corpus; {settings['prompts']} prompts x {settings['max_new']} tokens, batch 1, CPU"
    )
    sample = decode_bench.PROMPTS[0] + tok.decode(results[0]["tokens"][0])
    claims, summary = claims_of(rows, settings, setup, sample)
    return Report(
        rows=rows,
        claims=claims,
        summary=summary,
        fig=plot(rows, gamma_rows),
        data={"settings": {k: v for k, v in settings.items() if k != "drafts"}, "greedy_sample": sample},
    )


def main(argv: list[str] | None = None) -> None:
    repro_main("decoding", __doc__, title=TITLE, quick_help=QUICK_HELP, measure=measure, argv=argv)


if __name__ == "__main__":
    main()
