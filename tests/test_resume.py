"""Resuming with a different config: a shape change is one error line naming the fields, other
changes warn with the list, `--resume_config=saved` reuses the checkpoint's config, and
`--print_config` prints the resolved config."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from rocket.train.checkpoint import CheckpointError
from rocket.train.loop import train
from tests.test_train import ROOT, _config


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    cfg = _config(tmp, str(tmp / "run"), steps=4)
    train(cfg)
    return tmp, cfg


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rocket.train", *args],
        cwd="/",  # any directory
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT},
    )


def test_a_shape_change_is_one_error_line_naming_the_fields(run4):
    _, cfg = run4
    bigger = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_layers=cfg.model.n_layers + 1))
    with pytest.raises(CheckpointError) as e:
        train(bigger)
    msg = str(e.value)
    assert "\n" not in msg and f"model.n_layers: {cfg.model.n_layers} -> {cfg.model.n_layers + 1}" in msg
    assert "--resume_config=saved" in msg and "optim." not in msg


def test_other_changes_resume_with_a_warning_listing_them(run4, capsys):
    _, cfg = run4
    changed = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=1e-3))
    train(changed)  # step 4 of 4: restores and finishes
    out = capsys.readouterr().out
    assert "resumed from" in out
    assert (
        "warning: 1 config field(s) differ from the checkpoint's" in out
        and f"optim.lr: {cfg.optim.lr!r} -> 0.001" in out
    )


def test_resume_config_saved_and_print_config(run4):
    tmp, cfg = run4
    res = _cli(
        "--resume_config=saved",
        f"--config.train.workdir={tmp / 'run'}",
        "--config.train.steps=6",
        "--print_config",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    printed = json.loads(res.stdout)
    assert printed["model"]["n_layers"] == cfg.model.n_layers and printed["data"]["corpus"] == cfg.data.corpus
    assert printed["train"]["steps"] == 6 and printed["optim"]["lr"] == cfg.optim.lr
    res = _cli("--resume_config=saved")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: config field 'train.workdir': --resume_config=saved needs the run: pass --config.train.workdir=DIR"
    ]
    res = _cli("--resume_config=saved", f"--config.train.workdir={tmp / 'nothing'}")
    assert res.returncode == 2 and "no checkpoints in" in res.stderr and "Traceback" not in res.stderr


def test_a_streamed_run_resumed_from_an_earlier_checkpoint_repeats_the_same_losses(tmp_path):
    """hf: corpus through the loop: the data position saved with step 2 (the stream's own state)
    restores the same batches, so steps 3-4 reproduce the uninterrupted run's losses exactly."""
    import shutil

    datasets = pytest.importorskip("datasets")
    from tests.test_train import _train_losses

    rows = [{"text": f"record {i}: " + "abc def " * (i % 7 + 1)} for i in range(80)]
    (tmp_path / "pq").mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pq" / "train.parquet"))
    base = _config(tmp_path, str(tmp_path / "ref"), steps=4)
    data = dataclasses.replace(base.data, corpus=f"hf:{tmp_path / 'pq'}", val_docs=8, shuffle_window=4)
    cfg = dataclasses.replace(
        base, data=data, train=dataclasses.replace(base.train, ckpt_every=2, eval_every=4)
    )
    train(cfg)
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "ref", resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    (resumed / "logs" / "metrics.jsonl").unlink()
    train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workdir=str(resumed))))
    ref, again = _train_losses(str(tmp_path / "ref")), _train_losses(str(resumed))
    assert sorted(again) == [3, 4] and all(again[s] == ref[s] for s in (3, 4)), (ref, again)


def test_train_help_lists_the_flags(capsys):
    from rocket.train import __main__ as train_cli

    train_cli.run(["rocket.train", "--help"])
    out = capsys.readouterr().out
    assert "--resume_config" in out and "--print_config" in out and "--config.<dotted.path>" in out
