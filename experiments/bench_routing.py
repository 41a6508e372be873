"""Do MoD and MoR turn their FLOP savings into time? Dense vs MoD vs MoR at the same width, one run.

  python -m experiments.bench_routing [--seqs 256,512,1024,2048] [--d 256] [--layers 8] [--batch 1]
                                      [--reps 3] [--decode-tokens 64] [--dtype float32]
                                      [--compile-layers 24] [--compile-d 128] [--compile-reps 2] [--smoke]

Models (same d, same number of layer applications L):
  dense  L layers
  mod    MoD, capacity 0.125 on every other layer (Raposo et al.'s setting), raw gate
  mor    MoR expert-choice, middle-cycle sharing, N_r = 2 (capacities 1, 1/2)

For each sequence length it prints the best-of-reps forward (top-k routing) and train-step times, the
measured time ratio to dense next to the analytic FLOP ratio (`flops_per_token`), and their
quotient "time/flop" (1.0 = the savings are fully realised; the goal is <= 1.15 at seq >= 1024).
Then greedy decoding tokens/s of dense vs MoD (causal routing, batch 1, the same prompt and cache
length; prefill excluded). Batches are random tokens; times are best-of-reps wall clock after one
compile, the models taking turns (robust to background load; `experiments.lib.bench_timing`).
Last, compile time at depth (`experiments.lib.bench_compile`): the loss gradient of `--compile-layers`
deep models of width `--compile-d`, dense / MoD / MoR with `model.scan_layers` on and off, as a
ratio to the scanned dense model (0 layers: skipped). `--seqs "" --decode-tokens 0` runs only this.
`--smoke` runs tiny sizes in seconds (the test suite's check that the script runs).
"""

from __future__ import annotations

import argparse

import jax

from experiments.lib.bench_compile import compile_times
from experiments.lib.bench_routing import configs, decode_fn, time_vs_flops
from experiments.lib.bench_timing import interleaved


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", default="256,512,1024,2048")
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--compile-layers", type=int, default=24)
    p.add_argument("--compile-d", type=int, default=128)
    p.add_argument("--compile-seq", type=int, default=256)
    p.add_argument("--compile-reps", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (the test suite's check)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seqs, args.d, args.layers, args.batch, args.reps, args.decode_tokens = "32", 64, 4, 1, 1, 4
        args.compile_layers, args.compile_d, args.compile_seq, args.compile_reps = 4, 64, 32, 1
    print(
        f"device: {jax.devices()[0].device_kind}; d={args.d} L={args.layers} batch={args.batch} {args.dtype}"
    )
    if args.seqs:  # "" skips the timing table
        seqs = [int(q) for q in args.seqs.split(",")]
        time_vs_flops(seqs, args.d, args.layers, args.batch, args.dtype, args.reps)
    if args.decode_tokens:
        prompt_len, n = (8 if args.smoke else 64), args.decode_tokens
        cfgs = configs(args.d, args.layers, prompt_len + n, args.dtype)
        fns = {(name, m): decode_fn(cfgs[name], prompt_len, m) for name in ("dense", "mod") for m in (1, n)}
        t = interleaved(fns, args.reps)
        tok_s = {name: (n - 1) / (t[name, n] - t[name, 1]) for name in ("dense", "mod")}  # prefill excluded
        print(
            f"decode (batch 1, prompt {prompt_len}, {n} new tokens, causal routing, untrained routers): "
            f"dense {tok_s['dense']:.1f} tok/s, mod {tok_s['mod']:.1f} tok/s; mod/dense {tok_s['mod'] / tok_s['dense']:.3f}"
        )
    if args.compile_layers:
        compile_times(args.compile_d, args.compile_layers, args.compile_seq, args.batch, args.compile_reps)


if __name__ == "__main__":
    main()
