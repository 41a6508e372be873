"""The accelerator benchmark in one command: kernels, train-step MFU, routed vs dense, decoding.

  python -m experiments.bench_device [--out results/bench_device] [--smoke]

Sections (each reuses the benchmark that owns it; budget: under 8 minutes on one H100/H200-class
GPU or a TPU host):
  kernels   `experiments.lib.bench_kernels`: HBM and matmul ceilings; softmax flash vs cuDNN
            (`jax.nn.dot_product_attention(implementation="cudnn")`), LSSA / LSSAR vs their XLA
            references, fwd and fwd+bwd, seq 1k..16k (D_h = 128); split-K verify attention vs the
            XLA path (GB/s of the cache read, % of measured HBM); fused Pattention vs XLA.
  train     `experiments.lib.bench_train`: the dense `Trainer.step` in bf16 at two sizes
            ("gpt2s", "1b"): step time, tokens/s, MFU.
  routing   `experiments.lib.bench_routing`: dense vs MoD vs MoR forward and train step at seq 2048,
            time ratio over FLOP ratio.
  decoding  `experiments.lib.decode_bench`: AR, a speculative chain, an RSD tree and Token Recycling
            on small byte models trained for the run (per-round overhead, measured and modelled
            speedups).
Writes every number to <out>/<device>.json and renders its tables to <out>/<device>.md (printed
too). Targets on a GPU: softmax flash >= 0.8x cuDNN, softplus flash >= 3x XLA at 8k, verify >= 60%
of measured HBM bandwidth, dense MFU >= 45% at the larger size.
`--smoke` runs every section at tiny sizes on CPU in seconds (the test suite's check; kernels run
in Pallas interpret mode, cuDNN reports "-").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile

import jax

from experiments.lib.bench_kernels import bench_attention, bench_pattention, bench_verify, ceilings
from experiments.lib.bench_routing import time_vs_flops
from experiments.lib.bench_train import bench
from experiments.lib.decode_bench import PROMPTS, measure, train_or_load
from rocket.decode import Autoregressive, SamplerConfig, Speculative, TokenRecycling


def kernels(smoke: bool) -> dict:
    if smoke:
        return {
            "attention": bench_attention([64], [32], 1),
            "verify": bench_verify([64], 1, None),
            "pattention": bench_pattention(1, 64, 32, 64),
        }
    ceil = ceilings(5)
    return {
        "ceilings": ceil,
        "attention": bench_attention([1024, 4096, 8192, 16384], [128], 5),
        "verify": bench_verify([4096, 32768], 5, ceil["hbm_gbs"]),
        "pattention": bench_pattention(5),
    }


def train(smoke: bool) -> list[dict]:
    sizes, dtype, steps = (["smoke"], "float32", 1) if smoke else (["gpt2s", "1b"], "bfloat16", 10)
    return [
        bench(name, steps, dtype, scan=not smoke, remat="none", vocab=258 if smoke else 32768)
        for name in sizes
    ]


def routing(smoke: bool) -> list[dict]:
    if smoke:
        return time_vs_flops([32], 64, 4, 1, "float32", 1)
    return time_vs_flops([2048], 1024, 8, 8, "bfloat16", 3)


def decoding(smoke: bool, workdir: str) -> list[dict]:
    steps, max_new, repeats = (2, 4, 1) if smoke else (300, 64, 3)
    target, tok, _ = train_or_load(workdir, "target_6l", 6, steps)
    models = {"target": target, "1L": train_or_load(workdir, "draft_1l", 1, steps)[0]}
    greedy = SamplerConfig(greedy=True)
    runs = [
        ("ar", Autoregressive(), None, greedy),
        ("chain g=4, 1L draft", Speculative(branching=(1, 1, 1, 1)), "1L", greedy),
        (
            "rsd tree 3-2-1, 1L",
            Speculative(branching=(3, 2, 1), sampling="without_replacement"),
            "1L",
            greedy,
        ),
        ("token recycling 2.2.2 (80)", TokenRecycling(), None, greedy),
    ]
    rows = measure(runs, models, tok, PROMPTS[:1] if smoke else PROMPTS[:3], max_new, repeats)
    keep = ("name", "tokens_per_s", "speedup", "model_speedup", "flat_speedup", "round_s", "model_call_s")
    return [{k: r[k] for k in keep + ("round_overhead", "mean_accepted_tokens")} for r in rows]


def _cell(x) -> str:
    return "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def render(results: dict) -> str:
    """Markdown tables of the JSON's row lists (one per section), with the run's header."""
    out = [f"# bench_device: {results['device']} ({results['backend']}, jax {results['jax']})", ""]
    if results["smoke"]:
        out += ["**Smoke run: tiny sizes, not a measurement of this device.**", ""]
    sections = {"kernels/" + k: v for k, v in results["kernels"].items() if isinstance(v, list)}
    sections.update({k: results[k] for k in ("train", "routing", "decoding")})
    for title, rows in sections.items():
        flat = [{k: v for k, v in r.items() if not isinstance(v, dict)} | _nested(r) for r in rows]
        if not flat:
            continue
        cols = list(dict.fromkeys(k for r in flat for k in r))
        out += [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in flat]
        out.append("")
    return "\n".join(out)


def _nested(row: dict) -> dict:
    """{"ms": {"softmax": 1.0}} -> {"ms/softmax": 1.0}."""
    return {f"{k}/{n}": v for k, d in row.items() if isinstance(d, dict) for n, v in d.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("results", "bench_device"))
    ap.add_argument("--smoke", action="store_true", help="every section at tiny sizes (CPU, seconds)")
    ap.add_argument("--workdir", default=None, help="decoding models (default: a temporary folder)")
    args = ap.parse_args(argv)
    dev = jax.devices()[0]
    results = {
        "device": dev.device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "smoke": args.smoke,
        "kernels": kernels(args.smoke),
        "train": train(args.smoke),
        "routing": routing(args.smoke),
        "decoding": decoding(args.smoke, args.workdir or tempfile.mkdtemp()),
    }
    name = re.sub(r"[^a-z0-9]+", "_", dev.device_kind.lower()).strip("_") + ("_smoke" if args.smoke else "")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    table = render(results)
    with open(os.path.join(args.out, name + ".md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
