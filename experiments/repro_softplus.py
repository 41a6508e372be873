"""Length extrapolation of softplus attention (LSSA / LSSAR) against softmax attention.

  python -m experiments.repro_softplus [--quick] [--seeds 0,1]

Gao & Spratling, arXiv 2501.13428. Byte-level models (d=64, 2 layers, RoPE, batch 16, cosine lr 3e-3)
trained at T=64 on the built-in corpus with the standard trainer: softmax, LSSA (softplus + L1
normalisation with the log d log N scale, no re-weighting) and LSSAR (re-weighting with p=3 during
training). The validation split is scored at 1x, 2x, 4x, 8x and 16x the training length (64 ... 1024
tokens per row, cut from the same
1024-token rows, so every length scores the same tokens), the LSSA model also with the training-free re-weighting switched on at evaluation
(p=3 and p=15: the same parameters, a config change). Measured: mean validation loss (nats/token) at
each length, and at 16x the loss by position (which part of the long context breaks).
Quick: 150 steps, seed 0, 8 rows of 1024 tokens, ~2 min; full: 600 steps, seeds 0,1, 32 rows of
1024 tokens, ~12 min (2-core CPU shared with other jobs, timings noisy).

The passkey task (rocket.data.synthetic.passkey) is not run: models trained on the corpus never saw a
pass key, so their zero-shot accuracy is 0 at every length; training on it needs a non-corpus training
loop and more steps than this budget.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments.lib import verdicts
from experiments.lib.cli import script_main, seeds
from experiments.lib.per_token import by_bucket, eval_batches, per_token
from experiments.lib.presets import FINEWEB, PaperArm, PaperPreset
from experiments.lib.results import Claim, Report, figure
from experiments.lib.runs import experiment, fresh_workdir, replace_model, restore_params, run
from experiments.lib.stats import spread

TITLE = "Softplus attention (LSSA / LSSAR): length extrapolation"
QUICK_HELP = "150 steps, one seed, 8 eval rows of 1024 tokens (full: 600 steps, seeds 0,1, 32 rows)"

TRAIN_LEN = 64
LENGTHS = (64, 128, 256, 512, 1024)
EDGES = [0, 64, 128, 256, 512, 1024]  # position buckets at 16x
TRAINED = {
    "softmax": {},
    "lssa": dict(
        attention=dict(kind="softplus"),
    ),
    "lssar3": dict(
        attention=dict(kind="softplus", softplus_power=3.0),
    ),
}
VARIANTS = {  # label -> (trained run, re-weighting power at evaluation)
    "softmax": ("softmax", None),
    "LSSA": ("lssa", None),
    "LSSA + p=3 at eval": ("lssa", 3.0),
    "LSSA + p=15 at eval": ("lssa", 15.0),
    "LSSAR p=3 (trained)": ("lssar3", 3.0),
}


def windows(batches: list[dict[str, np.ndarray]], n: int) -> list[dict[str, np.ndarray]]:
    """The rows of `batches` [B, T] that hold one contiguous document (positions 0..T-1), cut into rows of
    n tokens [B' * T / n, n] with positions 0..n-1: every evaluation length scores the very same tokens."""
    out = []
    for b in batches:
        whole = np.all(b["positions"] == np.arange(b["positions"].shape[1]), axis=1) & np.all(
            b["weights"] > 0, 1
        )
        rows = {k: v[whole].reshape(-1, n) for k, v in b.items()}
        rows["positions"] = np.broadcast_to(np.arange(n, dtype=b["positions"].dtype), rows["positions"].shape)
        out.append(rows)
    if not any(len(b["inputs"]) for b in out):
        raise ValueError("no evaluation row holds a single document")
    return [b for b in out if len(b["inputs"])]


def evaluate_seed(root: str, seed: int, steps: int, batches: dict) -> dict[str, dict[str, list[float]]]:
    """Trains the three models of one seed -> {variant: {"by_length": [...], "by_position": [...]}}."""
    common = dict(steps=steps, seq_len=TRAIN_LEN, max_seq_len=max(LENGTHS), seed=seed)
    cfgs = {name: experiment(f"{root}/{name}", **common, **kw) for name, kw in TRAINED.items()}
    for cfg in cfgs.values():
        run(cfg)
    params = {name: restore_params(cfg) for name, cfg in cfgs.items()}
    out = {}
    for label, (name, power) in VARIANTS.items():
        model = replace_model(cfgs[name], **{"attention.softplus_power": power}).model
        toks = {n: per_token(model, params[name], batches[n]) for n in LENGTHS}
        out[label] = {
            "by_length": [float(toks[n]["nats"].mean()) for n in LENGTHS],
            "by_position": by_bucket(toks[LENGTHS[-1]]["nats"], toks[LENGTHS[-1]]["position"], EDGES),
        }
    return out


def measure(args: argparse.Namespace) -> Report:
    steps, n_eval = (150, 1) if args.quick else (600, 4)
    run_seeds = seeds(args, [0] if args.quick else [0, 1])
    text = eval_batches(max(LENGTHS), n_eval)
    batches = {n: windows(text, n) for n in LENGTHS}
    res = {}
    for seed in run_seeds:
        res[seed] = evaluate_seed(fresh_workdir(f"{args.workdir}/seed{seed}"), seed, steps, batches)

    rows = [
        dict(model=label, seed=seed, eval_len=n, x_train_len=n // TRAIN_LEN, val_loss=loss)
        for seed in run_seeds
        for label in VARIANTS
        for n, loss in zip(LENGTHS, res[seed][label]["by_length"])
    ]
    by_len = {
        label: np.array([res[s][label]["by_length"] for s in run_seeds]) for label in VARIANTS
    }  # [S, L]
    by_pos = {label: np.array([res[s][label]["by_position"] for s in run_seeds]) for label in VARIANTS}

    fig, axes = figure(ncols=2)
    for label in VARIANTS:
        m, sd = by_len[label].mean(0), by_len[label].std(0)
        axes[0].errorbar(LENGTHS, m, yerr=sd, marker="o", ms=4, capsize=3, label=label)
        mids = [(lo + hi) / 2 for lo, hi in zip(EDGES[:-1], EDGES[1:])]
        axes[1].errorbar(mids, by_pos[label].mean(0), yerr=by_pos[label].std(0), marker="o", ms=4, capsize=3)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_ylabel("validation loss (nats/token)")
        ax.axvline(TRAIN_LEN, color="k", lw=0.8, ls=":")
    axes[0].set_xlabel("evaluation length (tokens per row)")
    axes[0].set_title(f"trained at T={TRAIN_LEN}: loss vs eval length")
    axes[1].set_xlabel("position in a 1024-token row (bucket)")
    axes[1].set_title("at 16x: loss by position")
    axes[0].legend(fontsize=8)

    data = {
        "lengths": list(LENGTHS),
        "position_edges": EDGES,
        "steps": steps,
        **{f"seed{s}": res[s] for s in run_seeds},
    }
    claims, summary = derive({"rows": rows, "data": data, "mode": "quick" if args.quick else "full"})
    return Report(rows=rows, claims=claims, summary=summary, fig=fig, data=data)


# the paper's losses (second-hand, from a summary of the paper's table: 1K -> 8K, trained at 1K)
PAPER_GROWTH_8X = {"softmax": 6.28 - 3.19, "LSSA": 5.94 - 3.19, "LSSAR": 3.32 - 3.19}


def derive(record: dict) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored per-seed losses (results.json)."""
    data = record["data"]
    run_seeds = sorted(int(k[4:]) for k in data if k.startswith("seed"))
    by_len = {
        label: np.array([data[f"seed{s}"][label]["by_length"] for s in run_seeds]) for label in VARIANTS
    }
    steps = data.get("steps", 150 if record.get("mode") == "quick" else 600)

    def growth(label: str, i: int) -> list[float]:  # loss at LENGTHS[i] minus loss at the training length
        return list(by_len[label][:, i] - by_len[label][:, 0])

    i8, i16 = LENGTHS.index(8 * TRAIN_LEN), LENGTHS.index(16 * TRAIN_LEN)
    lssar = "LSSAR p=3 (trained)"  # fixed in advance: the trained re-weighting, not the best of the three
    noise = max(
        max(float(v[:, i16].std(ddof=1)) if len(run_seeds) > 1 else 0.0 for v in by_len.values()), 0.02
    )
    g_soft, g_lssa, g_best = (float(np.mean(growth(k, i16))) for k in ("softmax", "LSSA", lssar))
    g8 = {k: float(np.mean(growth(k, i8))) for k in ("softmax", "LSSA", lssar)}
    setup = f"byte-level stdlib corpus, d=64, 2 layers, RoPE, trained at T={TRAIN_LEN} for {steps} steps, seeds {run_seeds}"
    flat = g_best < 0.25 and g_best < g_soft - 2 * noise
    paper_lssar = PAPER_GROWTH_8X["softmax"] - PAPER_GROWTH_8X["LSSAR"]
    paper_lssa = PAPER_GROWTH_8X["softmax"] - PAPER_GROWTH_8X["LSSA"]
    if verdicts.implausible(g8["softmax"] - g8[lssar], noise, paper_lssar):
        lssar_verdict = verdicts.IMPLAUSIBLE
    else:
        lssar_verdict = (
            verdicts.REPRODUCED
            if flat
            else (verdicts.PARTLY if g_best < g_soft - 2 * noise else verdicts.NOT)
        )
    source = "(second-hand, from a summary of the paper's length table)"
    claims = [
        Claim(
            claim="With re-weighting (LSSAR) validation loss stays nearly flat far beyond the training length; softmax's climbs",
            paper=f"LSSAR p=15: 3.19 at 1K -> 3.32 at 8K; softmax 3.19 -> 6.28 {source}",
            paper_setup="GPT-2 124M + RoPE, FineWeb, trained at T=1024",
            ours=f"loss(8x) - loss(1x): {lssar} {spread(growth(lssar, i8))}, softmax {spread(growth('softmax', i8))}; "
            f"at 16x: {spread(growth(lssar, i16))} vs {spread(growth('softmax', i16))}",
            our_setup=setup,
            control="every length scores the same tokens; the scored variant (the trained LSSAR p=3) is fixed "
            "in advance, not picked among the three re-weighted variants on the scored loss",
            verdict=lssar_verdict,
        ),
        Claim(
            claim="LSSA alone (no re-weighting) extrapolates somewhat better than softmax",
            paper=f"8K loss 5.94 (LSSA) vs 6.28 (softmax) {source}",
            paper_setup="GPT-2 124M + RoPE, FineWeb, trained at T=1024",
            ours=f"loss(8x) - loss(1x): LSSA {spread(growth('LSSA', i8))}, softmax {spread(growth('softmax', i8))}; "
            f"16x: {spread(growth('LSSA', i16))} vs {spread(growth('softmax', i16))}",
            our_setup=setup,
            verdict=verdicts.beats(g8["softmax"] - g8["LSSA"], 0.0, 2 * noise, paper=paper_lssa),
        ),
        Claim(
            claim="The re-weighting works training-free: switched on at evaluation of an LSSA-trained model",
            paper="'fine-tuning-free' re-weighting (paper v2; no number quoted here); p=3 best at 1K, p=15 at 8K",
            paper_setup="GPT-2 124M + RoPE, FineWeb",
            ours=f"16x loss: LSSA {spread(list(by_len['LSSA'][:, i16]))}, +p=3 {spread(list(by_len['LSSA + p=3 at eval'][:, i16]))}, "
            f"+p=15 {spread(list(by_len['LSSA + p=15 at eval'][:, i16]))}",
            our_setup=setup,
            control="p=15 (the paper's setting for long contexts) decides, fixed in advance; p=3 is shown",
            verdict=verdicts.beats(
                by_len["LSSA"][:, i16].mean() - by_len["LSSA + p=15 at eval"][:, i16].mean(), 0.0, 2 * noise
            ),
        ),
    ]
    table = "; ".join(f"{k} {', '.join(f'{v:.2f}' for v in by_len[k].mean(0))}" for k in VARIANTS)
    summary = (
        f"We trained byte-level softmax, LSSA and LSSAR (p=3) models at T={TRAIN_LEN} ({steps} steps, seeds "
        f"{run_seeds}) and scored the validation split at {', '.join(f'{n // TRAIN_LEN}x' for n in LENGTHS)} the "
        f"training length (mean loss at each: {table}). Softmax's loss grows by {g_soft:+.2f} nats at 16x, LSSA's "
        f"by {g_lssa:+.2f} and the trained re-weighting ({lssar}, fixed in advance) by {g_best:+.2f}. The paper reports LSSAR "
        "(p=15) nearly flat up to 8x-16x at GPT-2-small scale (3.19 -> 3.32 at 8K vs softmax 6.28, second-hand); "
        "ours is a 2-layer, 64-dim model after a few hundred steps, where a loss that does not grow (or falls, "
        "since longer context helps) with length is the extrapolation signal."
    )
    return claims, summary


GPT2_124M = dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_ff=2048)
PAPER = PaperPreset(
    source="Gao & Spratling 2025: GPT-2 small (124M) + RoPE, FineWeb-10B, 18,865 steps at T=1024 (second-hand); "
    "the run compares the training-length loss, the length sweep is the CPU path's evaluation",
    model=GPT2_124M,
    arms={
        "softmax_124M": PaperArm({}, 124e6),
        "lssar15_124M": PaperArm(
            {"attention.kind": "softplus", "attention.softplus_power": 15.0}, 124e6, baseline="softmax_124M"
        ),
    },
    seq_len=1024,
    batch_size=528,
    tokens=10.2e9,
    lr=6e-4,
    corpus=FINEWEB,
    vocab_size=50304,
)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
