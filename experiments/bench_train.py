"""Training-step throughput of the dense baseline at a few sizes, side by side in one run.

  python -m experiments.bench_train [--sizes tiny,small,base] [--steps 10] [--dtype bfloat16] [--smoke]

Prints, per size: parameters, model FLOPs/token, compile time, median step time, tokens/s,
achieved TFLOP/s and MFU (from `flops_per_token` and the device's peak; "n/a" where the peak is
unknown, e.g. CPUs, unless ROCKET_PEAK_FLOPS is set). Batches are synthetic (the data pipeline is
not on the critical path); the step is the real sharded, jitted, donated `train_step`.
"""

from __future__ import annotations

import argparse

import jax

from experiments.lib.bench_train import bench
from rocket.utils import enable_compilation_cache


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    on_cpu = jax.default_backend() == "cpu"
    parser.add_argument("--sizes", default="tiny,small,base" if on_cpu else "small,base,gpt2s,1b")
    parser.add_argument("--steps", type=int, default=5 if on_cpu else 20)
    parser.add_argument("--dtype", default="float32" if on_cpu else "bfloat16")
    parser.add_argument("--scan", action="store_true", help="nn.scan over layers")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--vocab", type=int, default=258)
    parser.add_argument("--smoke", action="store_true", help="one step of a tiny model")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps = "smoke", 1
    enable_compilation_cache()
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} x{jax.device_count()} ({jax.default_backend()}), jax {jax.__version__}, "
        f"dtype {args.dtype}, scan={args.scan}, remat={args.remat}"
    )
    print(
        f"{'size':>6} {'params':>8} {'MFLOP/tok':>10} {'compile':>8} {'step':>10} {'tok/s':>10} {'TFLOP/s':>8} {'MFU':>7}"
    )
    for name in args.sizes.split(","):
        r = bench(name, args.steps, args.dtype, args.scan, args.remat, args.vocab)
        mfu_s = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(
            f"{r['size']:>6} {r['params_M']:>7.2f}M {r['mflops_per_token']:>10.1f} {r['compile_s']:>7.1f}s "
            f"{r['step_ms']:>8.1f}ms {r['tokens_per_s']:>10.0f} {r['tflops']:>8.3f} {mfu_s:>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
