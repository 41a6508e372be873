"""The command line and `main` of a repro script: --quick, --seeds, --out, --workdir, --rederive;
measure, then write the result (`experiments.lib.results`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments.lib.presets import PaperPreset, format_plan, run_paper
from experiments.lib.results import (
    QUICK_DIR,
    RESULTS_DIR,
    Claim,
    Report,
    default_out,
    rederive_results,
    write_results,
)


def repro_args(name: str, doc: str | None, *, quick_help: str) -> argparse.ArgumentParser:
    """The common command line of a repro script: --quick, --seeds, --out, --workdir.

    Parsed args carry `name` (the result's folder name) and `t0` (start time, for the wall time).
    """
    ap = argparse.ArgumentParser(
        description=(doc or name).strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc,
    )
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument(
        "--seeds", type=str, default=None, help="comma-separated training seeds (default: the script's)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help=f"output folder (default {RESULTS_DIR}/{name}; with --quick {QUICK_DIR}/{name})",
    )
    ap.add_argument(
        "--scale",
        choices=("cpu", "paper"),
        default="cpu",
        help="cpu: the small CPU setting (default); paper: the paper's model size, sequence length, tokens, "
        "batch and lr (a TPU/GPU host; prints its expected cost first; results to "
        f"{RESULTS_DIR}/{name}_paper unless --out)",
    )
    ap.add_argument(
        "--plan", action="store_true", help="with --scale paper: print the plan and its cost, run nothing"
    )
    ap.add_argument(
        "--rederive",
        action="store_true",
        help="measure nothing: re-derive the claims and summary of the stored result (--out or the "
        "default folder) from its stored numbers",
    )
    ap.add_argument("--workdir", default=f"runs/repro_{name}", help="checkpoints and logs of the runs")
    ap.set_defaults(name=name, t0=time.time())
    return ap


def seeds(args: argparse.Namespace, default: Sequence[int]) -> list[int]:
    """The seeds of `--seeds` (comma-separated), else `default`."""
    if args.seeds is None:
        return list(default)
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds must be comma-separated integers, got {args.seeds!r}") from None


def repro_main(
    name: str,
    doc: str | None,
    *,
    title: str,
    quick_help: str,
    measure: Callable[[argparse.Namespace], Report],
    derive: Callable[[dict[str, Any]], tuple[list[Claim], str]] | None = None,
    paper: PaperPreset | None = None,
    argv: list[str] | None = None,
) -> str:
    """A repro script's main: parses its command line (`repro_args`), runs `measure` on the parsed
    args and writes the report under `title` to results/<name>/ (or --out) -> the folder. With
    --rederive, `derive(record) -> (claims, summary)` rewrites the stored result's claims instead;
    with --scale paper, `experiments.lib.presets.run_paper` runs the `paper` preset."""
    args = repro_args(name, doc, quick_help=quick_help).parse_args(argv)
    if args.scale == "paper":
        if paper is None:
            raise SystemExit(f"error: repro_{name} has no paper-scale preset")
        if args.quick or args.rederive:
            raise SystemExit("error: --scale paper does not go with --quick or --rederive")
        if args.plan:
            print(format_plan(name, paper))
            return ""
        args.out = args.out or os.path.join(RESULTS_DIR, f"{name}_paper")
        return write_results(args, f"{title} (paper scale)", run_paper(args, paper))
    if args.rederive:
        path = args.out or default_out(name, args.quick)
        if derive is None:
            raise SystemExit(f"error: repro_{name} cannot re-derive its verdicts from stored numbers")
        if not os.path.exists(os.path.join(path, "results.json")):
            raise SystemExit(f"error: no stored result to re-derive in {path}")
        rederive_results(path, derive)
        print(f"re-derived the claims of {path}")
        return path
    return write_results(args, title, measure(args))


def script_main(module_name: str, argv: list[str] | None = None) -> str:
    """`repro_main` of the repro script `experiments.repro_<name>` from its module: its docstring,
    TITLE, QUICK_HELP, measure, derive (if any) and PAPER preset (if any)."""
    m = sys.modules[module_name]
    full = m.__spec__.name if m.__spec__ is not None else module_name  # "__main__" under python -m
    name = full.rsplit(".", 1)[-1].removeprefix("repro_")
    return repro_main(
        name,
        m.__doc__,
        title=m.TITLE,
        quick_help=m.QUICK_HELP,
        measure=m.measure,
        derive=getattr(m, "derive", None),
        paper=getattr(m, "PAPER", None),
        argv=argv,
    )
