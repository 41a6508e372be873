"""`model.scan_layers` for Mixture-of-Depths and Mixture-of-Recursions: the scanned body
(`rocket.models.scan`) computes the unscanned model's function with the parameters restacked:
logits, router losses and metrics, loss gradients, cached K/V with their valid masks, greedy
decoding and the partial-depth stages of `rocket.models.exits`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from rocket.config import ConfigError
from rocket.decode import ModelStep, commit_block, generate, new_cache
from rocket.models import Transformer
from rocket.models.exits import _params_of, model_stages
from rocket.models.scan import mod_period
from tests.helpers import positions_for, tiny_cfg

D = dict(d_model=32, n_heads=2, n_kv_heads=1, max_seq_len=32)
CASES = {  # MoD every other layer with a trailing layer outside the period; MoR's routers / KV
    "mod": dict(n_layers=5, mod=dict(pattern="dense,mod", capacity=0.5)),
    "mor_expert": dict(n_layers=6, mor=dict(sharing="middle_cycle", recursions=2)),
    "mor_expert_share": dict(n_layers=4, mor=dict(sharing="cycle", recursions=2, kv="share")),
    "mor_token": dict(n_layers=4, mor=dict(sharing="cycle", recursions=2, router="token")),
}
ROUTERS = 3.0  # router weights scaled up, so routing decisions differ between tokens
SLOW = pytest.mark.slow


def _stack(trees: list) -> dict:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def to_scanned(scfg, p: dict) -> dict:
    """Unscanned params (unboxed inner dict) -> the layout of the scanned model `scfg`."""
    p = dict(p)
    if scfg.mor.enabled:
        mor = dict(p["mor"])
        mor["shared"] = _stack([mor.pop(f"shared_{j}") for j in range(scfg.mor_layers_per_recursion)])
        return {**p, "mor": mor}
    period, reps = mod_period(scfg)
    layers = [p.pop(f"layers_{i}") for i in range(period * reps)]
    p["layers"] = {f"layer_{j}": _stack(layers[j::period]) for j in range(period)}
    return p


def _random_params(cfg, seed: int = 0) -> dict:
    """Random params of `cfg` from its shapes (no init run): weights N(0, 0.05^2), vectors (norm
    scales, biases) 1 + N(0, 0.1^2); router weights scaled by `ROUTERS`."""
    tokens = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens, tokens)))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes["params"])
    rng, out = np.random.default_rng(seed), []  # numpy: no per-shape compile
    for path, leaf in leaves:
        x = rng.standard_normal(leaf.shape).astype(np.float32)
        x = (
            0.05 * x * (ROUTERS if "router" in jax.tree_util.keystr(path) else 1.0)
            if leaf.ndim > 1
            else 1 + 0.1 * x
        )
        out.append(jnp.asarray(x))
    return jax.tree_util.tree_unflatten(treedef, out)


def _pair(name: str):
    """(cfg, unscanned params, scanned cfg, the same params in the scanned layout)."""
    cfg = tiny_cfg(**D, **CASES[name])
    scfg = tiny_cfg(**D, **CASES[name], scan_layers=True)
    params = _random_params(cfg)
    sparams = to_scanned(scfg, params)
    assert jax.tree.map(jnp.shape, sparams) == jax.tree.map(jnp.shape, _random_params(scfg))  # the layout
    return cfg, params, scfg, sparams


def _batch():
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 258)
    segment_ids = jnp.array([[1] * 16, [1] * 9 + [2] * 5 + [0] * 2])  # packed, padded
    return tokens, segment_ids


def _loss(model, tokens, segment_ids):
    def loss(p):
        logits, aux = model.apply({"params": p}, tokens, positions_for(tokens), segment_ids=segment_ids)
        nats = -jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)
        total = jnp.mean(nats) + sum(aux.get("aux_losses", {}).values())
        return total, (logits, aux.get("aux_losses"), aux.get("metrics"))

    return loss


@pytest.mark.parametrize(
    "name",
    [
        "mod",
        "mor_expert",
        pytest.param("mor_expert_share", marks=SLOW),
        pytest.param("mor_token", marks=SLOW),
    ],
)
def test_scanned_forward_and_router_extras_equal_the_unscanned_model(name):
    """Top-k routing on packed, padded rows: logits, loss, router losses and metrics."""
    cfg, params, scfg, sparams = _pair(name)
    if name == "mod":
        assert mod_period(scfg) == (2, 2)  # the dense + MoD pair twice, layer 4 unrolled
    tokens, segment_ids = _batch()
    loss, (logits, losses, metrics) = jax.jit(_loss(Transformer(cfg), tokens, segment_ids))(params)
    sloss, (slogits, slosses, smetrics) = jax.jit(_loss(Transformer(scfg), tokens, segment_ids))(sparams)
    np.testing.assert_allclose(slogits, logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(sloss, loss, rtol=1e-6)
    assert set(slosses) == set(losses) and set(smetrics) == set(metrics) and metrics
    for k in losses:
        np.testing.assert_allclose(slosses[k], losses[k], rtol=1e-5, atol=1e-8, err_msg=k)
    for k in metrics:
        np.testing.assert_allclose(smetrics[k], metrics[k], atol=1e-6, err_msg=k)


@SLOW
@pytest.mark.parametrize("name", list(CASES))
def test_scanned_loss_gradients_equal_the_unscanned_model(name):
    cfg, params, scfg, sparams = _pair(name)
    tokens, segment_ids = _batch()
    grad = lambda c, p: jax.jit(jax.grad(lambda q: _loss(Transformer(c), tokens, segment_ids)(q)[0]))(p)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4),
        grad(scfg, sparams),
        to_scanned(scfg, grad(cfg, params)),
    )


@pytest.mark.parametrize(
    "name", ["mod", pytest.param("mor_expert", marks=SLOW), pytest.param("mor_expert_share", marks=SLOW)]
)
def test_scanned_cached_blocks_equal_the_unscanned_model(name):
    """Two blocks through the cache (routing="causal"; the second reads what the first committed):
    the same logits, K/V and valid masks, and the same committed lengths per cache layer."""
    cfg, params, scfg, sparams = _pair(name)
    tokens = jax.random.randint(jax.random.key(2), (2, 8), 0, 258)
    pos = positions_for(tokens)

    def blocks(c, p):
        model = Transformer(c)
        step = jax.jit(
            lambda cache, tok, q: model.apply({"params": p}, tok, q, cache=cache, routing="causal")
        )
        cache, outs = new_cache(model, 2, 8), []
        for cut in (slice(0, 4), slice(4, 8)):  # one shape: one compile
            logits, aux = step(cache, tokens[:, cut], pos[:, cut])
            cache = commit_block(cache, aux["new_kv"], 4)
            outs.append((logits, aux["new_kv"]))
        return outs, cache

    want, cache = blocks(cfg, params)
    got, scache = blocks(scfg, sparams)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), got, want)
    np.testing.assert_array_equal(scache.length, cache.length)
    if name != "mor_expert_share":  # routing skipped some tokens: layers hold different lengths
        assert len(set(np.asarray(cache.length[:, 0]).tolist())) > 1


@SLOW
@pytest.mark.parametrize("name", ["mod", "mor_expert", "mor_expert_share"])
def test_scanned_greedy_decoding_equals_the_unscanned_model(name):
    cfg, params, scfg, sparams = _pair(name)
    prompt, prompt_len = jax.random.randint(jax.random.key(2), (2, 6), 0, 258), jnp.array([6, 4])
    out = [
        generate(
            ModelStep(Transformer(c), {"params": p}), prompt, prompt_len, jax.random.key(0), max_new_tokens=6
        )
        for c, p in ((cfg, params), (scfg, sparams))
    ]
    np.testing.assert_array_equal(out[1].tokens, out[0].tokens)


@pytest.mark.parametrize("name", ["mod", "mor_expert"])
def test_partial_depth_stages_read_the_same_params_from_the_scanned_layout(name):
    cfg, params, scfg, sparams = _pair(name)
    stages, sstages = model_stages(cfg), model_stages(scfg)
    assert [(s.kind, s.cache_layers, s.capacity) for s in sstages] == [
        (s.kind, s.cache_layers, s.capacity) for s in stages
    ]
    for st, sst in zip(stages, sstages):
        jax.tree.map(
            np.testing.assert_array_equal, _params_of(scfg, sparams, sst), _params_of(cfg, params, st)
        )


def test_scan_refuses_capacities_without_a_period():
    with pytest.raises(ConfigError, match="'model.scan_layers'.*mod.schedule"):
        tiny_cfg(n_layers=4, mod=dict(pattern="mod", schedule="prd"), scan_layers=True)
    assert tiny_cfg(n_layers=4, mod=dict(schedule="prd"), scan_layers=True).scan_layers  # all dense
