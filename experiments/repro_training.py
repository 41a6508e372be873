"""Training transforms vs plain next-token training: loss-based sample reweighting, MEAP and Dataset
Decomposition, same model, steps and seeds; plus MEAP's in-context retrieval claim on a synthetic
associative-recall task.

  python -m experiments.repro_training [--quick] [--seeds 0,1] [--out results/training]

Part 1 (language modelling). Every variant trains the same byte-level decoder (vocab 259: the byte
tokenizer's 258 ids + MEAP's [MASK], unused elsewhere) on the built-in corpus with rocket's trainer,
the same optimizer, schedule, steps and tokens per step, and is evaluated on the same validation
batches (packed rows, causal) along the way:
  baseline       plain next-token training
  reweight       LinUpper sample reweighting (Sow et al., ICLR 2025, arXiv 2502.06733): per-row
                 weights softmax(f(h_i) / r), h the batch-normalised row loss, r = 1
  meap           MEAP (Zhuang et al., ICML 2025, arXiv 2502.07490): 15% of input positions -> [MASK],
                 targets unchanged
  decomposition  Dataset Decomposition (Pouransari et al., NeurIPS 2024): documents split into
                 power-of-two buckets, a short-to-long curriculum (full mode only)
Recorded: validation bits/byte per seed (final and the curve), mean and spread over seeds.

Part 2 (MEAP's retrieval claim). 2-layer d=64 models trained with and without MEAP on associative
recall rows "k1:v1,...,k8:v8?kj=" -> vj (rocket.data.synthetic; loss on the answer only; one query
per row, not a multi-query variant), fresh rows every step; recorded: held-out exact-match
recall accuracy vs step.

Runtime measured on the 2-core CPU while shared with other jobs (load ~8, so noisy and pessimistic):
--quick ~5 min (d=64 2 layers, 100 steps, 3 variants, 2 seeds; recall 240 steps), full 24 min (d=64 2
layers, 400 steps, 4 variants, 3 seeds; recall 800 steps, 2 seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

import jax
import numpy as np

from experiments.lib import verdicts
from experiments.lib.cli import script_main, seeds
from experiments.lib.presets import SLIMPAJAMA, PaperArm, PaperPreset
from experiments.lib.results import Claim, Report, figure
from experiments.lib.runs import experiment, logged, run
from experiments.lib.stats import diff_over_seeds, mean_spread
from rocket.config import ExperimentConfig
from rocket.data import build_data
from rocket.data.synthetic import answer_accuracy, associative_recall
from rocket.models import Transformer
from rocket.train.loop import Trainer
from rocket.utils import enable_compilation_cache

TITLE = "Training transforms: sample reweighting, MEAP, Dataset Decomposition vs next-token training"
QUICK_HELP = "100 steps, 3 variants, 2 seeds; recall 240 steps"

VOCAB = 259  # the byte tokenizer's 258 ids + MEAP's [MASK] (the last id)
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "reweight": {"loss": {"reweight": "linupper", "reweight_temperature": 1.0}},
    "meap": {"loss": {"meap_rate": 0.15}},
    "decomposition": {"data": {"decomposition": True, "dd_min_log2": 4}},  # dd_cycles: see dd_cycles()
}
QUICK = {"d_model": 64, "n_layers": 2, "steps": 100, "variants": ("baseline", "reweight", "meap")}
FULL = {"d_model": 64, "n_layers": 2, "steps": 400, "variants": tuple(VARIANTS)}
RECALL = {"pairs": 8, "batch": 32, "eval_rows": 512, "quick_steps": 240, "full_steps": 800, "evals": 8}


def override(cfg: ExperimentConfig, overrides: dict[str, dict]) -> ExperimentConfig:
    """`cfg` with fields of its sections replaced: {"loss": {"meap_rate": 0.15}, ...}."""
    sections = {name: dataclasses.replace(getattr(cfg, name), **vals) for name, vals in overrides.items()}
    return dataclasses.replace(cfg, **sections)


def dd_cycles(cfg: ExperimentConfig) -> int:
    """Curriculum cycles per epoch such that one short-to-long cycle spans the run (the corpus is
    far larger than a short run; with one cycle per epoch the run would only see short buckets)."""
    dc = cfg.data
    data = build_data(dc.corpus, dc.tokenizer, seq_len=dc.seq_len, batch_size=dc.batch_size, eval_batches=1)
    return max(1, round(data.stats["train"]["tokens"] / (cfg.train.steps * dc.batch_size * dc.seq_len)))


def lm_config(variant: str, seed: int, size: dict, workdir: str) -> ExperimentConfig:
    steps = size["steps"]
    cfg = experiment(
        os.path.join(workdir, f"{variant}_s{seed}"),
        steps=steps,
        seed=seed,
        eval_batches=16,
        vocab_size=VOCAB,
        d_model=size["d_model"],
        n_layers=size["n_layers"],
    )
    cfg = override(cfg, {"train": {"eval_every": steps // 4}, **VARIANTS[variant]})
    if cfg.loss.reweight != "none":  # the paper's burn-in: uniform weights for the first 1000 of 20k steps
        cfg = override(cfg, {"loss": {"reweight_warmup_steps": steps // 20}})
    if cfg.data.decomposition:
        cfg = override(cfg, {"data": {"dd_cycles": dd_cycles(cfg)}})
    return cfg


def evidence(batch: dict[str, np.ndarray]) -> np.ndarray:
    """int [B, 3]: the input positions an associative-recall row's answer needs: the queried key
    in the body, its value, and the query key (rows "k1:v1,...,kn:vn?kj=", answer at the last
    position)."""
    inputs, t = np.asarray(batch["inputs"]), batch["inputs"].shape[1]
    query = inputs[:, t - 2]  # "... ? kj =": the query key sits before the final "="
    key_pos = np.argmax(inputs[:, : t - 3] == query[:, None], axis=1)
    return np.stack([key_pos, key_pos + 2, np.full_like(key_pos, t - 2)], 1)


def meap_mask_rows(
    batch: dict[str, np.ndarray], rate: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """MEAP's input masking for the recall probe: per row, n = max(1, floor(T rate)) positions of
    [0, T - 1) other than the row's `evidence` get [MASK] (targets unchanged). The official code
    draws positions shared by the whole batch, which here would hide the needed key, value or
    query in a large share of rows (`shared_mask_hits`) and train on unanswerable rows."""
    inputs = np.array(batch["inputs"])
    b, t = inputs.shape
    n = max(1, int(t * rate))
    free = np.ones((b, t - 1), bool)
    np.put_along_axis(free, evidence(batch), False, axis=1)
    for row in range(b):
        inputs[row, rng.choice(np.flatnonzero(free[row]), n, replace=False)] = VOCAB - 1
    return {**batch, "inputs": inputs}


def shared_mask_hits(
    batch: dict[str, np.ndarray], rate: float, rng: np.random.Generator, draws: int = 64
) -> float:
    """Fraction of rows whose `evidence` the official batch-shared MEAP positions would mask."""
    t = batch["inputs"].shape[1]
    n, ev = max(1, int(t * rate)), evidence(batch)
    hits = [np.isin(ev, rng.choice(t - 1, n, replace=False)).any(1).mean() for _ in range(draws)]
    return float(np.mean(hits))


def recall_run(meap_rate: float, seed: int, steps: int) -> list[tuple[int, float]]:
    """Trains a 2-layer d=64 model on fresh associative-recall batches (MEAP: masked per row by
    `meap_mask_rows`) -> [(step, held-out recall accuracy)] at RECALL["evals"] points."""
    n, batch = RECALL["pairs"], RECALL["batch"]
    seq = 4 * n + 2
    cfg = experiment("unused", steps=steps, seq_len=seq, batch_size=batch, seed=seed, vocab_size=VOCAB)
    trainer = Trainer.build(cfg)
    model = Transformer(cfg.model)
    held_out = associative_recall(RECALL["eval_rows"], n, seed=10**6 + seed)
    logits_fn = jax.jit(lambda p, x, pos: model.apply({"params": p}, x, pos)[0])
    state, curve, rng = trainer.init(seed), [], np.random.default_rng([seed, 7])
    for step in range(1, steps + 1):
        rows = associative_recall(batch, n, seed=seed * 10**5 + step)
        state, _ = trainer.step(state, meap_mask_rows(rows, meap_rate, rng) if meap_rate > 0 else rows)
        if step % (steps // RECALL["evals"]) == 0 or step == steps:
            logits = logits_fn(state.params, held_out["inputs"], held_out["positions"])
            curve.append((step, answer_accuracy(np.asarray(logits), held_out)))
    return curve


def compare(variant: list[float], base: list[float]) -> tuple[float, float]:
    """Paired over seeds (a seed fixes the init and the data order of every variant): (mean of the
    per-seed differences variant - base, its standard error). The verdicts count a difference only
    beyond two standard errors (crude with 2-3 seeds)."""
    diff, sd = diff_over_seeds(variant, base)
    return diff, sd / len(base) ** 0.5


def derive(record: dict[str, Any]) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored measurements (`data` of results.json)."""
    data = record["data"]
    final, recall = data["final_bits_per_byte"], data["final_recall_accuracy"]
    # results written before the setups were stored: the full run's
    setup = data.get(
        "setup", "byte-level d=64 2-layer decoder, 400 steps x 16 x 128 bytes on the built-in corpus"
    )
    rsetup = data.get("rsetup", "2-layer d=64, 800 steps x 32 rows of 8-pair recall, 512 held-out rows")
    base = mean_spread(final["baseline"])[0]

    def fmt(name: str) -> str:
        diff, se = compare(final[name], final["baseline"])
        m, s = mean_spread(final[name])
        return f"{m:.4f} +- {s:.4f} bits/byte vs baseline {base:.4f}: {diff:+.4f} (se {se:.4f})"

    def lower(name: str) -> str:  # "trains better": lower loss than the baseline beyond 2 se
        diff, se = compare(final[name], final["baseline"])
        return verdicts.beats(-diff, se, 0.0)

    rdiff, rse = compare(recall["meap"], recall["ntp"])
    chance = max(max(recall["meap"]), max(recall["ntp"])) < 0.2
    meap_diff, meap_se = compare(final["meap"], final["baseline"])
    hits = data.get("shared_mask_hits")
    claims = [
        Claim(
            claim="Loss-based sample reweighting (LinUpper) converges faster than uniform weights",
            paper="faster convergence and better downstream accuracy, gains growing with model size "
            "(abstract; no loss difference in units comparable to ours)",
            paper_setup="Llama-style 1.4B / 7B and GPT-2-style 124M-700M on SlimPajama",
            ours=fmt("reweight"),
            our_setup=setup,
            control=f"burn-in: uniform weights for the first {data['reweight_burn_in']} steps (5%, the official "
            "1000 of 20k)"
            if "reweight_burn_in" in data
            else "none: this result predates the burn-in (reweighting from step 0)",
            verdict=lower("reweight"),
        ),
        Claim(
            claim="MEAP (15% masked inputs) is on par with next-token training on language modelling",
            paper="on par or better on commonsense reasoning (abstract)",
            paper_setup="1.1B TinyLlama-style, 20-60B tokens",
            ours=fmt("meap"),
            our_setup=setup,
            verdict=verdicts.at_most(meap_diff, 2 * meap_se, 0.01 * base),
        ),
        Claim(
            claim="MEAP improves in-context key-information retrieval over next-token training",
            paper="large gains on needle-in-a-haystack (abstract); SFT +11.77 pp on lost-in-the-middle "
            "(second-hand, from a summary of the paper)",
            paper_setup="1.1B pretraining; Llama-3-8B SFT",
            ours=f"held-out recall accuracy {mean_spread(recall['meap'])[0]:.3f} (MEAP) vs "
            f"{mean_spread(recall['ntp'])[0]:.3f} (NTP): {rdiff:+.3f} (se {rse:.3f})",
            our_setup=rsetup,
            control="MEAP masks 15% of each row's inputs but never the queried key, its value or the query "
            f"(the official batch-shared positions would hide one of them in {100 * hits:.0f}% of rows)"
            if hits
            else "none: this result predates the fix (batch-shared masks hid the evidence in ~40% of rows)",
            verdict=verdicts.INCONCLUSIVE if chance else verdicts.beats(rdiff, rse, 0.0),
        ),
    ]
    if "decomposition" in final:
        claims.append(
            Claim(
                claim="Dataset Decomposition (length buckets + curriculum) trains better at equal tokens",
                paper="reaches the baseline's accuracy up to 3x faster (abstract); no loss difference at equal "
                "tokens in comparable units",
                paper_setup="OpenLM 160M-1B, 8k context",
                ours=fmt("decomposition"),
                our_setup=setup,
                control="same tokens per step and steps as the baseline; long documents split with the official "
                "rule (equal token mass per bucket)"
                if "reweight_burn_in" in data
                else "predates the chunk-size fix: p ~ 2^k (about 1/5/19/75% of tokens in buckets 16..128)",
                verdict=lower("decomposition"),
            )
        )
    stats = {name: mean_spread(v) for name, v in final.items()}
    diffs = {name: compare(v, final["baseline"]) for name, v in final.items() if name != "baseline"}
    summary = (
        f"We trained the same small byte-level decoder ({setup}) with plain next-token training and with "
        "each training transform; final validation bits/byte (mean +- sample std over seeds): "
        + ", ".join(f"{n} {m:.4f} +- {s:.4f}" for n, (m, s) in stats.items())
        + "; paired by seed (same init and data order), the differences to the baseline are "
        + ", ".join(f"{n} {d:+.4f} (se {se:.4f})" for n, (d, se) in diffs.items())
        + f". Recall probe ({rsetup}): held-out accuracy NTP {mean_spread(recall['ntp'])[0]:.3f}, MEAP "
        f"{mean_spread(recall['meap'])[0]:.3f} (chance 0.1; paired difference {rdiff:+.3f}, se {rse:.3f}); "
        "MEAP's masks there avoid the positions the answer needs. A difference counts only beyond two "
        "standard errors (crude with this few seeds); none of the papers reports a loss difference in units "
        "comparable to ours, so these verdicts have no upper (implausibility) bound. The papers' "
        "claims are about 0.1-7B models, downstream accuracy and long-context retrieval after billions of "
        "tokens; our validation loss is the plain token mean, which reweighting (it changes the "
        "objective) and MEAP (it trains on masked inputs) do not optimise directly."
    )
    return claims, summary


def plot(curves: dict[str, dict[int, list]], recall_curves: dict[str, dict[int, list]]):
    fig, axes = figure(ncols=2)
    for ax, panel in zip(axes, (curves, recall_curves)):  # mean over seeds, band: min-max
        for name, by_seed in panel.items():
            steps = [s for s, _ in next(iter(by_seed.values()))]
            vals = np.array([[v for _, v in c] for c in by_seed.values()])
            ax.plot(steps, vals.mean(0), "o-", label=name)
            ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2)
    axes[0].set(title="validation bits/byte (band: min-max over seeds)", xlabel="step", ylabel="bits/byte")
    axes[0].legend(fontsize=8)
    axes[1].axhline(0.1, color="k", lw=0.8, ls="--", label="chance (1/10)")
    axes[1].set(title="associative recall, held-out accuracy", xlabel="step", ylabel="exact match")
    axes[1].legend(fontsize=8)
    return fig


def measure(args: argparse.Namespace) -> Report:
    enable_compilation_cache()
    size = QUICK if args.quick else FULL
    run_seeds = seeds(args, (0, 1) if args.quick else (0, 1, 2))
    workdir = os.path.join(args.workdir, "quick" if args.quick else "full")
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[int, list]] = {}
    final: dict[str, list[float]] = {}
    for variant in size["variants"]:
        for seed in run_seeds:
            cfg = lm_config(variant, seed, size, workdir)
            run(cfg)
            curve = [(r["step"], r["bits_per_byte"]) for r in logged(cfg, "eval")]
            curves.setdefault(variant, {})[seed] = curve
            final.setdefault(variant, []).append(curve[-1][1])
            rows += [
                {"part": "lm", "variant": variant, "seed": seed, "step": s, "bits_per_byte": v}
                for s, v in curve
            ]
            print(f"{variant:>14s} seed {seed}: {curve[-1][1]:.4f} bits/byte", flush=True)

    recall_steps = RECALL["quick_steps" if args.quick else "full_steps"]
    recall_seeds = run_seeds[:2]
    recall_curves: dict[str, dict[int, list]] = {}
    recall: dict[str, list[float]] = {}
    for name, rate in (("ntp", 0.0), ("meap", 0.15)):
        for seed in recall_seeds:
            curve = recall_run(rate, seed, recall_steps)
            recall_curves.setdefault(name, {})[seed] = curve
            recall.setdefault(name, []).append(curve[-1][1])
            rows += [
                {"part": "recall", "variant": name, "seed": seed, "step": s, "accuracy": a} for s, a in curve
            ]
            print(f"recall {name:>5s} seed {seed}: accuracy {curve[-1][1]:.3f}", flush=True)

    setup = (
        f"byte-level d={size['d_model']} {size['n_layers']}-layer decoder, {size['steps']} steps x 16 x 128 "
        f"bytes on the built-in corpus, seeds {run_seeds}"
    )
    rsetup = (
        f"2-layer d=64, {recall_steps} steps x {RECALL['batch']} rows of {RECALL['pairs']}-pair recall, "
        f"{RECALL['eval_rows']} held-out rows, seeds {recall_seeds}"
    )
    data = {
        "final_bits_per_byte": final,
        "final_recall_accuracy": recall,
        "setup": setup,
        "rsetup": rsetup,
        "reweight_burn_in": size["steps"] // 20,
        "shared_mask_hits": shared_mask_hits(
            associative_recall(RECALL["eval_rows"], RECALL["pairs"], seed=1), 0.15, np.random.default_rng(0)
        ),
    }
    claims, summary = derive({"data": data})
    return Report(
        rows=rows,
        claims=claims,
        summary=summary,
        fig=plot(curves, recall_curves),
        data=data,
    )


TINYLLAMA_1B = dict(d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4, d_ff=5632, tie_embeddings=False)
PAPER = PaperPreset(
    source="MEAP (Zhuang et al. 2025): 1.1B TinyLlama-style, 20B tokens, lr 4e-4; the other transforms on the "
    "same model and tokens (reweighting: burn-in 1000 steps; DD: buckets 256..2048)",
    model=TINYLLAMA_1B,
    arms={
        "baseline_1.1B": PaperArm({}, 1.1e9),
        "meap_1.1B": PaperArm({}, 1.1e9, baseline="baseline_1.1B", sections={"loss": {"meap_rate": 0.15}}),
        "reweight_1.1B": PaperArm(
            {},
            1.1e9,
            baseline="baseline_1.1B",
            sections={"loss": {"reweight": "linupper", "reweight_warmup_steps": 1000}},
        ),
        "decomposition_1.1B": PaperArm(
            {}, 1.1e9, baseline="baseline_1.1B", sections={"data": {"decomposition": True, "dd_min_log2": 8}}
        ),
    },
    seq_len=2048,
    batch_size=1024,
    tokens=20e9,
    lr=4e-4,
    corpus=SLIMPAJAMA,
    vocab_size=32001,  # + MEAP's [MASK]
    tokenizer_vocab=32000,
)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
