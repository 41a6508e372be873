"""The reproduction experiments' output format and command line (experiments/lib/results.py, cli.py)
and, in the slow tier, every
`experiments/repro_*.py --quick` end to end: its four output files exist and hold finite numbers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.lib.cli import repro_args, repro_main
from experiments.lib.results import (
    END,
    NAMES,
    START,
    Claim,
    Report,
    figure,
    load_results,
    render_results_section,
    replace_section,
    write_results,
)

CLAIM = Claim("a claim", "1.0", "big", "0.9 +- 0.1", "small", "partly")


def _report(rows, data=None):
    fig, ax = figure()
    ax.plot([0, 1], [1, 0])
    return Report(rows=rows, claims=[CLAIM], summary="It works.", fig=fig, data=data)


def _write(tmp_path, rows, data=None):
    args = repro_args("toy", "Toy experiment.", quick_help="quick").parse_args(
        ["--quick", "--out", str(tmp_path / "toy")]
    )
    return write_results(args, "Toy", _report(rows, data))


def test_write_then_load_round_trips(tmp_path):
    out = _write(tmp_path, [{"model": "a", "loss": np.float32(1.5)}, {"model": "b", "loss": 2}])
    record = load_results(out)
    assert record["mode"] == "quick" and record["command"] == "python -m experiments.repro_toy --quick"
    assert [r["loss"] for r in record["rows"]] == [1.5, 2]
    assert open(os.path.join(out, "results.csv")).read().splitlines() == ["model,loss", "a,1.5", "b,2"]
    md = open(os.path.join(out, "summary.md")).read()
    assert "| a claim | 1.0 | big | 0.9 +- 0.1 | small | - | partly |" in md and "![toy](plot.png)" in md
    assert open(os.path.join(out, "plot.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_repro_main_measures_with_the_parsed_command_line_and_writes_the_report(tmp_path):
    seen = []

    def measure(args):
        seen.append((args.quick, args.seeds, args.workdir, args.name))
        return _report([{"loss": 1.0}], data={"x": [1, 2]})

    argv = ["--seeds", "3,4", "--out", str(tmp_path / "toy")]
    out = repro_main("toy", "Toy experiment.", title="Toy", quick_help="quick", measure=measure, argv=argv)
    assert seen == [(False, "3,4", "runs/repro_toy", "toy")]
    record = load_results(out)
    assert record["title"] == "Toy" and record["mode"] == "full" and record["data"] == {"x": [1, 2]}


def test_non_finite_numbers_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"rows\[0\]\.loss is not finite"):
        _write(tmp_path, [{"loss": float("nan")}])
    with pytest.raises(ValueError, match=r"data\.curve\[1\] is not finite"):
        _write(tmp_path, [{"loss": 1.0}], data={"curve": [1.0, float("inf")]})
    assert not os.path.exists(tmp_path / "toy" / "results.json")


def test_load_results_names_missing_files_and_bad_numbers(tmp_path):
    out = _write(tmp_path, [{"loss": 1.0}])
    os.remove(os.path.join(out, "plot.png"))
    with pytest.raises(FileNotFoundError, match="plot.png"):
        load_results(out)
    out = _write(tmp_path, [{"loss": 1.0}])
    record = json.load(open(os.path.join(out, "results.json")))
    record["rows"][0]["loss"] = float("nan")
    json.dump(record, open(os.path.join(out, "results.json"), "w"))
    with pytest.raises(ValueError, match="not finite"):
        load_results(out)


def test_claim_verdict_is_checked():
    with pytest.raises(ValueError, match="verdict"):
        Claim("c", "p", "ps", "o", "os", "yes")


def test_quick_results_never_land_in_results_unless_out_says_so(tmp_path, monkeypatch):
    """A --quick run without --out writes under QUICK_DIR, not results/; --out still wins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("experiments.lib.results.QUICK_DIR", str(tmp_path / "quick"))
    measure = lambda args: _report([{"loss": 1.0}])
    out = repro_main("toy", "Toy.", title="Toy", quick_help="q", measure=measure, argv=["--quick"])
    assert out == str(tmp_path / "quick" / "toy") and not os.path.exists(tmp_path / "results")
    out = repro_main("toy", "Toy.", title="Toy", quick_help="q", measure=measure, argv=[])
    assert out == os.path.join("results", "toy") and os.path.exists(
        tmp_path / "results" / "toy" / "results.json"
    )
    out = repro_main(
        "toy",
        "Toy.",
        title="Toy",
        quick_help="q",
        measure=measure,
        argv=["--quick", "--out", str(tmp_path / "x")],
    )
    assert out == str(tmp_path / "x")


def test_repro_all_quick_leaves_results_and_readme_alone(tmp_path, monkeypatch):
    """`repro_all --quick` runs each script with --quick --out <quick dir>/<name> and does not
    rewrite the README; a full run renders the README from its results root."""
    from experiments import repro_all

    calls = []
    monkeypatch.setattr(
        repro_all.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0)
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# r\n{START}\nold\n{END}\n")
    quick = tmp_path / "q"
    repro_all.main(["--quick", "--only", "mod", "--out-dir", str(quick), "--readme", str(readme)])
    assert calls[0][2:] == ["experiments.repro_mod", "--out", str(quick / "mod"), "--quick"]
    assert "old" in readme.read_text()
    _write(tmp_path, [{"loss": 1.0}])  # tmp_path/toy: a results root with one result
    repro_all.main(["--rederive", "--only", "mod", "--out-dir", str(tmp_path), "--readme", str(readme)])
    assert calls[1][2:] == ["experiments.repro_mod", "--out", str(tmp_path / "mod"), "--rederive"]
    assert "old" not in readme.read_text() and "Not run yet" in readme.read_text()


def test_rederive_rewrites_claims_from_the_stored_numbers_only(tmp_path):
    out = _write(tmp_path, [{"loss": 1.0}], data={"x": [1, 2]})
    before = load_results(out)

    def derive(record):
        assert record["data"] == {"x": [1, 2]}
        return [
            Claim("new", "-", "-", f"{record['rows'][0]['loss']}", "-", "implausible - see controls")
        ], "New."

    argv = ["--rederive", "--out", out]
    repro_main("toy", "Toy.", title="Toy", quick_help="q", measure=None, derive=derive, argv=argv)
    after = load_results(out)
    assert after["claims"][0]["verdict"] == "implausible - see controls" and after["summary"] == "New."
    assert {k: after[k] for k in ("rows", "data", "wall_s", "command")} == {
        k: before[k] for k in ("rows", "data", "wall_s", "command")
    }
    assert "re-derived" in open(os.path.join(out, "summary.md")).read()
    with pytest.raises(SystemExit, match="no stored result"):
        repro_main(
            "toy",
            "Toy.",
            title="Toy",
            quick_help="q",
            measure=None,
            derive=derive,
            argv=["--rederive", "--out", str(tmp_path / "none")],
        )


def test_readme_section_renders_results_and_placeholders(tmp_path):
    _write(tmp_path, [{"loss": 1.0}])
    section = render_results_section(str(tmp_path), ["toy", "absent"])
    assert section.startswith(START) and section.endswith(END)
    assert "### Toy" in section and f"![toy]({tmp_path}/toy/plot.png)" in section
    assert "Not run yet: `python -m experiments.repro_absent --quick`" in section
    readme = f"# r\n\n{START}\nold\n{END}\n\n## next\n"
    assert replace_section(readme, section) == f"# r\n\n{section}\n\n## next\n"
    with pytest.raises(ValueError, match="markers"):
        replace_section("# no markers", section)


def test_readme_has_the_results_section_with_every_experiment():
    readme = open("README.md").read()
    body = readme.split(START, 1)[1].split(END, 1)[0]
    for name in NAMES:
        assert f"repro_{name}" in body, name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_repro_quick_writes_finite_results(name, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", f"experiments.repro_{name}", "--quick", "--out", str(out)]
    cmd += ["--workdir", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = load_results(str(out))
    assert record["mode"] == "quick" and record["name"] == name
