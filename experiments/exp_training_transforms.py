"""Training transforms side by side: plain next-token training vs loss-based sample reweighting,
MEAP and Dataset Decomposition, same model, steps and seeds, on the built-in corpus.

  python -m experiments.exp_training_transforms [--quick] [--seeds 0,1] [--steps N] [--variants ...]

Every run trains the same byte-level decoder (vocab 259: one id above the byte tokenizer's 258 is
MEAP's [MASK], unused elsewhere) with the same optimizer, schedule, steps and tokens per step, and
is evaluated on the same validation batches (packed `seq_len` rows, causal). Prints final
validation bits/byte per seed, the mean and the spread (sample std over seeds, and max - min), and
the difference of the means to the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

from experiments.common import experiment
from rocket.config import (
    ExperimentConfig,
)
from rocket.data import build_data
from rocket.train.loop import train
from rocket.utils import enable_compilation_cache

VARIANTS: dict[str, dict] = {
    "baseline": {},
    "reweight": {"loss": {"reweight": "linupper", "reweight_temperature": 1.0}},
    "meap": {"loss": {"meap_rate": 0.15}},
    "decomposition": {"data": {"decomposition": True, "dd_min_log2": 4}},  # dd_cycles: see dd_cycles()
}


def dd_cycles(cfg: ExperimentConfig) -> int:
    """Curriculum cycles per epoch such that one short-to-long cycle spans the run (the corpus is
    far larger than a short run; with one cycle per epoch the run would only see short buckets)."""
    dc = cfg.data
    data = build_data(dc.corpus, dc.tokenizer, seq_len=dc.seq_len, batch_size=dc.batch_size, eval_batches=1)
    return max(1, round(data.stats["train"]["tokens"] / (cfg.train.steps * dc.batch_size * dc.seq_len)))


def base_config(steps: int, seed: int, quick: bool, workdir: str) -> ExperimentConfig:
    d, layers = (96, 2) if quick else (128, 4)
    # vocab 259: the byte tokenizer's 258 ids + MEAP's [MASK] id
    return experiment(
        workdir, steps=steps, seed=seed, eval_batches=16, vocab_size=259, d_model=d, n_layers=layers
    )


def variant_config(cfg: ExperimentConfig, overrides: dict) -> ExperimentConfig:
    sections = {name: dataclasses.replace(getattr(cfg, name), **vals) for name, vals in overrides.items()}
    return dataclasses.replace(cfg, **sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2-layer d=96 model (CPU: ~10 min for all)")
    parser.add_argument("--steps", type=int, default=None, help="default: 250 quick, 800 full")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    enable_compilation_cache()
    steps = args.steps or (250 if args.quick else 800)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {sorted(VARIANTS)}")
    results: dict[str, list[float]] = {}
    for name in names:
        for seed in seeds:
            with tempfile.TemporaryDirectory() as workdir:
                cfg = variant_config(base_config(steps, seed, args.quick, workdir), VARIANTS[name])
                if cfg.data.decomposition:
                    cfg = variant_config(cfg, {"data": {"dd_cycles": dd_cycles(cfg)}})
                t0 = time.perf_counter()
                bpb = train(cfg)["eval_bits_per_byte"]
                print(
                    f"{name:>14s} seed {seed}: {bpb:.4f} bits/byte ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                results.setdefault(name, []).append(bpb)

    base = statistics.mean(results["baseline"]) if "baseline" in results else None
    print(f"\nfinal validation bits/byte, {steps} steps, seeds {seeds}")
    print(
        f"{'variant':>14s} "
        + " ".join(f"{'seed ' + str(s):>9s}" for s in seeds)
        + "      mean    std  max-min  vs base"
    )
    for name, vals in results.items():
        std = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        delta = f"{statistics.mean(vals) - base:+.4f}" if base is not None else "n/a"
        print(
            f"{name:>14s} "
            + " ".join(f"{v:9.4f}" for v in vals)
            + f"  {statistics.mean(vals):8.4f} {std:6.4f} {max(vals) - min(vals):8.4f}  {delta:>7s}"
        )


if __name__ == "__main__":
    main()
