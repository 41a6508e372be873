"""Shared checks for the Pallas kernel tests: compare a kernel with its jnp reference, forward and
VJP, on fresh random inputs, with one jit compile per side."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def rel_err(a: jax.Array, b: jax.Array) -> float:
    """||a - b|| / ||b|| in float64 (NaN never passes)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)), "non-finite values in the kernel's result"
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def value_and_vjp(fn: Callable, args: tuple, cotangent_key: jax.Array):
    """(fn(*args), grads of <fn(*args), w> for a random w), computed under one jit."""

    def run(*args):
        out, vjp = jax.vjp(fn, *args)
        w = jax.random.normal(cotangent_key, out.shape, jnp.float32).astype(out.dtype)
        return out, vjp(w)

    return jax.jit(run)(*args)


def assert_matches(
    kernel_fn: Callable, reference_fn: Callable, args: tuple, *, tol: float, grads: bool = True
):
    """The kernel's output (and VJP) match the reference's to a relative error of `tol`."""
    key = jax.random.key(123)
    if grads:
        (out, g_kernel), (ref, g_ref) = (
            value_and_vjp(kernel_fn, args, key),
            value_and_vjp(reference_fn, args, key),
        )
        for i, (a, b) in enumerate(zip(g_kernel, g_ref)):
            assert rel_err(a, b) < tol, f"gradient of argument {i}: relative error {rel_err(a, b):.2e}"
    else:
        out, ref = jax.jit(kernel_fn)(*args), jax.jit(reference_fn)(*args)
    assert out.dtype == ref.dtype
    assert rel_err(out, ref) < tol, f"output: relative error {rel_err(out, ref):.2e}"
