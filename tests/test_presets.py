"""Paper-scale presets (`--scale paper`, experiments/lib/presets.py): every repro script's preset
builds abstractly (jax.eval_shape, no training, no memory) with the paper's parameter count."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.lib.presets import PaperArm, PaperPreset, format_plan, run_paper
from experiments.lib.results import NAMES
from rocket.models import Transformer


def _abstract_params(cfg) -> dict:
    tokens = jnp.zeros((1, 8), jnp.int32)
    init = lambda: Transformer(cfg).init(jax.random.key(0), tokens, jnp.zeros((1, 8), jnp.int32))  # noqa: E731
    return jax.eval_shape(init)["params"]


@pytest.mark.parametrize("name", NAMES)
def test_every_paper_preset_builds_with_the_papers_parameter_count(name):
    preset = getattr(importlib.import_module(f"experiments.repro_{name}"), "PAPER", None)
    if preset is None:  # e.g. repro_selfspec: --scale paper is a one-line error (tests/test_self_spec.py)
        pytest.skip(f"repro_{name} has no paper-scale preset")
    for label, arm in preset.arms.items():
        params = _abstract_params(preset.model_config(label))
        leaves = jax.tree_util.tree_leaves_with_path(params)
        embed = sum(int(np.prod(x.shape)) for p, x in leaves if "embed" in jax.tree_util.keystr(p))
        total = sum(int(np.prod(x.shape)) for _, x in leaves)
        count = total if arm.count == "total" else total - embed
        assert abs(count / arm.params - 1) < 0.05, (name, label, count, arm.params)
    plan = format_plan(name, preset)
    assert "chip-hours" in plan and preset.source in plan


def test_run_paper_prints_the_plan_trains_every_arm_and_compares_with_the_baseline(
    tmp_path, monkeypatch, capsys
):
    preset = PaperPreset(
        source="toy",
        model=dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1),
        arms={
            "base": PaperArm({}, 1e4),
            "big": PaperArm({"n_layers": 2}, 2e4, baseline="base", paper_gain=0.01),
        },
        seq_len=16,
        batch_size=2,
        tokens=320,
        lr=1e-3,
        corpus="stdlib",
        vocab_size=512,
    )
    losses = {"base": 2.0, "big": 1.5}
    trained = []
    monkeypatch.setattr(
        "experiments.lib.runs.run",
        lambda cfg: trained.append(cfg) or losses[cfg.train.workdir.rsplit("/", 1)[1]],
    )

    class Args:
        name, workdir = "toy", str(tmp_path)

    report = run_paper(Args, preset)
    assert "toy --scale paper: toy" in capsys.readouterr().out
    assert [c.train.steps for c in trained] == [10, 10] and trained[0].data.seq_len == 16
    # -25% against a paper gain of 1%: far beyond 3x the paper's effect
    assert [c.verdict for c in report.claims] == ["implausible - see controls"]
    assert [r["val_loss"] for r in report.rows] == [2.0, 1.5]
    with pytest.raises(SystemExit, match="needs weights"):
        run_paper(Args, PaperPreset(**{**preset.__dict__, "needs": "weights"}))
