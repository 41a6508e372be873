"""Shared plumbing for rocket's Pallas kernels: backend choice, interpret mode, padding.

Every kernel in this package is written once, in a portable subset of Pallas (BlockSpecs over a
grid, `lax.fori_loop` over tiles inside the kernel, whole-tile `ref[...]` loads, no masked loads),
so the same body lowers through

  * the Triton backend on GPU (`jax.experimental.pallas.triton`; supported in jax 0.10, deprecated
    but present in 0.11), with `num_warps` / `num_stages` compiler parameters, and
  * Mosaic TPU, with the grid dimensions marked "parallel".

Ragged lengths are handled by padding to the tile size in the wrapper (padded keys are masked out
by the kernels), never by masked loads. On CPU every kernel runs in interpret mode: `interpret=True`
is the generic discharge interpreter (fast enough for tests), and backend "tpu" under
interpretation uses `pltpu.InterpretParams()`, the TPU-faithful simulator (~200x slower).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

try:  # the Triton backend is deprecated in jax >= 0.11 and may disappear
    from jax.experimental.pallas import triton as plgpu
except ImportError:  # pragma: no cover - depends on the jax version
    plgpu = None

BACKENDS = ("auto", "triton", "tpu")


def default_interpret() -> bool:
    """Kernels must be interpreted on CPU (there is no CPU lowering)."""
    return jax.default_backend() == "cpu"


def resolve_backend(backend: str) -> str:
    """'auto' -> 'tpu' on TPU, else 'triton' (GPU, or the generic interpreter on CPU)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Pallas backend {backend!r}; available: {BACKENDS}")
    if backend == "auto":
        return "tpu" if jax.default_backend() == "tpu" else "triton"
    return backend


def call_options(backend: str, interpret: bool | None, n_grid: int, num_warps: int = 4) -> dict[str, Any]:
    """`interpret` and `compiler_params` keyword arguments of `pl.pallas_call` for a backend."""
    backend = resolve_backend(backend)
    interpret = default_interpret() if interpret is None else interpret
    if backend == "tpu":
        opts: dict[str, Any] = {
            "compiler_params": pltpu.CompilerParams(dimension_semantics=("parallel",) * n_grid)
        }
        if interpret:
            opts["interpret"] = pltpu.InterpretParams()
        return opts
    if interpret:
        return {"interpret": True}
    if plgpu is None:  # pragma: no cover - depends on the jax version
        raise RuntimeError("the Pallas Triton backend is not available in this jax; use backend='tpu' or XLA")
    return {"compiler_params": plgpu.CompilerParams(num_warps=num_warps, num_stages=2)}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_to(x: jax.Array, axis: int, size: int, value: Any = 0) -> jax.Array:
    """Pad `axis` of x at the end up to `size` with a constant."""
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def tile_size(n: int, block: int, minimum: int = 16) -> int:
    """The tile for an axis of length n: `block`, or n rounded up to a power of two >= minimum when
    n is shorter (Triton needs power-of-two tiles; `jnp.dot` in Triton needs >= 16)."""
    if n >= block:
        return block
    size = minimum
    while size < n:
        size *= 2
    return size


def feature_size(d: int, backend: str) -> int:
    """The padded width of a feature (last) axis that kernels take whole: Triton needs a power of
    two >= 16 (zero features change no dot product); Mosaic TPU takes any full-axis block."""
    return d if backend == "tpu" else tile_size(d, 1 << 30)
