"""Fused Pattention kernels vs the jnp reference (all three norms), in interpret mode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.pattention import NORMS, pattention, pattention_reference
from tests._pallas_helpers import assert_matches, rel_err, value_and_vjp

BLOCKS = dict(block_m=16, block_n=16)


def _operands(key, lead=(2, 13), n=40, d_in=24, d_out=20, dtype=jnp.float32):
    kx, kk, kv = jax.random.split(key, 3)
    x = jax.random.normal(kx, (*lead, d_in), jnp.float32)
    k_p = jax.random.normal(kk, (n, d_in), jnp.float32) * 0.5
    v_p = jax.random.normal(kv, (n, d_out), jnp.float32)
    return tuple(a.astype(dtype) for a in (x, k_p, v_p))


@pytest.mark.parametrize(
    "norm", [pytest.param(n, marks=pytest.mark.slow) if n == "gelu_l2_norm" else n for n in NORMS]
)
def test_matches_reference_forward_and_gradients(norm):
    """Ragged sizes everywhere: 26 tokens, n = 40 parameter tokens (16-tiles), d_in 24, d_out 20."""
    args = _operands(jax.random.key(0))
    kw = dict(tau=np.sqrt(40.0), norm=norm)
    assert_matches(
        functools.partial(pattention, **kw, **BLOCKS),
        functools.partial(pattention_reference, **kw),
        args,
        tol=2e-5,
    )


@pytest.mark.slow
def test_zero_key_growth_is_neutral_with_pinned_tau():
    """TokenFormer growth: appending zero keys (any values) with tau pinned to the old n leaves the
    output unchanged (GeLU(0) = 0 and the row norm is unchanged)."""
    x, k_p, v_p = _operands(jax.random.key(1), lead=(5,), n=16)
    grown_k = jnp.concatenate([k_p, jnp.zeros((8, k_p.shape[1]))])
    grown_v = jnp.concatenate([v_p, jax.random.normal(jax.random.key(2), (8, v_p.shape[1]))])
    fn = jax.jit(functools.partial(pattention, tau=4.0, **BLOCKS))
    np.testing.assert_allclose(fn(x, grown_k, grown_v), fn(x, k_p, v_p), rtol=1e-5, atol=1e-6)


def test_bfloat16_matches_the_float32_reference():
    args = _operands(jax.random.key(3), dtype=jnp.bfloat16)
    kw = dict(tau=np.sqrt(40.0), norm="l2_norm_gelu")
    up = lambda *a: pattention_reference(*(x.astype(jnp.float32) for x in a), **kw)
    (out, grads), (ref, ref_grads) = (
        value_and_vjp(f, args, jax.random.key(4)) for f in (functools.partial(pattention, **kw, **BLOCKS), up)
    )
    assert out.dtype == jnp.bfloat16 and rel_err(out, ref) < 2e-2
    for g, r in zip(grads, ref_grads):
        assert g.dtype == jnp.bfloat16 and rel_err(g, r) < 3e-2


def test_bad_arguments_raise_clear_errors():
    x, k_p, v_p = _operands(jax.random.key(5))
    with pytest.raises(ValueError, match="norm"):
        pattention(x, k_p, v_p, tau=1.0, norm="l1")
    with pytest.raises(ValueError, match="shapes"):
        pattention(x, k_p[:, :5], v_p, tau=1.0)


@pytest.mark.slow
def test_tpu_lowering_under_the_tpu_interpreter():
    args = _operands(jax.random.key(6), lead=(16,), n=16, d_in=16, d_out=16)
    for norm in NORMS:
        kw = dict(tau=4.0, norm=norm)
        assert_matches(
            functools.partial(pattention, **kw, backend="tpu", interpret=True, **BLOCKS),
            functools.partial(pattention_reference, **kw),
            args,
            tol=2e-5,
        )
