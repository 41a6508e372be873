"""Causal query blocks (`rocket.layers.attention.causal_query_blocks`): the XLA path's causal
skipping computes the same attention as the full masked T x T form, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rocket.layers.attention as attention
from rocket.layers import make_block_mask
from rocket.layers.attention import attention_fn, causal_query_blocks
from tests.helpers import positions_for, tiny_model

B, T, D_H = 2, 37, 8  # T not divisible by the number of blocks: uneven bounds


def _qkv(heads: int, kv_heads: int):
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    return (
        jax.random.normal(kq, (B, T, heads, D_H)),
        jax.random.normal(kk, (B, T, kv_heads, D_H)),
        jax.random.normal(kv, (B, T, kv_heads, D_H)),
    )


@pytest.mark.parametrize(
    "kind, power, heads, kv_heads",
    [("softmax", None, 4, 4), ("softmax", None, 4, 2), ("softplus", None, 4, 2), ("softplus", 2.0, 2, 2)],
)
def test_blocks_match_full_attention_and_grads(kind, power, heads, kv_heads):
    """Two packed documents per row: blocked == full masked attention, and so are d/dq, d/dk, d/dv."""
    ids_bt = jnp.asarray(np.where(np.arange(T) < 15, 1, 2)[None].repeat(B, 0), jnp.int32)
    mask_btt = make_block_mask(ids_bt, None, T, B)
    fn = attention.ATTENTION_KINDS.get(kind)
    q, k, v = _qkv(heads, kv_heads)
    w = jax.random.normal(jax.random.key(1), (B, T, heads, D_H))

    def loss(blocked, q, k, v):
        if blocked:
            out = causal_query_blocks(fn, q, k, v, mask_btt, power=power, block=8)
        else:
            out = fn(q, k, v, mask_btt, power=power)
        return jnp.sum(out * w), out

    grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True), static_argnums=0)
    (_, full), g_full = grad(False, q, k, v)
    (_, blocked), g_blocked = grad(True, q, k, v)
    np.testing.assert_allclose(blocked, full, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_blocked, g_full, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    routed = attention_fn(q, k, v, mask_btt, kind=kind, power=power, causal_segment_ids_bt=ids_bt)
    np.testing.assert_allclose(routed, full, rtol=1e-5, atol=1e-6)  # attention_fn takes the blocked path


MOR_EC = dict(n_layers=4, mor=dict(sharing="middle_cycle", recursions=2))
PLAIN = dict(n_layers=4, mor=dict(sharing="middle_cycle", recursions=2, router="none"))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="dense"),
        pytest.param(MOR_EC, id="mor_expert", marks=pytest.mark.slow),
        pytest.param(PLAIN, id="mor_plain", marks=pytest.mark.slow),
    ],
)
def test_model_forward_and_grads_unchanged(monkeypatch, changes):
    """Models that pass causal segment ids on (dense layers; MoR's edge layers and top-k
    recursions, over sorted gathers) with 16-query blocks == unblocked, on two packed documents
    and a padded tail (segment 0, which top-k routing may gather when few tokens are valid)."""
    model, params = tiny_model(**changes)
    tokens = jax.random.randint(jax.random.key(2), (2, 64), 0, 258)
    segs = jnp.asarray(np.select([np.arange(64) < 30, np.arange(64) < 52], [1, 2], 0)[None].repeat(2, 0))

    def loss(p):
        logits, _ = model.apply(p, tokens, positions_for(tokens), segment_ids=segs)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1)), logits

    monkeypatch.setattr(attention, "CAUSAL_QUERY_BLOCK", 10**9)  # one block: the full T x T form
    (_, full), g_full = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    monkeypatch.setattr(attention, "CAUSAL_QUERY_BLOCK", 16)  # read at trace time: a fresh jit
    (_, blocked), g_blocked = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    np.testing.assert_allclose(blocked, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_blocked), jax.tree.leaves(g_full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
