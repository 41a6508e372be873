"""The shared routing primitives (rocket.routing) and the adaptive-depth config fields."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.config import (
    ConfigError,
    ExperimentConfig,
    ModConfig,
    ModelConfig,
    from_config_dict,
    prd_capacities,
    to_config_dict,
)
from rocket.routing import (
    capacity_to_k,
    gather,
    gather_mask,
    route_topk,
    router_bce,
    scatter_add,
    selected_mask,
)


def test_route_topk_is_sorted_top_k_and_never_picks_padding():
    scores = jnp.array([[0.5, 3.0, -1.0, 2.0, 9.0, 1.0], [4.0, 3.0, 2.0, 1.0, 0.0, -1.0]])
    valid = jnp.array([[True] * 4 + [False] * 2, [True] * 6])  # row 0: the best score is padding
    idx = route_topk(scores, 3, valid)
    np.testing.assert_array_equal(idx, [[0, 1, 3], [0, 1, 2]])
    np.testing.assert_array_equal(selected_mask(idx, 6)[0], [True, True, False, True, False, False])
    # Fewer valid tokens than k: padding fills the rest, and gather(valid, idx) flags it.
    idx = route_topk(scores, 5, valid)
    np.testing.assert_array_equal(gather(valid, idx)[0], [True, True, True, True, False])
    with pytest.raises(ValueError, match="k must be"):
        route_topk(scores, 0)


def test_gather_scatter_and_mask_restriction_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    idx = np.array([[1, 4, 6], [0, 2, 3]])
    np.testing.assert_array_equal(gather(jnp.asarray(x), jnp.asarray(idx)), x[np.arange(2)[:, None], idx])
    upd = rng.normal(size=(2, 3, 3)).astype(np.float32)
    want = x.copy()
    for b in range(2):
        want[b, idx[b]] += upd[b]
    np.testing.assert_allclose(
        scatter_add(jnp.asarray(x), jnp.asarray(idx), jnp.asarray(upd)), want, rtol=1e-6
    )
    mask = rng.random((2, 7, 7)) > 0.5
    for b in range(2):
        np.testing.assert_array_equal(
            gather_mask(jnp.asarray(mask), jnp.asarray(idx))[b], mask[b][idx[b]][:, idx[b]]
        )


def test_gather_and_scatter_lower_to_gather_scatter_not_matmuls():
    """The routed path must not build T x k one-hot matrices (forward or backward)."""

    def f(x_btd, scores_bt):
        idx = route_topk(scores_bt, 32, None)
        sel = gather(x_btd, idx)
        return jnp.sum(scatter_add(x_btd, idx, jnp.tanh(sel)) ** 2)

    x, s = jnp.ones((2, 256, 16)), jnp.arange(512.0).reshape(2, 256)
    hlo = jax.jit(jax.grad(f)).lower(x, s).compile().as_text()
    assert "gather" in hlo and "scatter" in hlo
    assert " dot(" not in hlo and "convolution" not in hlo


def test_capacity_to_k_is_static_and_at_least_one():
    assert capacity_to_k(0.125, 2048) == 256
    assert capacity_to_k(0.125, 4) == 1
    assert capacity_to_k(1.0, 5) == 5
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="capacity"):
            capacity_to_k(bad, 8)


def test_progressive_ratio_decay_matches_p_mod_layout():
    caps = prd_capacities(32, mean=0.5, cap_max=0.85, cap_min=0.15)
    assert all(c is None for c in caps[:8]) and all(c is not None for c in caps[8:])  # layers 0-7 dense
    assert all(c == 0.15 for c in caps[24:])  # the floor from layer 24 on
    assert all(a >= b for a, b in zip(caps[8:], caps[9:]))  # decays with depth


def test_router_bce_pushes_selected_logits_up():
    logits = jnp.zeros((1, 4))
    selected = jnp.array([[True, False, True, False]])
    g = jax.grad(lambda l: router_bce(l, selected, None))(logits)
    assert np.all(np.asarray(g[0, [0, 2]]) < 0) and np.all(np.asarray(g[0, [1, 3]]) > 0)
    np.testing.assert_allclose(router_bce(logits, selected, None), np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize(
    "values, field",
    [
        ({"mod": {"capacity": 0.0}}, "mod.capacity"),
        ({"mod": {"capacity": 1.5}}, "mod.capacity"),
        ({"mod": {"pattern": "dense,moe"}}, "mod.pattern"),
        ({"mod": {"gate": "softmax"}}, "mod.gate"),
        ({"mod": {"string": True}}, "mod.string"),  # STRing needs the bounded tanhnorm gate
        ({"router": {"causal": "oracle"}}, "router.causal"),
        ({"mod": {"schedule": "linear"}}, "mod.schedule"),
        ({"mor": {"sharing": "cycle", "recursions": 0}}, "mor.recursions"),
        ({"mor": {"sharing": "cycle", "recursions": 3}, "n_layers": 4}, "mor.recursions"),
        ({"mor": {"sharing": "sequence"}}, "mor.sharing"),
        ({"mor": {"sharing": "cycle", "router": "random"}}, "mor.router"),
        ({"mod": {"pattern": "mod", "schedule": "prd"}, "scan_layers": True}, "scan_layers"),
        ({"mod": {"pattern": "dense,mod"}, "mor": {"sharing": "cycle"}}, "mod.pattern"),
    ],
)
def test_bad_routing_config_names_the_field(values, field):
    with pytest.raises(ConfigError, match=f"'model.{field}'"):
        from_config_dict({"model": values})


def test_routing_config_round_trips_and_overrides():
    cfg = ExperimentConfig(
        model=ModelConfig(mod=ModConfig(pattern="dense,mod", gate="tanhnorm", string=True))
    )
    cd = to_config_dict(cfg)
    assert from_config_dict(cd) == cfg
    cd.model.mod.capacity = 0.25
    assert from_config_dict(cd).model.layer_capacities == (None, 0.25, None, 0.25)
    prd = ModelConfig(n_layers=6, mod=ModConfig(pattern="mod", schedule="prd", capacity=0.5))
    assert prd.layer_capacities[0] is None and prd.layer_capacities[-1] == 0.15


def test_iso_flop_configs_spend_the_baselines_training_flops():
    import glob
    import importlib.util
    import os

    from rocket.models import flops_per_token

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    totals = {}
    for path in sorted(glob.glob(os.path.join(root, "experiments", "configs", "mo[dr]_*.py"))):
        spec = importlib.util.spec_from_file_location("cfg", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cfg = from_config_dict(module.get_config())
        family = os.path.basename(path)[:3]
        totals.setdefault(family, []).append(cfg.train.steps * flops_per_token(cfg.model, cfg.data.seq_len))
    assert set(totals) == {"mod", "mor"} and all(len(v) >= 2 for v in totals.values())
    for family_totals in totals.values():
        assert max(family_totals) / min(family_totals) < 1.01
