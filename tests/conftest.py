"""Test setup: CPU only, the persistent compilation cache on, fast XLA codegen, float32 matmul
precision; all inherited by subprocesses (CLIs, notebook kernels, parallel workers) through the
environment.

Compiling dominates the suite's time (tiny models, many distinct programs), and most of an XLA:CPU
compile of a jitted program is LLVM's optimisation: `FAST_COMPILE` (LLVM -O0, no expensive passes)
cuts it ~3x for whole-model programs (measured: jit of a tiny Transformer's init 7.2 -> 2.1 s CPU).
The HLO passes and the programs are unchanged and neither setting allows fast-math; set XLA_FLAGS
with an explicit `--xla_backend_optimization_level` to test optimised codegen instead.
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
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402

assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"]
