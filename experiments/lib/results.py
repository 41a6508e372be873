"""The output format of rocket's reproduction experiments (`experiments/repro_*.py`).

Every repro script measures one claim of a paper at small scale and writes `results/<name>/`:

  results.json  everything: the claims (paper's number and setup next to ours), the summary, the
                rows, free-form extra data, the command, mode (quick / full), seeds, wall time
  results.csv   the rows (one measurement per row: model, seed, step, metric, ...)
  plot.png      the figure (matplotlib, headless Agg backend)
  summary.md    a one-paragraph summary with the claims table and the figure

`python -m experiments.repro_all` runs the scripts (`NAMES`) and renders every results.json into the
README's "Results" section (`render_results_section`).

A script measures and returns a `Report`; `experiments.lib.cli.repro_main` parses its command line
and writes the report (docs/extending.md, "a new experiment"):

    def measure(args) -> Report:
        rows = [...]                     # measurements, list of flat dicts
        fig, ax = figure(1)              # plot
        claims = [Claim(...)]            # paper vs ours
        return Report(rows=rows, claims=claims, summary="...", fig=fig)

    def main(argv=None):
        repro_main("mod", __doc__, title="...", quick_help="...", measure=measure, argv=argv)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

from experiments.lib.verdicts import FACTOR, IMPLAUSIBLE, VERDICTS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS_DIR = "results"
# --quick results never land in results/ (the committed full-mode numbers) unless --out says so
QUICK_DIR = os.path.join(tempfile.gettempdir(), "rocket_quick_results")
FILES = ("results.json", "results.csv", "plot.png", "summary.md")
# the reproductions (experiments/repro_<name>.py) in README order: architectures, then decoding, then
# training transforms
NAMES = ("mod", "mor", "tokenformer", "softplus", "lexinvariant", "decoding", "selfspec", "training")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the README's results table: what the paper reports, and what we measured.

    claim: the statement, e.g. "MoD (c=0.125) matches or beats dense at equal training FLOPs".
    paper_setup: the scale the paper measured at.
    paper: the paper's own number with its table or figure ("Table 2, 360M: ..."); a number taken
        second-hand is marked so; "-" where the paper states no number for the claim.
    ours / our_setup: our number (formatted, with its spread where there are seeds) and our scale.
    verdict: one of `experiments.lib.verdicts.VERDICTS` (our reading of `ours`, two-sided against
        the paper's effect size).
    control: the control that rules out the obvious confound, and what it showed ("" if none).
    """

    claim: str
    paper: str
    paper_setup: str
    ours: str
    our_setup: str
    verdict: str
    control: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"Claim.verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclasses.dataclass(frozen=True)
class Report:
    """What a repro script measured, as `write_results` writes it.

    rows: flat dicts of str / number, one measurement each (results.csv); data: free-form extra
    numbers (curves, settings) for results.json; fig: the matplotlib figure (plot.png).
    """

    rows: list[dict[str, Any]]
    claims: list[Claim]
    summary: str
    fig: Any
    data: dict[str, Any] | None = None


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.6):
    """A headless matplotlib figure with `nrows x ncols` axes (a flat list when more than one)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat:
        ax.grid(alpha=0.3)
    return fig, (flat[0] if len(flat) == 1 else flat)


def _finite_numbers(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is not finite: {value}")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{where}.{k}")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} has a value of type {type(value).__name__}; use str, int, float, list, dict")


def _plain(value: Any) -> Any:
    """numpy scalars / arrays -> Python numbers / lists (json-able)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_results(args: argparse.Namespace, title: str, report: Report) -> str:
    """Writes results/<name>/{results.json, results.csv, plot.png, summary.md} -> the folder.

    `args` are a repro script's parsed command line (`experiments.lib.cli.repro_args`). The report's
    `rows` (flat dicts of str / number) and `data` must hold finite numbers only: a NaN or inf is a
    failed measurement and raises here, before anything is written.
    """
    summary, fig = report.summary, report.fig
    rows, data = _plain(report.rows), _plain(report.data or {})
    _finite_numbers(rows, "rows")
    _finite_numbers(data, "data")
    if not rows:
        raise ValueError("write_results needs at least one row")
    out = args.out or default_out(args.name, args.quick)
    os.makedirs(out, exist_ok=True)
    record = {
        "name": args.name,
        "title": title,
        "mode": "quick" if args.quick else "paper" if getattr(args, "scale", "cpu") == "paper" else "full",
        "command": "python -m experiments.repro_"
        + args.name
        + (
            " --quick" if args.quick else " --scale paper" if getattr(args, "scale", "cpu") == "paper" else ""
        ),
        "argv": sys.argv[1:],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "wall_s": round(time.time() - args.t0, 1),
        "summary": summary.strip(),
        "claims": [dataclasses.asdict(c) for c in report.claims],
        "rows": rows,
        "data": data,
    }
    fig.tight_layout()
    fig.savefig(os.path.join(out, "plot.png"), dpi=110)
    plt.close(fig)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(record, image="plot.png"))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"\n{title}\n{summary.strip()}\n-> {out}/ ({', '.join(FILES)})", flush=True)
    return out


def default_out(name: str, quick: bool) -> str:
    """Where a result goes without --out: results/<name>/ for a full run, QUICK_DIR/<name>/ for a
    --quick one (a quick run never overwrites the committed full-mode results)."""
    return os.path.join(QUICK_DIR if quick else RESULTS_DIR, name)


def rederive_results(
    path: str, derive: Callable[[dict[str, Any]], tuple[list[Claim], str]]
) -> dict[str, Any]:
    """Re-derives the claims and the summary of the stored result in `path` from its stored
    measurements (`derive(record) -> (claims, summary)`, record = results.json) and rewrites
    results.json and summary.md; rows, data, plot, command, mode and wall time stay as they were.
    For verdict-rule and wording changes that do not change what was measured."""
    record = load_results(path)
    claims, summary = derive(record)
    record["claims"] = [dataclasses.asdict(c) for c in claims]
    record["summary"] = summary.strip()
    record["rederived"] = time.strftime("%Y-%m-%d", time.gmtime())
    with open(os.path.join(path, "summary.md"), "w") as f:
        f.write(summary_markdown(record, image="plot.png"))
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return record


def claims_table(claims: list[dict[str, str]]) -> str:
    """A markdown table: claim | paper | paper's setup | ours | our setup | control | verdict."""
    keys = ("claim", "paper", "paper_setup", "ours", "our_setup", "control", "verdict")
    lines = [
        "| claim | paper | paper's setup | ours | our setup | control | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        cells = [c.get(k, "").replace("|", "\\|").replace("\n", " ") or "-" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(record: dict[str, Any], *, image: str) -> str:
    """The summary.md of a result: title, paragraph, claims table, figure, how to rerun."""
    return (
        f"## {record['title']}\n\n{record['summary']}\n\n{claims_table(record['claims'])}\n\n"
        f"![{record['name']}]({image})\n\n"
        f"Mode: {record['mode']}, {record['wall_s'] / 60:.1f} min on {record['date']}"
        + (
            f"; verdicts re-derived from the stored numbers on {record['rederived']}"
            if "rederived" in record
            else ""
        )
        + f". Rerun: `{record['command']}`.\n"
    )


def load_results(path: str) -> dict[str, Any]:
    """Reads a results folder and checks it is complete: all four files, finite numbers."""
    missing = [f for f in FILES if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(f"{path} lacks {missing}")
    with open(os.path.join(path, "results.json")) as f:
        record = json.load(f)
    _finite_numbers(record["rows"], f"{path}: rows")
    _finite_numbers(record["data"], f"{path}: data")
    if not record["rows"] or not record["claims"]:
        raise ValueError(f"{path}: results.json has no rows or no claims")
    return record


START, END = "<!-- results:start -->", "<!-- results:end -->"


def render_results_section(results_dir: str, names: Sequence[str]) -> str:
    """The README's Results section body: per result, its summary, claims table and plot."""
    parts = [
        START,
        "Generated by `python -m experiments.repro_all` from `results/*/results.json`; do not edit by hand.",
        'Every number in the "ours" column is ours, from the full-mode command shown, on a 2-core CPU;',
        "small models on the built-in corpus or synthetic tasks. Read them as directional checks of each",
        "paper's claim, not as replications at the papers' scale (`--scale paper` builds those settings).",
        'The "paper" column quotes the paper (table or figure where we have it; second-hand numbers',
        "are marked). Verdicts are two-sided (`experiments/lib/verdicts.py`): an effect in the claimed",
        f'direction but more than {FACTOR:g}x the paper\'s beyond the seed spread is "{IMPLAUSIBLE}"',
        'until a control explains it; a modelled number never upgrades a measured one. The "control"',
        "column names the control that rules out the obvious confound, and what it showed.",
        "",
    ]
    for name in names:
        path = os.path.join(results_dir, name)
        if not os.path.exists(os.path.join(path, "results.json")):
            parts += [f"### {name}", "", f"Not run yet: `python -m experiments.repro_{name} --quick`.", ""]
            continue
        r = load_results(path)
        parts += [
            f"### {r['title']}",
            "",
            r["summary"],
            "",
            claims_table(r["claims"]),
            "",
            f"![{name}]({results_dir}/{name}/plot.png)",
            "",
            f"`{r['command']}` ({r['mode']}, {r['wall_s'] / 60:.1f} min, {r['date']}"
            + (f"; verdicts re-derived {r['rederived']}" if "rederived" in r else "")
            + "); numbers in "
            f"[`{results_dir}/{name}/`]({results_dir}/{name}/).",
            "",
        ]
    parts.append(END)
    return "\n".join(parts)


def replace_section(text: str, section: str) -> str:
    """`text` with everything between the START and END markers (inclusive) replaced by `section`."""
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    return head + section + rest.split(END, 1)[1]
