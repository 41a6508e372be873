"""Lexinvariant vs standard LM: loss by context position, and a substitution cipher of the eval text.

  python -m experiments.repro_lexinvariant [--quick] [--seeds 0]

Huang et al., arXiv 2305.16349. Two byte-level models (d=64, 2 layers, T=256, batch 8, cosine lr 3e-3)
trained with the standard trainer for the same number of steps on the built-in corpus: a standard LM
(learned tied embeddings) and a lexinvariant LM (a fresh Gaussian embedding matrix E per document,
scored by the same matrix). On the validation split we measure, per position bucket of the context:
  * loss (nats/token) on plain text; the lexinvariant model over several draws of E (mean, spread);
  * loss and top-1 next-token accuracy on the same text under a random permutation of all 256 byte
    ids (BOS and padding kept; a fresh permutation per draw). Predicting the next ciphertext byte is
    deciphering in context. We permute the whole byte vocabulary (the paper's invariance statement;
    `rocket.data.synthetic.substitution_cipher` permutes only letters and keeps code's punctuation and
    spaces, a milder test): the standard LM's lexicon no longer applies, a lexinvariant model sees a
    vocabulary permutation, to which it is invariant in distribution.
Quick: 200 steps, 2 eval batches of 8 rows, 3 draws, ~2 min; full: 1000 steps, 4 eval batches, 5 draws,
~8 min (2-core CPU shared with other jobs, timings noisy).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from experiments.lib import verdicts
from experiments.lib.cli import script_main, seeds
from experiments.lib.per_token import by_bucket, eval_batches, per_token
from experiments.lib.presets import PILE, PaperArm, PaperPreset
from experiments.lib.results import Claim, Report, figure
from experiments.lib.runs import experiment, fresh_workdir, restore_params, run
from experiments.lib.stats import spread

TITLE = "Lexinvariant language models: context position and substitution cipher"
QUICK_HELP = "200 steps, 2 eval batches, 3 draws (full: 1000 steps, 4, 5)"

T = 256
EDGES = [0, 4, 16, 64, 128, 256]
MODELS = ("standard", "lexinvariant")


def byte_cipher(seed: int, vocab_size: int = 258) -> np.ndarray:
    """A random permutation [V] of the 256 byte ids (2..257); BOS (0) and padding (1) stay fixed."""
    perm = np.arange(vocab_size)
    perm[2:] = 2 + np.random.default_rng(seed).permutation(vocab_size - 2)
    return perm


def measure(args: argparse.Namespace) -> Report:
    steps, n_eval, draws = (200, 2, 3) if args.quick else (1000, 4, 5)
    run_seeds = seeds(args, [0])
    if len(run_seeds) != 1:
        raise SystemExit(
            f"error: one training seed (the spread is over draws of E), got --seeds {args.seeds}"
        )
    seed = run_seeds[0]
    root = fresh_workdir(args.workdir)
    common = dict(steps=steps, seq_len=T, batch_size=8, seed=seed)
    cfgs = {
        "standard": experiment(f"{root}/standard", **common),
        "lexinvariant": experiment(f"{root}/lexinvariant", embedding=dict(kind="lexinvariant"), **common),
    }
    for cfg in cfgs.values():
        run(cfg)
    params = {name: restore_params(cfg) for name, cfg in cfgs.items()}
    batches = eval_batches(T, n_eval)

    # res[text][model][metric]: [draws, buckets + 1 (all positions)]
    res: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for text in ("plain", "cipher"):
        res[text] = {}
        for name in MODELS:
            per_draw = []
            for d in range(draws):
                key = jax.random.key(1000 + d) if name == "lexinvariant" else None
                if (
                    key is None and text == "plain" and d > 0
                ):  # the standard LM on plain text is deterministic
                    per_draw.append(per_draw[0])
                    continue
                tok = per_token(
                    cfgs[name].model,
                    params[name],
                    batches,
                    key=key,
                    cipher=byte_cipher(d) if text == "cipher" else None,
                )
                per_draw.append(
                    {
                        m: by_bucket(tok[m], tok["position"], EDGES) + [float(tok[m].mean())]
                        for m in ("nats", "correct")
                    }
                )
            res[text][name] = {m: np.array([p[m] for p in per_draw]) for m in ("nats", "correct")}

    labels = [f"[{lo},{hi})" for lo, hi in zip(EDGES[:-1], EDGES[1:])] + ["all"]
    rows = [
        dict(
            model=name,
            text=text,
            seed=seed,
            draw=d,
            positions=label,
            loss=res[text][name]["nats"][d, i],
            top1=res[text][name]["correct"][d, i],
        )
        for text in res
        for name in MODELS
        for d in range(draws)
        for i, label in enumerate(labels)
    ]

    mids = [(lo + hi) / 2 for lo, hi in zip(EDGES[:-1], EDGES[1:])]
    fig, axes = figure(ncols=2)
    styles = {"standard": "tab:blue", "lexinvariant": "tab:red"}
    for name in MODELS:
        for text, ls in (("plain", "-"), ("cipher", "--")):
            for ax, metric in zip(axes, ("nats", "correct")):
                v = res[text][name][metric][:, :-1]  # [draws, buckets]
                ax.errorbar(
                    mids,
                    v.mean(0),
                    yerr=v.std(0),
                    color=styles[name],
                    ls=ls,
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=f"{name}, {text}",
                )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("position in the context (bucket midpoint)")
    axes[0].axhline(np.log(256), color="k", lw=0.8, ls=":", label="log 256")
    axes[0].set_ylabel("loss (nats/token)")
    axes[0].set_title(f"loss by position ({draws} draws of E / cipher)")
    axes[1].set_ylabel("top-1 next-token accuracy")
    axes[1].set_title("plain (solid) vs byte cipher (dashed)")
    axes[0].legend(fontsize=7)

    data = {
        "position_edges": EDGES,
        "steps": steps,
        **{f"{t}_{n}_{m}": res[t][n][m] for t in res for n in MODELS for m in ("nats", "correct")},
    }
    claims, summary = derive({"rows": rows, "data": data, "mode": "quick" if args.quick else "full"})
    return Report(rows=rows, claims=claims, summary=summary, fig=fig, data=data)


def derive(record: dict) -> tuple[list[Claim], str]:
    """The claims table and the summary from the stored per-draw, per-bucket numbers (results.json)."""
    data = record["data"]
    res = {
        t: {n: {m: np.asarray(data[f"{t}_{n}_{m}"]) for m in ("nats", "correct")} for n in MODELS}
        for t in ("plain", "cipher")
    }
    steps = data.get("steps", 200 if record.get("mode") == "quick" else 1000)
    std_plain, lex_plain = (
        res["plain"]["standard"]["nats"],
        res["plain"]["lexinvariant"]["nats"],
    )  # [draws, buckets+1]
    draws = lex_plain.shape[0]
    std_ciph, lex_ciph = res["cipher"]["standard"]["nats"], res["cipher"]["lexinvariant"]["nats"]
    ratio_first, ratio_last = (np.exp(lex_plain[:, i] - std_plain[:, i]) for i in (0, len(EDGES) - 2))
    d_std, d_lex = std_ciph[:, -1] - std_plain[:, -1], lex_ciph[:, -1] - lex_plain[:, -1]
    draw_sd = float(np.sqrt(lex_plain[:, -1].var(ddof=1) + lex_ciph[:, -1].var(ddof=1)))
    # in-context deciphering: top-1 accuracy on ciphertext by context position (first vs last bucket)
    acc_ciph, acc_std = res["cipher"]["lexinvariant"]["correct"], res["plain"]["standard"]["correct"]
    first, last = 0, len(EDGES) - 2
    rise = acc_ciph[:, last] - acc_ciph[:, first]
    gap_first = float(acc_std[:, first].mean() - acc_ciph[:, first].mean())
    gap_last = float(acc_std[:, last].mean() - acc_ciph[:, last].mean())
    setup = f"byte-level stdlib corpus, d=64, 2 layers, T={T}, {steps} steps, {draws} draws of E"
    closes = ratio_last.mean() < ratio_first.mean() / 2
    claims = [
        Claim(
            claim="The lexinvariant LM's perplexity gap to a standard LM closes with context",
            paper="gap 9x at the start of context -> within 2x after 512 tokens (abstract)",
            paper_setup="150M, character-level, the Pile, T=512+",
            ours=f"ppl ratio {spread(list(ratio_first), 1)} at positions [0,{EDGES[1]}) -> "
            f"{spread(list(ratio_last), 2)} at [{EDGES[-2]},{EDGES[-1]})",
            our_setup=setup,
            verdict=verdicts.REPRODUCED
            if closes and ratio_last.mean() < 2
            else (verdicts.PARTLY if closes else verdicts.NOT),
        ),
        Claim(
            claim="In-context deciphering: on ciphertext the lexinvariant LM's next-symbol accuracy rises with "
            "context and its gap to the standard LM on plain text closes",
            paper="in-context Bayesian deciphering; a probe recovers the mapping (~99.6%, second-hand) (abstract)",
            paper_setup="150M, character-level, the Pile",
            ours=f"lexinvariant top-1 on ciphertext {acc_ciph[:, first].mean():.3f} at [0,{EDGES[1]}) -> "
            f"{acc_ciph[:, last].mean():.3f} at [{EDGES[-2]},{EDGES[-1]}) ({spread(list(rise), 3)} over draws); "
            f"gap to the standard LM on plain text {gap_first:.3f} -> {gap_last:.3f}",
            our_setup=setup + ", full byte permutation",
            control="next-symbol accuracy, not the paper's linear probe of the mapping",
            verdict=verdicts.beats(float(rise.mean()), float(rise.std(ddof=1)) if draws > 1 else 0.0, 0.01)
            if gap_last < gap_first
            else verdicts.NOT,
        ),
        Claim(
            claim="sanity check: the lexinvariant LM's loss is unchanged under a vocabulary permutation "
            "(invariant by construction); the standard LM's collapses",
            paper="invariance by construction (the method's definition)",
            paper_setup="-",
            ours=f"loss change cipher - plain: standard {spread(list(d_std), 2)}, lexinvariant {spread(list(d_lex), 3)} "
            f"(draw noise sd {draw_sd:.3f})",
            our_setup=setup + ", full byte permutation",
            verdict=verdicts.REPRODUCED
            if d_std.mean() > 1.0 and abs(d_lex.mean()) < 3 * draw_sd + 0.01
            else verdicts.NOT,
        ),
    ]
    summary = (
        f"We trained a standard and a lexinvariant byte-level LM (T={T}, {steps} steps) and scored the validation "
        f"split by context position over {draws} draws of the lexinvariant embeddings. Plain text: overall loss "
        f"standard {std_plain[0, -1]:.3f}, lexinvariant {spread(list(lex_plain[:, -1]))}; the lexinvariant "
        f"model's perplexity is {ratio_first.mean():.1f}x the standard one at positions [0,{EDGES[1]}) and "
        f"{ratio_last.mean():.2f}x at [{EDGES[-2]},{EDGES[-1]}) (paper: 9x -> under 2x after 512 tokens, 150M model "
        f"on the Pile). On ciphertext (a random permutation of all 256 byte ids) the lexinvariant model's next-symbol "
        f"accuracy goes from {acc_ciph[:, first].mean():.3f} to {acc_ciph[:, last].mean():.3f} across the context, "
        f"against the standard LM's {acc_std[:, first].mean():.3f} -> {acc_std[:, last].mean():.3f} on plain text: "
        + (
            "the gap closes with context. "
            if gap_last < gap_first
            else "the gap does not close with context here. "
        )
        + f"That its loss is unchanged under the cipher ({d_lex.mean():+.3f} nats, draw noise sd {draw_sd:.3f}; the "
        f"standard LM's rises by {d_std.mean():.2f}) is a sanity check: the method is invariant by construction. "
        "Small model and short training: the absolute gap is larger than the paper's."
    )
    return claims, summary


LEX_150M = dict(d_model=1024, n_layers=12, n_heads=16, n_kv_heads=16, d_ff=2816)  # our shape for "150M"
PAPER = PaperPreset(
    source="Huang et al. 2023: 150M decoder, character-level vocabulary of 130, the Pile, 250K steps "
    "(second-hand; the batch, 128 x 512, and the shape, d=1024 x 12, are ours)",
    model=LEX_150M,
    arms={
        "standard_150M": PaperArm({}, 150e6),
        "lexinvariant_150M": PaperArm({"embedding.kind": "lexinvariant"}, 150e6, baseline="standard_150M"),
    },
    seq_len=512,
    batch_size=128,
    tokens=250e3 * 128 * 512,
    lr=3e-4,
    corpus=PILE,
    vocab_size=130,
)


def main(argv: list[str] | None = None) -> None:
    script_main(__name__, argv)


if __name__ == "__main__":
    main()
