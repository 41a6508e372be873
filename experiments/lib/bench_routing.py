"""Dense vs MoD vs MoR at the same width and depth (`experiments.bench_routing`,
`experiments.bench_device`): their configs, jitted forward / train-step closures on a random batch,
and greedy decoding closures.

  dense  L layers
  mod    MoD, capacity 0.125 on every other layer (Raposo et al.'s setting), raw gate
  mor    MoR expert-choice, middle-cycle sharing, N_r = 2 (capacities 1, 1/2)
"""

from __future__ import annotations

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


def time_vs_flops(seqs: list[int], d: int, layers: int, batch: int, dtype: str, reps: int) -> list[dict]:
    """Per sequence length and model: best-of-`reps` forward (top-k) and train-step seconds, timed
    round-robin (`interleaved`), their ratios to dense, the analytic FLOP ratio and time/FLOP
    (1.0 = the FLOP savings are fully realised). Prints the table; returns its rows."""
    rows = []
    header = f"{'seq':>5} {'model':>6} {'fwd ms':>8} {'fwd x':>6} {'train ms':>9} {'train x':>7} {'flop x':>6} {'time/flop (fwd, train)':>24}"
    print(header)
    for seq in seqs:
        cfgs = configs(d, layers, seq, dtype)
        fns = {
            (name, kind): fn for name, cfg in cfgs.items() for kind, fn in train_fns(cfg, seq, batch).items()
        }
        t = interleaved(fns, reps)
        flops = {name: flops_per_token(cfg, seq, training=False) for name, cfg in cfgs.items()}
        for name in cfgs:
            fx, tx = t[name, "fwd"] / t["dense", "fwd"], t[name, "train"] / t["dense", "train"]
            flx = flops[name] / flops["dense"]
            print(
                f"{seq:>5} {name:>6} {t[name, 'fwd'] * 1e3:>8.1f} {fx:>6.3f} {t[name, 'train'] * 1e3:>9.1f} "
                f"{tx:>7.3f} {flx:>6.3f} {fx / flx:>11.3f} {tx / flx:>11.3f}",
                flush=True,
            )
            rows.append(
                {
                    "seq": seq,
                    "model": name,
                    "fwd_s": t[name, "fwd"],
                    "train_s": t[name, "train"],
                    "flop_x": flx,
                    "fwd_time_per_flop": fx / flx,
                    "train_time_per_flop": tx / flx,
                }
            )
    return rows
