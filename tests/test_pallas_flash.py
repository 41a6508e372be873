"""Flash attention kernels (softmax, softplus LSSA / LSSAR) vs the jnp reference, in interpret mode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.flash_attention import attention, attention_reference
from tests._pallas_helpers import assert_matches, rel_err, value_and_vjp

KINDS = [("softmax", None), ("softplus", None), ("softplus", 3.0)]
BLOCKS = dict(block_q=16, block_k=16)  # several tiles even at test sizes


def _qkv(key, b=2, t=37, s=37, h=4, kv=2, d=16, dtype=jnp.float32):
    kq, kk, kv_ = jax.random.split(key, 3)
    q = jax.random.normal(kq, (b, t, h, d), jnp.float32)
    k = jax.random.normal(kk, (b, s, kv, d), jnp.float32)
    v = jax.random.normal(kv_, (b, s, kv, d), jnp.float32)
    return tuple(x.astype(dtype) for x in (q, k, v))


@pytest.mark.parametrize("kind,power", KINDS)
def test_causal_packed_gqa_matches_reference_forward_and_gradients(kind, power):
    """Odd length (37: three 16-tiles, padded), GQA (4 query heads on 2 kv heads), causal + segments."""
    q, k, v = _qkv(jax.random.key(0))
    seg = jnp.array([[0] * 20 + [1] * 17, [0] * 5 + [1] * 30 + [2] * 2], jnp.int32)
    kw = dict(kind=kind, power=power, causal=True, segment_ids=seg)
    assert_matches(
        functools.partial(attention, **kw, **BLOCKS),
        functools.partial(attention_reference, **kw),
        (q, k, v),
        tol=2e-5,
    )


@pytest.mark.parametrize("kind,power", [("softmax", None), ("softplus", 3.0)])
def test_dense_mask_with_fully_masked_rows_cross_lengths(kind, power):
    """A dense [B, T, S] mask with T != S (a block against cache + itself); fully masked rows give
    the reference's defined value (uniform average for softmax, 0 for softplus), never NaN."""
    q, k, v = _qkv(jax.random.key(1), t=5, s=21, h=2, kv=1, d=24)  # D=24: features padded to 32
    mask = jax.random.bernoulli(jax.random.key(2), 0.6, (2, 5, 21))
    mask = mask.at[0, 3].set(False).at[1, 0].set(False)
    kw = dict(kind=kind, power=power, mask=mask)
    assert_matches(
        functools.partial(attention, **kw, **BLOCKS),
        functools.partial(attention_reference, **kw),
        (q, k, v),
        tol=2e-5,
    )
    out = attention(q, k, v, **kw, **BLOCKS)
    if kind == "softplus":
        np.testing.assert_array_equal(out[0, 3], 0.0)


def test_bfloat16_inputs_match_the_float32_reference():
    """bf16 in and out, float32 statistics: ~1e-2 of the float32 reference (outputs and gradients)."""
    q, k, v = _qkv(jax.random.key(3), t=24, s=24, dtype=jnp.bfloat16)
    up = lambda f: lambda *a: f(*(x.astype(jnp.float32) for x in a))
    for kind, power in [("softmax", None), ("softplus", 15.0)]:
        kw = dict(kind=kind, power=power, causal=True)
        (out, grads), (ref, ref_grads) = (
            value_and_vjp(f, (q, k, v), jax.random.key(7))
            for f in (
                functools.partial(attention, **kw, **BLOCKS),
                up(functools.partial(attention_reference, **kw)),
            )
        )
        assert out.dtype == jnp.bfloat16 and rel_err(out, ref) < 2e-2
        for g, r in zip(grads, ref_grads):
            assert g.dtype == jnp.bfloat16 and rel_err(g, r) < 3e-2


def test_bad_arguments_raise_clear_errors():
    q, k, v = _qkv(jax.random.key(5), t=4, s=4)
    with pytest.raises(ValueError, match="kind"):
        attention(q, k, v, kind="relu")
    with pytest.raises(ValueError, match="power"):
        attention(q, k, v, kind="softmax", power=2.0)
    with pytest.raises(ValueError, match="mask shape"):
        attention(q, k, v, mask=jnp.ones((2, 4, 5), bool))
    with pytest.raises(ValueError, match="divisible"):
        attention(q[:, :, :3], k, v)


@pytest.mark.slow
def test_tpu_lowering_under_the_tpu_interpreter():
    """The same kernels through the Mosaic TPU path, run by the TPU simulator (~200x slower)."""
    q, k, v = _qkv(jax.random.key(6), b=1, t=16, s=16, h=2, kv=1)
    for kind, power in KINDS:
        kw = dict(kind=kind, power=power, causal=True)
        assert_matches(
            functools.partial(attention, **kw, backend="tpu", interpret=True, **BLOCKS),
            functools.partial(attention_reference, **kw),
            (q, k, v),
            tol=2e-5,
        )
