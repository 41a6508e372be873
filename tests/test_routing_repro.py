"""The iso-FLOP families and seed statistics of the adaptive-depth reproductions
(experiments/lib/routing.py, stats.py; the scripts themselves run in the slow tier, tests/test_repro.py)."""

import numpy as np
import pytest

from experiments.lib.routing import (
    SELECT_SEED,
    FamilyModel,
    FamilyRun,
    Scale,
    iso_flop_family,
    sweep_lr,
    train_family,
)
from experiments.lib.routing_measure import training_flops
from experiments.lib.stats import diff_over_seeds, mean_spread, signed

TABLE = (
    FamilyModel("dense", dict(n_layers=4), flops="budget"),
    FamilyModel(
        "mod",
        dict(
            n_layers=8,
            mod=dict(pattern="dense,mod", capacity=0.125),
        ),
    ),
    FamilyModel(
        "mor",
        dict(
            n_layers=6,
            mor=dict(sharing="middle_cycle", recursions=2, router="expert"),
        ),
        seeds="first",
    ),
)


def test_iso_flop_family_spends_the_baselines_training_flops(tmp_path):
    scale = Scale(d_model=64, seq_len=128, base_steps=300)
    family = iso_flop_family(str(tmp_path), scale, TABLE, seed=3)
    budget = training_flops(family["dense"], 300)
    assert family["dense"].train.steps == 300
    for name, cfg in family.items():
        per_step = training_flops(cfg, 1)
        assert abs(training_flops(cfg, cfg.train.steps) - budget) <= per_step / 2, name
        assert cfg.train.seed == 3 and cfg.model.d_model == 64 and cfg.data.seq_len == 128
    # the routed models cost more per token here, so they train fewer steps
    assert family["mod"].train.steps < 300 and family["mod"].model.layer_capacities[1] == 0.125
    assert len({cfg.train.workdir for cfg in family.values()}) == len(TABLE)


def test_a_family_needs_one_budget_row_and_distinct_labels(tmp_path):
    scale = Scale(64, 128, 10)
    with pytest.raises(ValueError, match="exactly one row with flops='budget', got \\[\\]"):
        iso_flop_family(str(tmp_path), scale, TABLE[1:], seed=0)
    with pytest.raises(ValueError, match="labels"):
        iso_flop_family(str(tmp_path), scale, TABLE + (TABLE[1],), seed=0)
    with pytest.raises(ValueError, match="flops must be"):
        FamilyModel("x", {}, flops="baseline")


def test_train_family_trains_first_seed_rows_once(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr("experiments.lib.routing.run", trained.append)
    family = train_family(str(tmp_path), Scale(64, 128, 10), TABLE, [0, 1])
    assert [(c.train.workdir.rsplit("/", 1)[1]) for c in trained] == [
        "dense_s0",
        "mod_s0",
        "mor_s0",
        "dense_s1",
        "mod_s1",
    ]
    assert {k: [c.train.seed for c in v] for k, v in family.items()} == {
        "dense": [0, 1],
        "mod": [0, 1],
        "mor": [0],
    }


def test_family_run_views_its_rows():
    rows = [
        {"model": "dense", "seed": 0, "loss_causal": 2.0, "steps": 10},
        {"model": "mod", "seed": 0, "loss_causal": 1.9, "causal_acc": 0.9, "steps": 8},
        {"model": "dense", "seed": 1, "loss_causal": 2.2, "steps": 10},
    ]
    timing = [
        {"model": "dense", "fwd_tokens_per_s_topk": 5.0},
        {"model": "mod", "fwd_tokens_per_s_topk": 6.0},
    ]
    result = FamilyRun(Scale(64, 128, 10), [0, 1], {"dense": [], "mod": []}, rows, timing)
    assert result.labels == ["dense", "mod"]
    assert result.values("loss_causal") == {"dense": [2.0, 2.2], "mod": [1.9]}
    assert result.values("causal_acc") == {"mod": [0.9]}
    assert result.size["mod"]["steps"] == 8 and result.forward["mod"]["fwd_tokens_per_s_topk"] == 6.0
    assert result.setup("dense") == "d=64, T=128, 10 dense steps, byte corpus, 2 seed(s)"


def test_sweep_lr_picks_each_rows_best_rate_on_the_selection_seed(tmp_path, monkeypatch):
    """Every row trains at every rate on SELECT_SEED (never a scored seed), and each row gets the
    rate of its lowest causal loss; the family's FLOP budget is kept at every rate."""
    trained = []
    monkeypatch.setattr("experiments.lib.routing.run", trained.append)
    best = {"dense": 3e-3, "mod": 1e-3, "mor": 1e-2}

    def fake_eval(family, n_batches, layers=""):
        return [
            {
                "model": label,
                "seed": cfg.train.seed,
                "loss_causal": abs(cfg.optim.lr - best[label.split("@")[0]]),
            }
            for label, cfgs in family.items()
            for cfg in cfgs
        ]

    monkeypatch.setattr("experiments.lib.routing.evaluate_family", fake_eval)
    table, rows = sweep_lr(str(tmp_path), Scale(64, 128, 10), TABLE, (1e-3, 3e-3, 1e-2), 1)
    assert {m.label: m.lr for m in table} == best
    assert {c.train.seed for c in trained} == {SELECT_SEED} and len(trained) == 9
    assert all(r["sweep"] == 1 and r["model"] in best for r in rows)
    steps = {(c.train.workdir.rsplit("/", 1)[1].split("@")[0], c.train.steps) for c in trained}
    assert len(steps) == 3  # one step count per model, whatever the rate


def test_family_run_from_a_stored_record_keeps_rows_timing_and_sweep_apart():
    rows = [
        {"model": "dense", "seed": 0, "loss_causal": 2.0, "lr": 3e-3},
        {"model": "mod", "seed": 0, "loss_causal": 1.9, "lr": 1e-3},
        {"model": "mod", "seed": 100, "loss_causal": 1.8, "lr": 1e-3, "sweep": 1},
        {"model": "dense", "timing": "eval_forward", "fwd_tokens_per_s_topk": 5.0},
    ]
    record = {
        "rows": rows,
        "mode": "full",
        "data": {"seeds": [0], "scale": {"d_model": 64, "seq_len": 32, "base_steps": 5}},
    }
    result = FamilyRun.from_record(record)
    assert result.labels == ["dense", "mod"] and result.scale == Scale(64, 32, 5)
    assert result.values("loss_causal") == {"dense": [2.0], "mod": [1.9]}
    assert len(result.sweep) == 1 and result.forward["dense"]["fwd_tokens_per_s_topk"] == 5.0


def test_seed_statistics():
    assert mean_spread([1.0]) == (1.0, 0.0)
    m, s = mean_spread([1.0, 3.0])
    assert m == 2.0 and np.isclose(s, np.sqrt(2.0))
    # paired over seeds: a shared per-seed offset cancels
    m, s = diff_over_seeds([2.0, 5.0], [1.0, 4.0])
    assert m == 1.0 and s == 0.0
    with pytest.raises(ValueError):
        diff_over_seeds([1.0], [1.0, 2.0])
    assert signed(-0.0123, 0.004) == "-0.012 +- 0.004" and signed(0.5, 0.0) == "+0.500"


def test_mor_gate_only_routes_nothing_and_costs_what_the_recursive_model_costs():
    """The MoR control with capacity 1 everywhere: top-k and causal routing give the same logits (no
    token is skipped), every token reaches the last recursion, and its FLOPs are the recursive
    model's plus the routers."""
    import jax
    import jax.numpy as jnp

    from experiments.lib.runs import experiment
    from rocket.models import Transformer, flops_per_token

    stack = {"n_layers": 4, "mor.sharing": "middle_cycle", "mor.recursions": 2}
    gate = experiment(
        "", steps=1, seq_len=16, d_model=32, **stack, **{"mor.router": "expert", "mor.gate_only": True}
    )
    plain = experiment("", steps=1, seq_len=16, d_model=32, **stack, **{"mor.router": "none"})
    routed = experiment("", steps=1, seq_len=16, d_model=32, **stack, **{"mor.router": "expert"})
    f = {k: flops_per_token(c.model, 16) for k, c in (("gate", gate), ("plain", plain), ("routed", routed))}
    assert f["plain"] < f["gate"] < 1.01 * f["plain"] and f["routed"] < f["plain"]
    model = Transformer(gate.model)
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 2, 258)
    pos = jnp.broadcast_to(jnp.arange(16), (2, 16))
    params = model.init(jax.random.key(1), tokens, pos)["params"]
    (top, aux), (causal, _) = (
        model.apply({"params": params}, tokens, pos, routing=r) for r in ("topk", "causal")
    )
    np.testing.assert_allclose(np.asarray(top), np.asarray(causal), atol=1e-5)
    assert float(aux["metrics"]["mor/rec1/selected"]) == 1.0
