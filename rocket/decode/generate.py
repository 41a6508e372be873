"""Simple KV-cache generation: one prefill of the (right-padded) prompts, then 1-token steps.

This is the minimal loop the quickstart sample needs, written on the shared interfaces (the model
step reads the cache and returns the block's K/V; the loop commits). The full decoding engine
(speculative methods, trees, stats) builds on the same `Cache` / `commit_block` / samplers.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.decode.cache import Cache, check_capacity, commit_block, init_cache
from rocket.decode.sampling import SamplerConfig, sample


def new_cache(model: nn.Module, batch: int, max_len: int) -> Cache:
    cfg = model.cfg
    return init_cache(
        cfg.cache_layers, batch, max_len, cfg.n_kv_heads, cfg.resolved_head_dim, jnp.dtype(cfg.dtype)
    )


def prefill(
    model: nn.Module, params: Any, prompt_bp: jax.Array, prompt_len_b: jax.Array, cache: Cache
) -> tuple[jax.Array, Cache]:
    """Runs the prompts through the model and commits their K/V.

    Returns the logits [B, V] at each row's last prompt token and the updated cache. Padding past
    prompt_len[b] is written but not committed (length advances by prompt_len[b]).
    """
    b, p = prompt_bp.shape
    positions_bp = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    logits_bpv, aux = model.apply(params, prompt_bp, positions_bp, cache=cache, routing="causal")
    cache = commit_block(cache, aux["new_kv"], prompt_len_b)
    last_bv = jnp.take_along_axis(logits_bpv, (prompt_len_b - 1)[:, None, None], axis=1)[:, 0]
    return last_bv, cache


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "sampler", "eos_id"))
def generate(
    model: nn.Module,
    params: Any,
    prompt_bp: jax.Array,
    prompt_len_b: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    sampler: SamplerConfig = SamplerConfig(greedy=True),
    eos_id: int | None = None,
) -> jax.Array:
    """Samples `max_new_tokens` tokens after each prompt -> tokens [B, max_new_tokens].

    prompt[B, P] is right-padded; prompt_len[B] >= 1 gives each row's real length. Rows that emit
    `eos_id` keep emitting it. Token 0 comes from the prefill's logits; each `lax.while_loop` step
    feeds the previous token through the model (reading, then committing to, the cache) and samples
    the next, so there are exactly `max_new_tokens - 1` single-token forward passes.
    """
    b, p = prompt_bp.shape
    if p + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(
            f"prompt length {p} + max_new_tokens {max_new_tokens} exceeds the model's max_seq_len "
            f"{model.cfg.max_seq_len}"
        )
    cache = new_cache(model, b, p + max_new_tokens)
    check_capacity(cache, p + max_new_tokens)
    logits_bv, cache = prefill(model, params, prompt_bp, prompt_len_b, cache)

    def pick(i, logits_bv, done_b):
        tok_b = sample(jax.random.fold_in(key, i), logits_bv, sampler)
        if eos_id is not None:
            tok_b = jnp.where(done_b, eos_id, tok_b)
            done_b = done_b | (tok_b == eos_id)
        return tok_b, done_b

    def body(state):
        i, cache, out_bn, done_b = state  # tokens [0, i) are in out; token i - 1 is not yet in the cache
        prev_b1 = out_bn[:, i - 1][:, None]
        logits_b1v, aux = model.apply(
            params, prev_b1, (prompt_len_b + i - 1)[:, None], cache=cache, routing="causal"
        )
        cache = commit_block(cache, aux["new_kv"], 1)
        tok_b, done_b = pick(i, logits_b1v[:, 0], done_b)
        return i + 1, cache, out_bn.at[:, i].set(tok_b), done_b

    def cond(state):
        i, *_, done_b = state
        return (i < max_new_tokens) & ~jnp.all(done_b)

    tok_b, done_b = pick(0, logits_bv, jnp.zeros((b,), bool))
    out_bn = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(tok_b)
    _, _, out_bn, done_b = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, out_bn, done_b))
    if eos_id is not None:  # rows that stopped early: fill the unwritten tail with EOS
        out_bn = jnp.where(jnp.cumsum(out_bn == eos_id, axis=1) > 0, eos_id, out_bn)
    return out_bn
