"""Pallas kernels vs the XLA references vs cuDNN, side by side in one run (GPU; CPU only --smoke).

  python -m experiments.bench_kernels [--seqs 1024,2048,4096,8192,16384] [--head-dims 64,128]
      [--caches 1024,4096,16384,32768] [--json out.json] [--smoke]

Sections (bf16 inputs, median of --reps timed calls after a warm-up, wall clock around
`block_until_ready`):
  1. ceilings: HBM bandwidth (1 GiB device copy, bytes read + written) and a bf16 8192^3 matmul.
  2. attention, causal, B=1, H = 2048 / D heads, fwd and fwd+bwd: ours (softmax,
     LSSA, LSSAR p=15), the XLA reference of each, cuDNN (`jax.nn.dot_product_attention`,
     implementation="cudnn"); TFLOP/s counts the causal half (fwd 2*B*H*T^2*D, bwd 2.5x fwd).
     Ours runs `causal=True` (rocket's training route: tiles above the diagonal skipped);
     "masked/causal" times our softmax given the same causal mask as a dense [B, T, T] mask
     (the route for non-causal masks: every tile visited, mask streamed), over the causal route.
  3. verify: a 16-token tree block against a cache of S slots (B=8, 32 q heads on 8 kv heads,
     D=128), split-K kernel vs the XLA path (concat + dense mask); GB/s of the K/V read and % of 1.
  4. Pattention (TokenFormer FFN-sized, M=16384 tokens, d=1024, n=4096): fused vs XLA, fwd and
     fwd+bwd.
Goals: softmax >= 0.8x cuDNN; softplus >= 3x XLA at 8k and <= 1.2x our softmax time;
verify >= 60% of measured HBM bandwidth. A failed or out-of-memory measurement prints "-".
"""

from __future__ import annotations

import argparse
import json

import jax

from experiments.lib.bench_kernels import bench_attention, bench_pattention, bench_verify, ceilings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seqs", default="1024,2048,4096,8192,16384")
    parser.add_argument("--head-dims", default="64,128")
    parser.add_argument("--caches", default="1024,4096,16384,32768")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", default=None, help="write every number to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (runs on CPU in interpret mode)")
    args = parser.parse_args(argv)
    ints = lambda s: [int(x) for x in s.split(",")]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    if args.smoke:
        results = {"verify": bench_verify([256], 1, None), "pattention": bench_pattention(1, 256, 64, 128)}
    else:
        ceil = ceilings(args.reps)
        results = {
            "ceilings": ceil,
            "attention": bench_attention(ints(args.seqs), ints(args.head_dims), args.reps),
            "verify": bench_verify(ints(args.caches), args.reps, ceil["hbm_gbs"]),
            "pattention": bench_pattention(args.reps),
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
