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

from experiments.lib.cli import repro_main, seeds
from experiments.lib.per_token import by_bucket, eval_batches, per_token
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

    std_plain, lex_plain = (
        res["plain"]["standard"]["nats"],
        res["plain"]["lexinvariant"]["nats"],
    )  # [draws, buckets+1]
    std_ciph, lex_ciph = res["cipher"]["standard"]["nats"], res["cipher"]["lexinvariant"]["nats"]
    ratio_first, ratio_last = (np.exp(lex_plain[:, i] - std_plain[:, i]) for i in (0, len(EDGES) - 2))
    d_std, d_lex = std_ciph[:, -1] - std_plain[:, -1], lex_ciph[:, -1] - lex_plain[:, -1]
    draw_sd = float(np.sqrt(lex_plain[:, -1].var(ddof=1) + lex_ciph[:, -1].var(ddof=1)))
    setup = f"byte-level stdlib corpus, d=64, 2 layers, T={T}, {steps} steps, {draws} draws of E"
    closes = ratio_last.mean() < ratio_first.mean() / 2
    claims = [
        Claim(
            claim="The lexinvariant LM's perplexity gap to a standard LM closes with context",
            paper="gap 9x at the start of context -> within 2x after 512 tokens",
            paper_setup="150M, character-level, the Pile, T=512+",
            ours=f"ppl ratio {spread(list(ratio_first), 1)} at positions [0,{EDGES[1]}) -> "
            f"{spread(list(ratio_last), 2)} at [{EDGES[-2]},{EDGES[-1]})",
            our_setup=setup,
            verdict="reproduced"
            if closes and ratio_last.mean() < 2
            else ("partly" if closes else "not reproduced"),
        ),
        Claim(
            claim="Under a substitution cipher the standard LM collapses, the lexinvariant LM is unchanged",
            paper="in-context deciphering (probe recovers the mapping ~99.6%)",
            paper_setup="150M, character-level, the Pile",
            ours=f"loss change cipher - plain: standard {spread(list(d_std), 2)}, lexinvariant {spread(list(d_lex), 3)} "
            f"(draw noise sd {draw_sd:.3f})",
            our_setup=setup + ", full byte permutation",
            verdict="reproduced"
            if d_std.mean() > 1.0 and abs(d_lex.mean()) < 3 * draw_sd + 0.01
            else "not reproduced",
        ),
    ]
    summary = (
        f"We trained a standard and a lexinvariant byte-level LM (T={T}, {steps} steps) and scored the validation "
        f"split by context position over {draws} draws of the lexinvariant embeddings. Plain text: overall loss "
        f"standard {std_plain[0, -1]:.3f}, lexinvariant {spread(list(lex_plain[:, -1]))}; the lexinvariant "
        f"model's perplexity is {ratio_first.mean():.1f}x the standard one at positions [0,{EDGES[1]}) and "
        f"{ratio_last.mean():.2f}x at [{EDGES[-2]},{EDGES[-1]}) (paper: 9x -> under 2x after 512 tokens, 150M model "
        f"on the Pile). Under a random permutation of all 256 byte ids the standard LM's loss rises by "
        f"{d_std.mean():.2f} nats (top-1 accuracy {res['plain']['standard']['correct'][0, -1]:.2f} -> "
        f"{res['cipher']['standard']['correct'][:, -1].mean():.2f}) while the lexinvariant LM's changes by "
        f"{d_lex.mean():+.3f} (draw noise sd {draw_sd:.3f}): it deciphers in context as well as it reads plain "
        "text. Small model and short training: the absolute gap is larger than the paper's."
    )
    data = {
        "position_edges": EDGES,
        **{f"{t}_{n}_{m}": res[t][n][m] for t in res for n in MODELS for m in ("nats", "correct")},
    }
    return Report(rows=rows, claims=claims, summary=summary, fig=fig, data=data)


def main(argv: list[str] | None = None) -> None:
    repro_main("lexinvariant", __doc__, title=TITLE, quick_help=QUICK_HELP, measure=measure, argv=argv)


if __name__ == "__main__":
    main()
