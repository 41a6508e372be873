"""Every kernel lowers (trace -> MLIR, no compile, no device needed) through the real GPU (Triton)
and TPU (Mosaic) Pallas backends: catches primitives or block shapes a backend cannot take, which
interpret mode never sees. Numerics are covered by the interpret-mode tests."""

import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.flash_attention import attention
from pallas_kernels.pattention import pattention
from pallas_kernels.verify_attention import verify_attention


def _lowers(fn, *args, platform: str) -> None:
    jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,))


def _grad(fn):
    return jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32)), argnums=(0, 1, 2))


@pytest.mark.parametrize("platform,backend", [("cuda", "triton"), ("tpu", "tpu")])
def test_kernels_lower_for_gpu_and_tpu(platform, backend):
    opts = dict(backend=backend, interpret=False)
    q, k = jnp.ones((1, 256, 4, 64), jnp.bfloat16), jnp.ones((1, 256, 2, 64), jnp.bfloat16)
    mask = jnp.ones((1, 256, 256), bool)
    for kind, power in [("softmax", None), ("softplus", 15.0)]:
        flash = functools.partial(attention, kind=kind, power=power, causal=True, **opts)
        _lowers(_grad(flash), q, k, k, platform=platform)
    _lowers(
        _grad(functools.partial(attention, kind="softplus", mask=mask, **opts)), q, k, k, platform=platform
    )
    x, k_p = jnp.ones((256, 128), jnp.bfloat16), jnp.ones((512, 128), jnp.bfloat16)
    for norm in ("l2_norm_gelu", "softmax"):
        _lowers(
            _grad(functools.partial(pattention, tau=4.0, norm=norm, **opts)), x, k_p, k_p, platform=platform
        )
    cache, blk, q_blk = jnp.ones((1, 1024, 2, 64)), jnp.ones((1, 8, 2, 64)), jnp.ones((1, 8, 4, 64))
    verify = functools.partial(verify_attention, kind="softplus", power=15.0, **opts)
    _lowers(
        verify, q_blk, cache, cache, jnp.array([500]), blk, blk, jnp.ones((1, 8, 8), bool), platform=platform
    )
