"""Runs every reproduction experiment and regenerates the README's "Results" section.

  python -m experiments.repro_all --quick          # every repro_*.py in its few-minute mode (smoke test)
  python -m experiments.repro_all --only mod,mor   # some of them, full mode
  python -m experiments.repro_all --rederive       # verdicts re-derived from the stored numbers
  python -m experiments.repro_all --render-only    # README from the results/ already there

Each script runs in its own process (`python -m experiments.repro_<name>`) and writes
results/<name>/ (see experiments/lib/results.py); then README.md's text between the results markers is
replaced by one subsection per result: summary, a table of the paper's claim next to ours, the plot.
--quick results go to a separate folder (`--out-dir`, default a temporary one) and never touch
results/ or the README: quick numbers are a smoke test, not results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from experiments.lib.results import NAMES, QUICK_DIR, RESULTS_DIR, render_results_section, replace_section


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="run each script with --quick (results to --out-dir)"
    )
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {NAMES}")
    ap.add_argument("--render-only", action="store_true", help="only regenerate the README section")
    ap.add_argument(
        "--rederive", action="store_true", help="re-derive each stored result's claims, then render"
    )
    ap.add_argument(
        "--out-dir", default=None, help=f"results root (default {RESULTS_DIR}; with --quick {QUICK_DIR})"
    )
    ap.add_argument("--readme", default="README.md")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        ap.error(f"unknown experiments {unknown}; valid: {list(NAMES)}")
    if args.quick and (args.render_only or args.rederive):
        ap.error("--quick runs the scripts; it does not go with --render-only or --rederive")
    out_dir = args.out_dir or (QUICK_DIR if args.quick else RESULTS_DIR)
    failed = []
    if not args.render_only:
        for name in names:
            cmd = [sys.executable, "-m", f"experiments.repro_{name}", "--out", os.path.join(out_dir, name)]
            cmd += ["--quick"] if args.quick else ["--rederive"] if args.rederive else []
            print(f"\n=== {' '.join(cmd[1:])}", flush=True)
            t0 = time.time()
            if subprocess.run(cmd).returncode != 0:
                failed.append(name)
            print(f"=== {name}: {time.time() - t0:.0f} s", flush=True)
    if args.quick:
        print(f"\nquick results in {os.path.abspath(out_dir)}; {args.readme} left as it is")
    else:
        with open(args.readme) as f:
            text = f.read()
        with open(args.readme, "w") as f:
            f.write(replace_section(text, render_results_section(out_dir, NAMES)))
        print(f"\nrendered {len(NAMES)} results into {os.path.abspath(args.readme)}")
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":
    main()
