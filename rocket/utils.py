"""Small process-level helpers."""

from __future__ import annotations

import os

import jax


def enable_compilation_cache(path: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache (default ~/.cache/rocket/jax, or $ROCKET_JAX_CACHE).

    A second run of the same config then skips most XLA compilation (~5 s per jitted function on CPU).
    """
    path = (
        path
        or os.environ.get("ROCKET_JAX_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "rocket", "jax")
    )
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
