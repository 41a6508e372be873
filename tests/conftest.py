"""Test setup: CPU only, the persistent compilation cache on (inherited by subprocesses through the
environment), float32 matmul precision.

XLA's default (optimised) codegen stays on in the test processes: LLVM -O0
(`tests.helpers.FAST_COMPILE`) compiles whole-model programs ~3x faster but runs them ~4x slower,
which costs the sampling-heavy law tests more than it saves (measured: tests/test_self_spec_law.py
108 -> 195 s CPU). Compile-bound subprocesses (notebook kernels, parallel workers, CLIs) use it.
"""

import os

_CACHE = os.environ.get(
    "ROCKET_TEST_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rocket", "jax_test_cache")
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "float32")

import jax  # noqa: E402

assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"]
