"""Rocket's train step against nanodo's (google-deepmind/nanodo), side by side in one process.

  python -m experiments.bench_peers --nanodo PATH [--seqs 256,1024] [--rounds 5] [--smoke]

Both trainers step alternately (round-robin, best of --rounds after two warm-up rounds: nanodo's second step recompiles), at D=256,
4 layers, 4 heads (MHA), batch 8, V=258, equal matmul FLOPs (nanodo GeLU F=1536, rocket SwiGLU
d_ff=1024; `experiments.lib.bench_peers`). Prints tokens/s of each and rocket / nanodo. PATH is a
nanodo source checkout (the folder holding `nanodo/`); without --nanodo only rocket is timed.
`--smoke` runs tiny sizes in seconds (the test suite's check that the script runs).
"""

from __future__ import annotations

import argparse
import dataclasses

from experiments.lib.bench_peers import Shape, import_nanodo, nanodo_step, rocket_step
from experiments.lib.bench_timing import interleaved

SMOKE = Shape(d_model=32, n_layers=1, n_heads=2, seq_len=16, batch=2, d_ff=64)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanodo", default=None, help="path of a nanodo source checkout")
    ap.add_argument("--seqs", default="256,1024", help="comma-separated sequence lengths")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (best of)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = ap.parse_args(argv)
    try:
        seqs = [int(s) for s in args.seqs.split(",")]
        if args.rounds < 1 or min(seqs) < 2:
            raise ValueError
    except ValueError:
        ap.exit(
            2, f"error: --seqs must be integers >= 2 and --rounds >= 1, got {args.seqs!r}, {args.rounds}\n"
        )
    try:
        train = None if args.nanodo is None else import_nanodo(args.nanodo)
    except (FileNotFoundError, ImportError) as e:
        ap.exit(2, f"error: --nanodo: {e}\n")
    base = SMOKE if args.smoke else Shape()
    print(f"{'T':>6} {'rocket tok/s':>13} {'nanodo tok/s':>13} {'rocket/nanodo':>14}")
    for seq in [base.seq_len] if args.smoke else seqs:
        shape = dataclasses.replace(base, seq_len=seq)
        fns = {"rocket": rocket_step(shape)}
        if train is not None:
            fns["nanodo"] = nanodo_step(train, shape)
        best = interleaved(fns, 1 if args.smoke else args.rounds, warmup=2)
        tok = {name: shape.batch * seq / s for name, s in best.items()}
        peer = (
            f"{tok['nanodo']:>13.0f} {tok['rocket'] / tok['nanodo']:>13.2f}x"
            if "nanodo" in tok
            else f"{'n/a':>13} {'n/a':>14}"
        )
        print(f"{seq:>6} {tok['rocket']:>13.0f} {peer}", flush=True)


if __name__ == "__main__":
    main()
