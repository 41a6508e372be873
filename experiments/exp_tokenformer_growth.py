"""TokenFormer incremental scaling on the built-in corpus: train small, grow, train on.

  python -m experiments.exp_tokenformer_growth [--quick] [--workdir runs/exp_tokenformer]

Four runs of the standard trainer (byte-level, d=64, 2 layers, T=128, batch 16):
  small    TokenFormer with n = d = 64 tokens per projection (n_ffn = 256), S1 steps;
  grown    `grow_checkpoint` of `small` to n = 128 (n_ffn = 512: 2x the parameters), then resumed by
           `rocket.train` for S2 more steps (cosine schedule over S1 + S2);
  scratch  the grown size trained from scratch for S2 steps (= the grown run's extra compute);
  cont     `small` resumed for S2 more steps without growing (same schedule as `grown`).
Prints the validation loss of each, the FLOPs they spent, and |logits(grown) - logits(small)| at the
moment of growth (function preservation; should be ~1e-6).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil

import jax
import numpy as np

from experiments.common import eval_batches, experiment, per_token, restore_params, run
from rocket.models import flops_per_token, param_count
from rocket.models.tokenformer import grow_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 + 100 steps instead of 400 + 400")
    ap.add_argument("--workdir", default="runs/exp_tokenformer")
    args = ap.parse_args()
    s1, s2 = (100, 100) if args.quick else (400, 400)
    root = os.path.abspath(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    tf = dict(projection="pattention", n_param_tokens=64)

    small = experiment(f"{root}/small", steps=s1, **tf)
    loss_small = run(small)

    grown = grow_checkpoint(small.train.workdir, small, f"{root}/grown", 128)
    grown = dataclasses.replace(grown, train=dataclasses.replace(grown.train, steps=s1 + s2))
    batches = eval_batches(128, 2)
    before = per_token(small.model, restore_params(small), batches)["nats"]
    at_growth = per_token(grown.model, restore_params(grown), batches)["nats"]
    loss_grown = run(grown)

    scratch = experiment(f"{root}/scratch", steps=s2, projection="pattention", n_param_tokens=128)
    loss_scratch = run(scratch)

    cont = dataclasses.replace(
        small, train=dataclasses.replace(small.train, steps=s1 + s2, workdir=f"{root}/cont")
    )
    shutil.copytree(f"{root}/small/checkpoints", f"{root}/cont/checkpoints")
    loss_cont = run(cont)

    tokens_per_step = small.data.batch_size * small.data.seq_len
    f_small = flops_per_token(small.model, small.data.seq_len) * tokens_per_step
    f_big = flops_per_token(grown.model, small.data.seq_len) * tokens_per_step
    print(f"\nTokenFormer growth, byte-level stdlib corpus, T=128, batch 16; S1={s1}, S2={s2} steps")
    print(f"max |nats(grown at growth) - nats(small)| = {float(np.abs(at_growth - before).max()):.2e}")
    print(f"{'run':<9} {'params':>8} {'steps':>11} {'train TFLOP':>12} {'val loss':>9}")
    rows = [
        ("small", small, f"{s1}", s1 * f_small, loss_small),
        ("grown", grown, f"{s1}+{s2}", s1 * f_small + s2 * f_big, loss_grown),
        ("scratch", scratch, f"{s2}", s2 * f_big, loss_scratch),
        ("cont", cont, f"{s1}+{s2}", (s1 + s2) * f_small, loss_cont),
    ]
    for name, cfg, steps, flops, loss in rows:
        print(
            f"{name:<9} {param_count(cfg.model) / 1e3:>7.0f}k {steps:>11} {flops / 1e12:>12.2f} {loss:>9.4f}"
        )
    print(f"grown - scratch at equal extra compute: {loss_grown - loss_scratch:+.4f} nats/token")
    jax.clear_caches()


if __name__ == "__main__":
    main()
