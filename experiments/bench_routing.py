"""Do MoD and MoR turn their FLOP savings into time? Dense vs MoD vs MoR at the same width, one run.

  python -m experiments.bench_routing [--seqs 256,512,1024,2048] [--d 256] [--layers 8] [--batch 1]
                                      [--reps 3] [--decode-tokens 64] [--dtype float32] [--smoke]

Models (same d, same number of layer applications L):
  dense  L layers
  mod    MoD, capacity 0.125 on every other layer (Raposo et al.'s setting), raw gate
  mor    MoR expert-choice, middle-cycle sharing, N_r = 2 (capacities 1, 1/2)

For each sequence length it prints the best-of-reps forward (top-k routing) and train-step times, the
measured time ratio to dense next to the analytic FLOP ratio (`flops_per_token`), and their
quotient "time/flop" (1.0 = the savings are fully realised; the goal is <= 1.15 at seq >= 1024).
Then greedy decoding tokens/s of dense vs MoD (causal routing, batch 1, the same prompt and cache
length; prefill excluded). Batches are random tokens; times are best-of-reps wall clock after one
compile, the models taking turns (robust to background load; `experiments.lib.bench_timing`).
`--smoke` runs tiny sizes in seconds (the test suite's check that the script runs).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from experiments.lib.bench_timing import interleaved
from rocket.config import ModConfig, ModelConfig, MoRConfig
from rocket.data import random_batch
from rocket.decode import ModelStep, generate
from rocket.models import Transformer, flops_per_token
from rocket.train.step import init_state, make_train_step


def configs(d: int, layers: int, seq: int, dtype: str) -> dict[str, ModelConfig]:
    base = dict(
        d_model=d,
        n_layers=layers,
        n_heads=max(1, d // 64),
        n_kv_heads=max(1, d // 128),
        max_seq_len=seq,
        dtype=dtype,
    )
    return {
        "dense": ModelConfig(**base),
        "mod": ModelConfig(
            **base,
            mod=ModConfig(pattern="dense,mod", capacity=0.125),
        ),
        "mor": ModelConfig(
            **base,
            mor=MoRConfig(sharing="middle_cycle", recursions=2),
        ),
    }


def train_fns(cfg: ModelConfig, seq: int, batch_size: int) -> dict[str, Callable[[], Any]]:
    """The jitted top-k forward and train step of `cfg` on a fixed random batch."""
    model = Transformer(cfg)
    tx = optax.adamw(1e-3)
    state = init_state(model, tx, jax.random.key(0), seq)
    batch = {k: jnp.asarray(v) for k, v in random_batch(batch_size, seq, cfg.vocab_size).items()}
    fwd = jax.jit(lambda p, b: model.apply({"params": p}, b["inputs"], b["positions"])[0])
    step = jax.jit(make_train_step(model, tx))
    rng = jax.random.key(1)
    return {"fwd": lambda: fwd(state.params, batch), "train": lambda: step(state, batch, rng)[1]["loss"]}


def decode_fn(cfg: ModelConfig, prompt_len: int, n: int) -> Callable[[], Any]:
    """Greedy batch-1 generation of n tokens after a random prompt (causal routing)."""
    model = Transformer(cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = model.init(jax.random.key(0), tokens, tokens)
    prompt = jax.random.randint(jax.random.key(2), (1, prompt_len), 0, cfg.vocab_size)
    step = ModelStep(model, params)
    return lambda: generate(step, prompt, jnp.array([prompt_len]), jax.random.key(0), max_new_tokens=n).tokens


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", default="256,512,1024,2048")
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (the test suite's check)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seqs, args.d, args.layers, args.batch, args.reps, args.decode_tokens = "32", 64, 4, 1, 1, 4
    print(
        f"device: {jax.devices()[0].device_kind}; d={args.d} L={args.layers} batch={args.batch} {args.dtype}"
    )
    header = f"{'seq':>5} {'model':>6} {'fwd ms':>8} {'fwd x':>6} {'train ms':>9} {'train x':>7} {'flop x':>6} {'time/flop (fwd, train)':>24}"
    print(header)
    for seq in [int(s) for s in args.seqs.split(",")]:
        cfgs = configs(args.d, args.layers, seq, args.dtype)
        fns = {
            (name, kind): fn
            for name, cfg in cfgs.items()
            for kind, fn in train_fns(cfg, seq, args.batch).items()
        }
        t = interleaved(fns, args.reps)
        flops = {name: flops_per_token(cfg, seq, training=False) for name, cfg in cfgs.items()}
        for name in cfgs:
            fx, tx = t[name, "fwd"] / t["dense", "fwd"], t[name, "train"] / t["dense", "train"]
            flx = flops[name] / flops["dense"]
            print(
                f"{seq:>5} {name:>6} {t[name, 'fwd'] * 1e3:>8.1f} {fx:>6.3f} {t[name, 'train'] * 1e3:>9.1f} "
                f"{tx:>7.3f} {flx:>6.3f} {fx / flx:>11.3f} {tx / flx:>11.3f}",
                flush=True,
            )
    if args.decode_tokens:
        prompt_len, n = (8 if args.smoke else 64), args.decode_tokens
        cfgs = configs(args.d, args.layers, prompt_len + n, args.dtype)
        fns = {(name, m): decode_fn(cfgs[name], prompt_len, m) for name in ("dense", "mod") for m in (1, n)}
        t = interleaved(fns, args.reps)
        tok_s = {name: (n - 1) / (t[name, n] - t[name, 1]) for name in ("dense", "mod")}  # prefill excluded
        print(
            f"decode (batch 1, prompt {prompt_len}, {n} new tokens, causal routing, untrained routers): "
            f"dense {tok_s['dense']:.1f} tok/s, mod {tok_s['mod']:.1f} tok/s; mod/dense {tok_s['mod'] / tok_s['dense']:.3f}"
        )


if __name__ == "__main__":
    main()
