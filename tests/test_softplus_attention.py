"""Softplus attention (LSSA) and its re-weighting (LSSAR): math, stability, masks, config switch."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.config import ConfigError, override
from rocket.layers import attention_fn, make_block_mask
from rocket.layers.softplus import softplus_attention, softplus_weights
from rocket.models import Transformer
from tests.helpers import positions_for, tiny_cfg, tiny_model


def _qkv(t, s=None, h=4, kv=2, d=16, seed=0, dtype=jnp.float32):
    s = t if s is None else s
    kq, kk, kv_ = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (2, t, h, d)).astype(dtype)
    return (
        q,
        jax.random.normal(kk, (2, s, kv, d)).astype(dtype),
        jax.random.normal(kv_, (2, s, kv, d)).astype(dtype),
    )


def _causal(t, b=2):
    return jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))


def _reference(q, k, v, mask, power=None, offset=True):
    """Row-by-row float64 transcription of the paper's formulas (no max trick: fine at small N)."""
    q, k, v, mask = (np.asarray(x, np.float64) for x in (q, k, v, mask))
    b, t, h, d = q.shape
    g = h // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                m = mask[bi, ti]
                n = m.sum()
                qh = q[bi, ti, hi] / np.linalg.norm(q[bi, ti, hi])
                kh = k[bi, :, hi // g] / np.linalg.norm(k[bi, :, hi // g], axis=-1, keepdims=True)
                s = math.log(d) * math.log(max(n, 1)) * (kh @ qh)
                a = np.log1p(np.exp(s)) * m
                w = a / (a.sum() + 1e-6)
                if power is not None:
                    o = 1.0 if (offset and n > 3) else 0.0
                    w = np.maximum(n * w - o, 0) ** power * m
                    w = w / (w.sum() + 1e-6 * w.max()) if w.max() > 0 else w
                out[bi, ti, hi] = w @ v[bi, :, hi // g]
    return out


@pytest.mark.parametrize("power", [None, 3.0, 15.0])
def test_matches_a_plain_reference_with_gqa_and_masks(power):
    q, k, v = _qkv(12)
    seg = jnp.array([[1] * 5 + [2] * 7, [1] * 12])
    mask = make_block_mask(seg, None, 12, 2)
    out = attention_fn(q, k, v, mask, kind="softplus", power=power)
    np.testing.assert_allclose(out, _reference(q, k, v, mask, power), atol=2e-5, rtol=1e-4)


def test_rows_sum_to_one_and_the_first_row_is_finite_with_finite_gradients():
    q, k, v = _qkv(16)
    mask = _causal(16)
    cos = jax.random.uniform(jax.random.key(1), (2, 2, 2, 16, 16), minval=-1.0, maxval=1.0)  # [B,K,G,T,S]
    for power in (None, 15.0):
        w = softplus_weights(cos, mask, 16, power)
        np.testing.assert_allclose(jnp.sum(w, -1), 1.0, atol=1e-5)
        assert float(jnp.abs(w * ~mask[:, None, None]).max()) == 0.0  # masked keys get exactly 0
        np.testing.assert_allclose(w[..., 0, 0], 1.0, atol=1e-5)  # N = 1: log 1 = 0, S = 0, no NaN
    grads = jax.grad(lambda q: jnp.sum(softplus_attention(q, k, v, mask, power=15.0) ** 2))(q)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_power_one_without_offset_is_plain_lssa_and_the_offset_only_touches_long_rows():
    q, k, v = _qkv(10)
    mask = _causal(10)
    lssa = softplus_attention(q, k, v, mask)
    np.testing.assert_allclose(softplus_attention(q, k, v, mask, power=1.0, offset=False), lssa, atol=1e-5)
    with_offset = softplus_attention(q, k, v, mask, power=1.0)
    np.testing.assert_allclose(with_offset[:, :3], lssa[:, :3], atol=1e-5)  # rows with N <= 3: O = 0
    assert float(jnp.abs(with_offset[:, 3:] - lssa[:, 3:]).min()) > 1e-4  # O = 1 sharpens the others


def test_a_row_at_the_uniform_level_gives_zero_output_not_nan():
    q, _, v = _qkv(8, h=2, kv=2)
    k = jnp.ones((2, 8, 2, 16))  # every key identical: Ā is uniform, N Ā - 1 <= 0 everywhere
    out = softplus_attention(q, k, v, _causal(8), power=3.0)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[:, 4:], 0.0, atol=1e-6)  # rows with N > 3 (offset 1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_finite_at_16x_the_training_length_with_concentrated_rows(dtype):
    t = 16 * 128
    q, k, v = _qkv(t, h=2, kv=1, d=16, dtype=dtype)
    k = k.at[:, ::7].set(jnp.repeat(q[:, ::7, :1], 1, axis=2))  # some keys align with queries: peaked rows
    out = attention_fn(q, k, v, _causal(t), kind="softplus", power=15.0)
    assert out.dtype == dtype and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


def test_packing_counts_only_the_document_keys_and_the_cache_counts_committed_keys():
    q, k, v = _qkv(12, seed=1)
    seg = jnp.array([[1] * 5 + [2] * 7] * 2)
    packed = attention_fn(q, k, v, make_block_mask(seg, None, 12, 2), kind="softplus", power=3.0)
    alone = attention_fn(q[:, 5:], k[:, 5:], v[:, 5:], _causal(7), kind="softplus", power=3.0)
    np.testing.assert_allclose(packed[:, 5:], alone, atol=1e-6)
    # A query block over cache + block keys equals the same rows of the full computation.
    full = attention_fn(q, k, v, _causal(12), kind="softplus", power=3.0)
    cache_mask = jnp.concatenate([jnp.ones((2, 4, 8), bool), _causal(4)], axis=2)
    block = attention_fn(q[:, 8:], k, v, cache_mask, kind="softplus", power=3.0)
    np.testing.assert_allclose(block, full[:, 8:], atol=1e-6)


def test_reweighting_switches_on_at_inference_without_new_params():
    model, params = tiny_model(attention=dict(kind="softplus"))
    tokens = jax.random.randint(jax.random.key(0), (1, 24), 0, 258)
    base, _ = model.apply(params, tokens, positions_for(tokens))
    sharp = Transformer(override(model.cfg, {"attention.softplus_power": 15.0}))
    out, _ = sharp.apply(params, tokens, positions_for(tokens))
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.abs(out - base).max()) > 1e-4
    off, _ = Transformer(override(model.cfg, {"attention.softplus_power": None})).apply(
        params, tokens, positions_for(tokens)
    )
    chex.assert_trees_all_equal(off, base)


def test_bad_kinds_and_powers_are_rejected():
    q, k, v = _qkv(4)
    with pytest.raises(ValueError, match="attention kind"):
        attention_fn(q, k, v, _causal(4), kind="linear")
    with pytest.raises(ValueError, match="power"):
        attention_fn(q, k, v, _causal(4), kind="softplus", power=0.0)
    with pytest.raises(ValueError, match="softplus"):
        attention_fn(q, k, v, _causal(4), power=2.0)
    with pytest.raises(ConfigError, match="'model.attention.softplus_power'"):
        tiny_cfg(attention=dict(kind="softplus", softplus_power=-1.0))
    with pytest.raises(ConfigError, match="'model.attention.softplus_power'"):
        tiny_cfg(**{"attention.softplus_power": 2.0})  # softmax attention has no re-weighting
    with pytest.raises(ConfigError, match="'model.attention.kind'"):
        tiny_cfg(**{"attention.kind": "sigmoid"})
