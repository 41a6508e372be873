"""The causal + segment-id route of impl="pallas" training attention, and causal tile skipping.

Training without a cache or a user block mask reaches the flash kernel as `causal=True` plus
segment ids (no dense [B, T, S] mask), so the kernel skips key tiles above the diagonal. These
tests check that the route is taken exactly where the mask is causal AND same-segment, that the
model's loss and gradients equal the xla reference on a packed batch, and that the kernels
(forward, dq, dk/dv) really skip the tiles and give the unskipped (dense-mask) result.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pallas_kernels.flash_attention as flash
from rocket.config import override
from rocket.models import Transformer
from tests._pallas_helpers import assert_matches, rel_err
from tests.helpers import positions_for, tiny_model

BLOCKS = dict(block_q=16, block_k=16)


def _pallas(model: Transformer, params: dict) -> tuple[Transformer, dict]:
    """The same model and parameters with attention_impl="pallas" (initialised through xla: fast)."""
    return Transformer(override(model.cfg, {"attention.impl": "pallas"})), params


@pytest.fixture
def kernel_calls(monkeypatch):
    """Records (mask given, causal, segment ids given) of every flash-kernel call rocket makes."""
    calls = []
    real = flash.attention

    def spy(*args, mask=None, causal=False, segment_ids=None, **kw):
        calls.append((mask is not None, causal, segment_ids is not None))
        return real(*args, mask=mask, causal=causal, segment_ids=segment_ids, **kw)

    monkeypatch.setattr(flash, "attention", spy)
    return calls


@pytest.mark.parametrize(
    "kinds",
    [{}, {"attention": {"kind": "softplus", "softplus_power": 3.0}}],
    ids=["softmax", "softplus-lssar"],
)
def test_packed_training_loss_and_gradients_match_xla(kinds, kernel_calls):
    """Packed batch (3 documents, padding id 0): pallas logits, loss and d loss / d params equal the
    xla reference, and every layer's kernel got causal + segment ids and no dense mask."""
    xla_model, params = tiny_model(**kinds)
    pallas_model, _ = _pallas(xla_model, params)
    tokens = jax.random.randint(jax.random.key(1), (2, 19), 0, 258)
    segments = jnp.array([[1] * 7 + [2] * 12, [1] * 10 + [3] * 6 + [0] * 3], jnp.int32)

    def loss_and_grads(model):
        def loss(p):
            logits = model.apply(p, tokens, positions_for(tokens), segment_ids=segments)[0]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
            return jnp.sum(ce * (segments[:, 1:] != 0)) / jnp.sum(segments[:, 1:] != 0), logits

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (loss_p, logits_p), grads_p = loss_and_grads(pallas_model)
    assert kernel_calls == [(False, True, True)] * xla_model.cfg.n_layers
    (loss_x, logits_x), grads_x = loss_and_grads(xla_model)
    np.testing.assert_allclose(logits_p, logits_x, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(loss_p, loss_x, rtol=1e-6)
    for (path, g_x), g_p in zip(jax.tree_util.tree_flatten_with_path(grads_x)[0], jax.tree.leaves(grads_p)):
        assert rel_err(g_p, g_x) < 1e-4, f"{jax.tree_util.keystr(path)}: {rel_err(g_p, g_x):.2e}"


def test_route_is_taken_only_where_the_mask_is_causal_and_same_segment(kernel_calls):
    """Traced only (eval_shape, no compile): no segment ids -> still the route; a user block_mask
    -> the dense mask; a MoD layer (gathered tokens) keeps the dense mask, its plain layer does not."""
    model, params = _pallas(*tiny_model())
    tokens = jnp.zeros((1, 8), jnp.int32)
    apply = lambda m, **kw: jax.eval_shape(lambda: m.apply(params, tokens, positions_for(tokens), **kw))
    apply(model)
    assert kernel_calls == [(False, True, True)] * 2
    kernel_calls.clear()
    apply(model, block_mask=jnp.tril(jnp.ones((1, 8, 8), bool)))
    assert kernel_calls == [(True, False, False)] * 2

    mod_model, mod_params = _pallas(*tiny_model(mod=dict(pattern="dense,mod", capacity=0.5)))
    kernel_calls.clear()
    jax.eval_shape(lambda: mod_model.apply(mod_params, tokens, positions_for(tokens)))
    assert kernel_calls == [(False, True, True), (True, False, False)]


KINDS = [("softmax", None), ("softplus", None), ("softplus", 3.0)]


@pytest.mark.parametrize("kind,power", KINDS)
def test_causal_tile_skipping_equals_the_unskipped_dense_mask_computation(kind, power):
    """48 tokens in 3x3 tiles of 16, packed segments, GQA: causal=True (tiles above the diagonal
    skipped) vs the same visibility as a dense mask with causal=False (every tile visited, masked),
    forward and all three gradients, to float32 rounding."""
    kq, kk, kv = jax.random.split(jax.random.key(5), 3)
    q = jax.random.normal(kq, (2, 48, 4, 16))
    k, v = (jax.random.normal(key, (2, 48, 2, 16)) for key in (kk, kv))
    seg = jnp.array([[0] * 20 + [1] * 28, [0] * 33 + [1] * 15], jnp.int32)
    dense = jnp.tril(jnp.ones((48, 48), bool)) & (seg[:, :, None] == seg[:, None, :])
    kw = dict(kind=kind, power=power, **BLOCKS)
    assert_matches(
        functools.partial(flash.attention, **kw, causal=True, segment_ids=seg),
        functools.partial(flash.attention, **kw, mask=dense),
        (q, k, v),
        tol=1e-6,
    )


@pytest.mark.parametrize("kind,power", [("softmax", None), ("softplus", 3.0)])
def test_kernels_never_read_tiles_above_the_diagonal(kind, power):
    """NaN poisoning (2 tiles of 16): NaN keys/values in key tile 1 reach query tile 0 only if the
    forward or dq kernel visits that tile (a masked NaN tile still gives 0 * NaN = NaN in p v or
    dS k); NaN queries and cotangent on query tile 0 reach dk (dS^T q) / dv (P^T dO) of key
    tile 1 only if the dk/dv kernel visits that pair. The dense-mask path (which visits every tile) shows the poison does spread."""
    kq, kk, kv, kw_ = jax.random.split(jax.random.key(6), 4)
    q = jax.random.normal(kq, (1, 32, 2, 16))
    k, v = (jax.random.normal(key, (1, 32, 1, 16)) for key in (kk, kv))
    w = jax.random.normal(kw_, q.shape)
    k_bad, v_bad = (x.at[:, 16:].set(jnp.nan) for x in (k, v))
    q_bad, w_bad = (x.at[:, :16].set(jnp.nan) for x in (q, w))

    def probe(fn):  # out, dq of query tile 0 (poisoned key tile 1); dk, dv of key tile 1
        out, vjp = jax.vjp(fn, q, k_bad, v_bad)
        dq = vjp(w)[0]
        _, dk, dv = jax.vjp(fn, q_bad, k, v)[1](w_bad)
        return out[:, :16], dq[:, :16], dk[:, 16:], dv[:, 16:]

    kw = dict(kind=kind, power=power, **BLOCKS)
    skipped = jax.jit(probe, static_argnums=0)(functools.partial(flash.attention, **kw, causal=True))
    for name, x in zip(("out", "dq", "dk", "dv"), skipped):
        assert np.all(np.isfinite(x)), f"{name}: a tile above the diagonal was read"
    dense = jnp.tril(jnp.ones((1, 32, 32), bool))
    visited = jax.jit(probe, static_argnums=0)(functools.partial(flash.attention, **kw, mask=dense))
    for name, x in zip(("out", "dq", "dk", "dv"), visited):
        assert np.any(np.isnan(x)), f"{name}: the poison does not reach it even when the tile is read"
