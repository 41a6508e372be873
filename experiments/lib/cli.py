"""The command line and `main` of a repro script: --quick, --seeds, --out, --workdir; measure, then
write the result (`experiments.lib.results`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from experiments.lib.results import RESULTS_DIR, Report, write_results


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
    ap.add_argument("--out", default=None, help=f"output folder (default {RESULTS_DIR}/{name})")
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
    argv: list[str] | None = None,
) -> str:
    """A repro script's main: parses its command line (`repro_args`), runs `measure` on the parsed
    args and writes the report under `title` to results/<name>/ (or --out) -> the folder."""
    args = repro_args(name, doc, quick_help=quick_help).parse_args(argv)
    return write_results(args, title, measure(args))
