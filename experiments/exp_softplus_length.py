"""Length extrapolation of softplus attention (LSSA / LSSAR) against softmax on the built-in corpus.

  python -m experiments.exp_softplus_length [--quick] [--workdir runs/exp_softplus]

Trains byte-level models (d=64, 2 layers, RoPE) at T=64 with the standard trainer: softmax, LSSA
(softplus, no re-weighting) and LSSAR (re-weighting p=3 during training). Evaluates the validation
split at 1x, 4x and 16x the training length (64, 256, 1024 tokens per row), the LSSA model also with
the training-free re-weighting switched on at inference (p=3 and p=15: the same parameters, a
config change). Prints the mean loss (nats/token) at each length and, at 16x, the loss of the tokens
at positions >= 256 (the part of the context that lies beyond 4x the training length).
"""

from __future__ import annotations

import argparse
import os
import shutil

from experiments.common import (
    by_bucket,
    eval_batches,
    experiment,
    per_token,
    replace_model,
    restore_params,
    run,
)

TRAIN_LEN = 64
LENGTHS = (64, 256, 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="150 training steps (default 500) and 1 eval batch per length (3)",
    )
    ap.add_argument("--workdir", default="runs/exp_softplus")
    args = ap.parse_args()
    steps, n_eval = (150, 1) if args.quick else (500, 3)
    root = os.path.abspath(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    common = dict(steps=steps, seq_len=TRAIN_LEN, max_seq_len=max(LENGTHS))
    trained = {
        "softmax": experiment(f"{root}/softmax", **common),
        "lssa": experiment(f"{root}/lssa", attention="softplus", **common),
        "lssar3": experiment(f"{root}/lssar3", attention="softplus", softplus_power=3.0, **common),
    }
    val = {name: run(cfg) for name, cfg in trained.items()}
    params = {name: restore_params(cfg) for name, cfg in trained.items()}
    batches = {n: eval_batches(n, n_eval) for n in LENGTHS}
    variants = [
        ("softmax", "softmax", None),
        ("LSSA", "lssa", None),
        ("LSSA + p=3 at eval", "lssa", 3.0),
        ("LSSA + p=15 at eval", "lssa", 15.0),
        ("LSSAR p=3 (trained)", "lssar3", 3.0),
    ]
    print(
        f"\nSoftplus attention length extrapolation: trained at T={TRAIN_LEN} for {steps} steps (byte-level)"
    )
    print("train-length validation loss of the runs:", {k: round(v, 4) for k, v in val.items()})
    header = "".join(f"{f'{n // TRAIN_LEN}x ({n})':>13}" for n in LENGTHS)
    print(f"{'model':<22}{header}{'16x pos>=256':>14}")
    for label, name, power in variants:
        cfg = trained[name].model
        if power != cfg.softplus_power:
            cfg = replace_model(trained[name], softplus_power=power).model
        cells, tail = [], float("nan")
        for n in LENGTHS:
            tok = per_token(cfg, params[name], batches[n])
            cells.append(float(tok["nats"].mean()))
            if n == max(LENGTHS):
                tail = by_bucket(tok["nats"], tok["position"], [256, n])[0]
        print(f"{label:<22}" + "".join(f"{c:>13.4f}" for c in cells) + f"{tail:>14.4f}")


if __name__ == "__main__":
    main()
