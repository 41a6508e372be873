"""Test setup: persistent compilation cache, float32 matmul precision, deterministic CPU."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

_CACHE = os.environ.get("ROCKET_TEST_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rocket", "jax_test_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_default_matmul_precision", "float32")
