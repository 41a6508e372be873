"""The iso-FLOP families and seed statistics of the adaptive-depth reproductions
(experiments/routing_repro.py; the scripts themselves run in the slow tier, tests/test_repro.py)."""

import numpy as np
import pytest

from experiments.results import diff_over_seeds, mean_spread
from experiments.routing_repro import (
    Scale,
    iso_flop_family,
    training_flops,
    verdict_at_most,
    verdict_faster,
)

MODELS = {
    "dense": dict(n_layers=4),
    "mod": dict(n_layers=8, mod=dict(pattern="dense,mod", capacity=0.125)),
    "mor": dict(n_layers=6, mor=dict(sharing="middle_cycle", recursions=2, router="expert")),
}


def test_iso_flop_family_spends_the_baselines_training_flops(tmp_path):
    scale = Scale(d_model=64, seq_len=128, base_steps=300)
    family = iso_flop_family(str(tmp_path), scale, MODELS, baseline="dense", seed=3)
    budget = training_flops(family["dense"], 300)
    assert family["dense"].train.steps == 300
    for name, cfg in family.items():
        per_step = training_flops(cfg, 1)
        assert abs(training_flops(cfg, cfg.train.steps) - budget) <= per_step / 2, name
        assert cfg.train.seed == 3 and cfg.model.d_model == 64 and cfg.data.seq_len == 128
    # the routed models cost more per token here, so they train fewer steps
    assert family["mod"].train.steps < 300 and family["mod"].model.layer_capacities[1] == 0.125
    assert len({cfg.train.workdir for cfg in family.values()}) == len(MODELS)


def test_iso_flop_family_names_a_missing_baseline(tmp_path):
    with pytest.raises(ValueError, match="baseline 'vanilla'"):
        iso_flop_family(str(tmp_path), Scale(64, 128, 10), MODELS, baseline="vanilla", seed=0)


def test_seed_statistics_and_verdict():
    assert mean_spread([1.0]) == (1.0, 0.0)
    m, s = mean_spread([1.0, 3.0])
    assert m == 2.0 and np.isclose(s, np.sqrt(2.0))
    # paired over seeds: a shared per-seed offset cancels
    m, s = diff_over_seeds([2.0, 5.0], [1.0, 4.0])
    assert m == 1.0 and s == 0.0
    with pytest.raises(ValueError):
        diff_over_seeds([1.0], [1.0, 2.0])
    assert verdict_at_most(-0.5, 0.0, 0.01) == "reproduced"
    assert verdict_at_most(0.01, 0.0, 0.01) == "reproduced"
    assert verdict_at_most(0.02, 0.0, 0.01) == "partly"
    assert verdict_at_most(0.05, 0.0, 0.01) == "not reproduced"
    assert verdict_at_most(0.05, 0.02, 0.01) == "partly"  # the seed spread widens the tolerance


def test_speed_verdict_needs_a_ratio_beyond_the_timing_noise():
    assert verdict_faster(0.7, 0.6) == "reproduced"
    assert verdict_faster(0.9, 0.6) == verdict_faster(1.1, 0.6) == "inconclusive"
    assert verdict_faster(1.3, 1.1) == "not reproduced"
    assert verdict_faster(0.9, 0.6, noise=0.05) == "reproduced"
    assert verdict_faster(0.5, 0.83) == "inconclusive"  # faster than its FLOPs allow: timing noise
