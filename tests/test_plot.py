"""`python -m rocket.plot`: curves read back from metrics.jsonl (resumed steps: last record wins)."""

from __future__ import annotations

import json

import pytest

from rocket import plot


def _run(tmp_path, name: str, scale: float):
    logs = tmp_path / name / "logs"
    logs.mkdir(parents=True)
    recs = [
        {
            "step": s,
            "split": "train",
            "loss": scale / s,
            "bits_per_byte": 2 * scale / s,
            "tokens_per_sec": 100.0 * s,
        }
        for s in (1, 2, 3)
    ]
    recs += [
        {"step": 2, "split": "train", "loss": 9.0, "bits_per_byte": 9.0, "tokens_per_sec": 5.0}
    ]  # resumed
    recs += [{"step": 3, "split": "eval", "loss": 0.5, "bits_per_byte": 0.7}]
    (logs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(tmp_path / name)


def test_read_metrics_keeps_the_last_record_of_each_step(tmp_path):
    curves = plot.read_metrics(_run(tmp_path, "a", 3.0))
    assert curves["train"]["loss"] == [(1, 3.0), (2, 9.0), (3, 1.0)]
    assert curves["train"]["tokens_per_sec"] == [(1, 100.0), (2, 5.0), (3, 300.0)]
    assert curves["eval"]["bits_per_byte"] == [(3, 0.7)] and "tokens_per_sec" not in curves["eval"]


def test_cli_draws_one_png_for_several_runs(tmp_path, capsys):
    runs = [_run(tmp_path, "a", 3.0), _run(tmp_path, "b", 5.0)]
    out = tmp_path / "cmp.png"
    plot.main([*runs, "--out", str(out), "--labels", "small,big"])
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    plot.main([runs[0]])  # one run: next to its logs
    assert (tmp_path / "a" / "curves.png").exists()
    with pytest.raises(SystemExit) as e:
        plot.main([str(tmp_path / "nothing")])
    assert e.value.code == 2 and "no metrics at" in capsys.readouterr().err
