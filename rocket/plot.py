"""`python -m rocket.plot WORKDIR [WORKDIR ...] [--out runs.png]`: training curves of one or more runs.

Reads each run's `WORKDIR/logs/metrics.jsonl` (written by `rocket.train`; on a resumed run the last
record of a step wins) and draws three panels against the step: loss (train, solid; eval, dashed
with markers), bits per byte (train and eval) and throughput (tokens/s), one colour per run, into one
PNG (default `runs.png`, or `WORKDIR/curves.png` for a single run). Needs matplotlib
(`pip install matplotlib`). For live curves, TensorBoard reads the event files in the same folder:
`pip install tensorboard && tensorboard --logdir WORKDIR/logs`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

Curves = dict[str, dict[str, list[tuple[int, float]]]]  # split -> metric -> [(step, value)]


def read_metrics(workdir: str) -> Curves:
    """`{split: {metric: [(step, value), ...]}}` of a run, sorted by step, one value per step."""
    path = os.path.join(workdir, "logs", "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics at {path!r} (is {workdir!r} a rocket.train workdir?)")
    last: dict[tuple[str, int], dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                last[(rec.get("split", "train"), int(rec["step"]))] = rec
    out: Curves = {}
    for (split, step), rec in sorted(last.items(), key=lambda kv: kv[0][1]):
        for key, value in rec.items():
            if key not in ("step", "split") and isinstance(value, (int, float)):
                out.setdefault(split, {}).setdefault(key, []).append((step, float(value)))
    return out


PANELS = (("loss", "loss (nats/token)"), ("bits_per_byte", "bits per byte"), ("tokens_per_sec", "tokens/s"))


def plot_runs(workdirs: Sequence[str], out: str, labels: Sequence[str] | None = None) -> str:
    """Draws the runs' curves (see the module docstring) into the PNG `out`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.8))
    for i, (workdir, label) in enumerate(zip(workdirs, labels)):
        curves, colour = read_metrics(workdir), f"C{i % 10}"
        for ax, (metric, _) in zip(axes, PANELS):
            for split, style in (("train", dict(ls="-")), ("eval", dict(ls="--", marker="o", ms=3))):
                points = curves.get(split, {}).get(metric)
                if points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, color=colour, label=f"{label} ({split})", **style)
    for ax, (_, title) in zip(axes, PANELS):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rocket.plot", description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="rocket.train work directories")
    parser.add_argument(
        "--out", help="the PNG to write (default: WORKDIR/curves.png for one run, else runs.png)"
    )
    parser.add_argument("--labels", help="comma-separated legend names, one per workdir")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.workdirs):
        parser.exit(2, f"error: --labels has {len(labels)} names for {len(args.workdirs)} workdirs\n")
    out = args.out or (
        os.path.join(args.workdirs[0], "curves.png") if len(args.workdirs) == 1 else "runs.png"
    )
    try:
        print(plot_runs(args.workdirs, out, labels))
    except (FileNotFoundError, json.JSONDecodeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ImportError:
        print("error: rocket.plot needs matplotlib: pip install matplotlib", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
