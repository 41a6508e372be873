"""Speculative decoding and Token Recycling vs autoregressive decoding, side by side in one run.

  python -m experiments.bench_decode [--workdir runs/bench_decode] [--steps 400] [--max_new_tokens 96]
  python -m experiments.bench_decode --hf HuggingFaceTB/SmolLM2-360M --hf_draft HuggingFaceTB/SmolLM2-135M

Trains (or, when `--workdir` already holds the runs, loads) a byte-level target (6 layers) and 1- and
2-layer drafts on the built-in corpus (this Python's standard library) with rocket.train, then
decodes the same prompts (batch 1, the papers' latency setting) with chains, RSD and DySpec trees
(Leviathan et al. 2023, Chen et al. 2023) and Token Recycling (Luo et al. 2024), greedy and at
T=0.7, and prints per method: draft acceptance rate, mean accepted tokens per target call (MAT),
target and draft calls per emitted token, warm tokens/s (whole generation inside one jit, compile
excluded), the speedup over autoregressive decoding of the same target in the same run, and two
modelled speedups from the measured per-call costs ("model": CPU costs t(w); "flat": the
memory-bound accelerator regime). The measurement is `experiments.lib.decode_bench.measure`.

Per method it also splits a round's time (one target call per round): measured seconds per round,
the seconds of its model calls alone (the same calls at the same widths and cache size, run in one
jitted loop for as many iterations as the generation had rounds, timed after each of the method's
own generations, so both sides are windows of the same length under the same machine load), and
their ratio (1.0 = sampling, verification, tree building and bookkeeping cost nothing).

  --prompts 2 --repeats 2  is the quick mode (fewer prompts, fewer timing repetitions).
  --only "g=4, 1L;recycling 2.2.2"  runs only the methods whose names contain a fragment.
  --smoke  trains 2-step models in a temporary folder and decodes one prompt with a few methods
           (seconds of compute; the test suite's check that the script runs).
"""

from __future__ import annotations

import argparse
import tempfile

from experiments.lib.decode_bench import PROMPTS, measure, train_or_load
from experiments.lib.decode_models import add_hf_flags, hf_models
from rocket.decode import Autoregressive, DySpec, SamplerConfig, Speculative, TokenRecycling
from rocket.utils import enable_compilation_cache

SMALL_TEMPLATE = tuple((i,) for i in range(4)) + ((0, 0), (0, 1), (1, 0), (0, 0, 0), (0, 0, 1), (0, 1, 0))
SMALL_TEMPLATE += ((0, 0, 0, 0), (0, 0, 0, 0, 0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="runs/bench_decode")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--max_new_tokens", type=int, default=96)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    ap.add_argument("--repeats", type=int, default=5, help="timings per prompt / per call (best kept)")
    add_hf_flags(ap)
    ap.add_argument(
        "--only", default="", help="name fragments separated by ;: only the runs matching one (and AR)"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny run in a temporary folder")
    args = ap.parse_args(argv)
    if args.smoke:
        args.workdir, args.steps, args.max_new_tokens = tempfile.mkdtemp(), 2, 6
        args.prompts, args.repeats = 1, 1
    enable_compilation_cache()
    prompts = PROMPTS[: args.prompts]
    if args.hf:  # real checkpoints: the one draft fills both draft slots
        models, tok = hf_models(args.hf, args.hf_draft, ("1L", "2L"))
    else:
        target, tok, _ = train_or_load(args.workdir, "target_6l", 6, args.steps)
        models = {
            "target": target,
            "1L": train_or_load(args.workdir, "draft_1l", 1, args.steps)[0],
            "2L": train_or_load(args.workdir, "draft_2l", 2, args.steps)[0],
        }
    greedy, t07 = SamplerConfig(greedy=True), SamplerConfig(temperature=0.7)
    chain2, chain4 = Speculative(branching=(1, 1)), Speculative(branching=(1, 1, 1, 1))
    rsd = Speculative(branching=(3, 2, 1), sampling="without_replacement")
    runs = [
        ("ar", Autoregressive(), None, greedy),
        ("chain g=2, 1L draft", chain2, "1L", greedy),
        ("chain g=4, 1L draft", chain4, "1L", greedy),
        ("chain g=4, 2L draft", chain4, "2L", greedy),
        ("rsd tree 3-2-1, 1L", rsd, "1L", greedy),
        ("dyspec 4-8-8-8, 1L", DySpec(), "1L", greedy),
        ("token recycling 2.2.2 (80)", TokenRecycling(), None, greedy),
        ("token recycling 12 nodes", TokenRecycling(template=SMALL_TEMPLATE, k=4), None, greedy),
        ("ar T=0.7", Autoregressive(), None, t07),
        ("chain g=4, 1L, T=0.7", chain4, "1L", t07),
        ("chain g=4, 2L, T=0.7", chain4, "2L", t07),
        ("rsd tree 3-2-1, 1L, T=0.7", rsd, "1L", t07),
        ("dyspec 4-8-8-8, 1L, T=0.7", DySpec(), "1L", t07),
        ("token recycling 2.2.2, T=0.7", TokenRecycling(), None, t07),
    ]

    if args.smoke:  # one of each kind: AR, chain, tree, draft-free, sampled
        runs = [runs[i] for i in (0, 1, 4, 7, 8, 9)]
    runs = [r for r in runs if r[2] is None or r[2] in models]  # --hf without --hf_draft: no drafts
    if args.only:  # the AR baselines always run (every speedup is relative to them)
        wanted = [w.strip() for w in args.only.split(";") if w.strip()]
        runs = [r for r in runs if isinstance(r[1], Autoregressive) or any(w in r[0] for w in wanted)]
    results = measure(runs, models, tok, prompts, args.max_new_tokens, args.repeats)
    print("\nsample (target greedy): " + repr(PROMPTS[0] + tok.decode(results[0]["tokens"][0])))


if __name__ == "__main__":
    main()
