"""Tiny shared fixtures for the tests (models stay at d <= 128, 2 layers, seq <= 128)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rocket.config import ModelConfig, override
from rocket.models import Transformer

TINY = dict(vocab_size=258, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)

# XLA_FLAGS for compile-bound child processes (few steps of tiny models): LLVM's cheapest codegen
# compiles a whole-model program ~3x faster (a tiny Transformer's jitted init: 7.2 -> 2.1 s CPU)
# but runs it ~4x slower, so it is not for sampling-heavy tests. Same HLO, no fast-math.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_compile_flags(xla_flags: str = "") -> str:
    """`xla_flags` plus `FAST_COMPILE`, unless it already sets a backend optimisation level."""
    if "--xla_backend_optimization_level" in xla_flags:
        return xla_flags
    return f"{xla_flags} {FAST_COMPILE}".strip()


def tiny_cfg(**changes) -> ModelConfig:
    """`TINY` with `changes` applied by `rocket.config.override` (a section may be given as a dict of
    the fields it changes: `tiny_cfg(mod=dict(pattern="dense,mod"))`)."""
    return override(ModelConfig(**TINY), changes)


def tiny_model(**changes) -> tuple[Transformer, dict]:
    cfg = tiny_cfg(**changes)
    model = Transformer(cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = model.init(jax.random.key(0), tokens, jnp.zeros_like(tokens))
    return model, params


def positions_for(tokens: jax.Array) -> jax.Array:
    b, t = tokens.shape
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))


def assert_cached_decoding_matches(
    model, params, tokens, chunk_sizes, full, *, max_len, atol=1e-4, **apply_kw
):
    """Feeds `tokens` [B, T] through a fresh KV cache in blocks of `chunk_sizes` (summing to T),
    committing each block, and asserts every block's logits equal `full` (the cache-free forward).

    This is block-consistency: what prefill + steps, speculative verification and every cached
    decoder rely on. Runs with routing="causal"; `apply_kw` goes to every call (e.g. rngs).
    Returns (cache, jitted step) so callers can inspect lengths and the compile count.
    """
    from rocket.decode import commit_block, new_cache

    if sum(chunk_sizes) != tokens.shape[1]:
        raise ValueError(f"chunk sizes {chunk_sizes} do not cover T={tokens.shape[1]}")
    step = jax.jit(lambda c, tok, pos: model.apply(params, tok, pos, cache=c, routing="causal", **apply_kw))
    cache, start = new_cache(model, tokens.shape[0], max_len), 0
    for size in chunk_sizes:
        block = slice(start, start + size)
        logits, aux = step(cache, tokens[:, block], positions_for(tokens)[:, block])
        cache = commit_block(cache, aux["new_kv"], size)
        np.testing.assert_allclose(logits, full[:, block], atol=atol, err_msg=f"block at {start}")
        start += size
    return cache, step


def save_tiny_run(workdir) -> None:
    """A one-checkpoint training run of the `TINY` model in `workdir`, written the way rocket.train
    writes it (step 1, fresh params, the config in the checkpoint's meta)."""
    from rocket.config import DataConfig, ExperimentConfig, TrainConfig, to_dict
    from rocket.train.checkpoint import Checkpointer
    from rocket.train.loop import Trainer

    cfg = ExperimentConfig(
        model=ModelConfig(**TINY),
        data=DataConfig(seq_len=32, batch_size=2),
        train=TrainConfig(workdir=str(workdir), steps=1),
    )
    with Checkpointer(str(workdir / "checkpoints"), async_save=False) as ckpt:
        ckpt.save(1, Trainer.build(cfg).init(0), data_state=None, meta={"config": to_dict(cfg)})
        ckpt.wait()
