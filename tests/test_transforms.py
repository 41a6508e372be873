"""Loss transforms: sample reweighting, MEAP, ssToken token selection and their composition in the step."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import (
    ConfigError,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    from_config_dict,
    from_dict,
    to_config_dict,
)
from rocket.data import random_batch
from rocket.layers.attention import attention_probs
from rocket.models import Transformer
from rocket.train.checkpoint import Checkpointer
from rocket.train.reweighting import sample_weights, sstoken_keep
from rocket.train.step import init_state, make_train_step
from rocket.train.transforms import (
    LossContext,
    LossTransforms,
    last_layer_attention,
    meap_mask_inputs,
    reweight_fn,
)
from tests.helpers import TINY

MCFG = ModelConfig(**TINY)
_TX = optax.sgd(0.5)


def _sft_batch(b=4, t=32, prompt=8, seed=0):
    """Random tokens; the first `prompt` positions of each row are the prompt (no loss)."""
    batch = {k: jnp.asarray(v) for k, v in random_batch(b, t, 60, seed=seed).items()}
    batch["prompt_mask"] = jnp.broadcast_to(jnp.arange(t) < prompt, (b, t))
    batch["weights"] = jnp.where(batch["prompt_mask"], 0.0, 1.0)
    return batch


# --- sample reweighting -------------------------------------------------------------------------


def _reference_weights(loss, strategy, r, delta=1.0):
    """The paper's formulas in numpy (sowmaster/.../src/trainer.py)."""
    h = delta * (2 * loss - (loss.max() + loss.min())) / max(loss.max() - loss.min(), 1e-6)
    f = {
        "linupper": np.minimum(h + delta, delta),
        "quadratic": 1 - h**2 / delta**2,
        "extremes": np.abs(h),
        "upper": 0.5 * h + 0.5 * delta,
    }[strategy]
    e = np.exp((f - f.max()) / r)
    return len(loss) * e / e.sum()


@pytest.mark.parametrize("strategy", ["linupper", "quadratic", "extremes", "upper"])
def test_sample_weights_match_the_paper_are_positive_mean_one_and_shift_invariant(strategy):
    loss = np.random.default_rng(0).uniform(1.0, 5.0, size=12).astype(np.float32)
    valid = np.ones(12, bool)
    w = np.asarray(sample_weights(jnp.asarray(loss), jnp.asarray(valid), strategy=strategy, temperature=0.5))
    np.testing.assert_allclose(w, _reference_weights(loss, strategy, 0.5), rtol=1e-5)
    assert (w > 0).all()
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
    shifted = sample_weights(jnp.asarray(loss + 7.0), jnp.asarray(valid), strategy=strategy, temperature=0.5)
    np.testing.assert_allclose(shifted, w, rtol=1e-4)
    flat = sample_weights(jnp.asarray(loss), jnp.asarray(valid), strategy=strategy, temperature=1e6)
    np.testing.assert_allclose(flat, 1.0, atol=1e-5)  # r -> infinity: uniform


def test_sample_weights_direction_invalid_samples_and_uniform_is_exactly_one():
    loss = jnp.array([1.0, 2.0, 3.0, 4.0, 100.0])
    valid = jnp.array([True, True, True, True, False])
    up = np.asarray(sample_weights(loss, valid, strategy="linupper", temperature=1.0))
    assert up[4] == 0.0 and np.all(np.diff(up[:4]) >= 0) and up[0] < up[3]  # low loss down-weighted
    np.testing.assert_allclose(up[:4].mean(), 1.0, rtol=1e-6)  # mean 1 over the valid samples only
    mid = np.asarray(sample_weights(loss, valid, strategy="quadratic", temperature=1.0))
    assert mid[1] > mid[0] and mid[2] > mid[3]  # favours medium losses
    uni = np.asarray(sample_weights(jnp.arange(49.0), jnp.ones(49, bool), strategy="uniform"))
    assert (uni == 1.0).all()  # exactly: exp(0) * N / N
    equal = sample_weights(jnp.full(4, 2.0), jnp.ones(4, bool), strategy="linupper")
    assert np.isfinite(equal).all()  # zero loss range: the eps keeps it finite


def test_sample_weights_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown reweighting strategy"):
        sample_weights(jnp.ones(3), jnp.ones(3, bool), strategy="lin_upper")
    with pytest.raises(ValueError, match="temperature"):
        sample_weights(jnp.ones(3), jnp.ones(3, bool), strategy="linupper", temperature=0.0)


def test_reweight_fn_per_segment_samples_and_warmup():
    batch = {k: jnp.asarray(v) for k, v in random_batch(2, 8, 60).items()}
    batch["segment_ids"] = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    batch["weights"] = (batch["segment_ids"] > 0).astype(jnp.float32)
    nats = jnp.array([[1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 9.0], [2.0] * 8])
    fn = reweight_fn(strategy="linupper", temperature=1.0, delta=1.0, warmup_steps=5, unit="segment")
    w, m = fn(nats, LossContext(jnp.array(10), batch, {}, None))
    expect = np.asarray(sample_weights(jnp.array([1.0, 3.0, 2.0]), jnp.ones(3, bool), strategy="linupper"))
    np.testing.assert_allclose(w[0, :3], expect[0])
    np.testing.assert_allclose(w[0, 3:7], expect[1])
    np.testing.assert_allclose(w[1], expect[2], rtol=1e-6)
    np.testing.assert_allclose(m["reweight/w_max"], expect.max(), rtol=1e-6)
    w_warm, _ = fn(nats, LossContext(jnp.array(4), batch, {}, None))
    assert (np.asarray(w_warm)[np.asarray(batch["weights"]) > 0] == 1.0).all()


# --- MEAP ---------------------------------------------------------------------------------------


def test_meap_masks_shared_input_positions_never_targets_and_rate_zero_is_identity():
    batch = {k: jnp.asarray(v) for k, v in random_batch(3, 40, 60).items()}
    batch["segment_ids"] = batch["segment_ids"].at[2, 30:].set(0)  # padding is never masked
    out = meap_mask_inputs(jax.random.key(1), batch, rate=0.15, mask_id=99)
    for k in batch:
        if k != "inputs":
            np.testing.assert_array_equal(out[k], batch[k])  # targets (and all else) untouched
    hit = np.asarray(out["inputs"] != batch["inputs"])
    assert (np.asarray(out["inputs"])[hit] == 99).all()
    cols = np.flatnonzero(hit[0])
    assert len(cols) == int(40 * 0.15) and cols.max() < 39
    np.testing.assert_array_equal(hit[1], hit[0])  # one set of positions for the whole batch
    np.testing.assert_array_equal(hit[2], hit[0] & (np.arange(40) < 30))
    assert meap_mask_inputs(jax.random.key(1), batch, rate=0.0, mask_id=99) is batch
    with pytest.raises(ValueError, match="rate"):
        meap_mask_inputs(jax.random.key(1), batch, rate=1.0, mask_id=99)


# --- ssToken ------------------------------------------------------------------------------------


def test_sstoken_keeps_the_top_fraction_per_segment_with_mean_one_weights():
    seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]])
    resp = jnp.array([[0, 1, 1, 1, 0, 1, 1, 1, 1, 0]], bool)  # 3 + 4 response tokens
    nats = jnp.zeros((1, 10))
    hist = jnp.array([[9.0, 1.0, 3.0, 2.0, 9.0, 4.0, 1.0, 3.0, 2.0, 9.0]])  # REL = hist here
    w = np.asarray(sstoken_keep(nats, hist, None, resp, seg, keep=0.5, gamma=1.0))[0]
    # segment 1: ceil(1.5) = 2 of 3 kept (REL 3 and 2), weight 3/2; segment 2: 2 of 4 (4, 3), weight 2
    np.testing.assert_allclose(w, [0, 0, 1.5, 1.5, 0, 2.0, 0, 2.0, 0, 0])
    full = np.asarray(sstoken_keep(nats, hist, None, resp, seg, keep=1.0, gamma=1.0))
    np.testing.assert_array_equal(full, np.asarray(resp, np.float32))  # keep 1: exactly the plain mask
    attn = jnp.array([[0, 0, 0.9, 0, 0, 0, 0.9, 0, 0, 0]])  # attention-only (gamma 0) picks by A_t
    w_a = np.asarray(sstoken_keep(nats, hist, attn, resp, seg, keep=0.25, gamma=0.0))[0]
    assert np.flatnonzero(w_a).tolist() == [2, 6]
    with pytest.raises(ValueError, match="prompt_attention"):
        sstoken_keep(nats, hist, None, resp, seg, keep=0.5, gamma=0.5)


def test_sown_attention_probabilities_are_causal_segment_aware_and_layout_independent():
    tokens = jnp.asarray(random_batch(2, 12, 60)["inputs"])
    pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
    seg = jnp.array([[1] * 5 + [2] * 7, [1] * 12])
    scanned = Transformer(ModelConfig(**TINY, scan_layers=True))
    params = nn.meta.unbox(scanned.init(jax.random.key(0), tokens, pos)["params"])
    unstacked = {k: v for k, v in params.items() if k != "layers"}
    for i in range(TINY["n_layers"]):  # the same weights in the per-layer layout
        unstacked[f"layers_{i}"] = jax.tree.map(lambda x: x[i], params["layers"])
    got = []
    for model, p in ((Transformer(MCFG), unstacked), (scanned, params)):
        (_, _), inter = model.apply({"params": p}, tokens, pos, segment_ids=seg, mutable=["intermediates"])
        got.append(np.asarray(last_layer_attention(inter["intermediates"])))  # [B, T, S]
        if model is not scanned:  # the last layer's, not the first's
            last = inter["intermediates"][f"layers_{TINY['n_layers'] - 1}"]["attn"]["attn_probs"][0]
            np.testing.assert_allclose(got[-1], last.mean(1), rtol=1e-6)
    probs = got[0]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert (np.triu(probs[1], 1) == 0).all()  # causal: no mass on future keys
    assert (probs[0, 5:, :5] == 0).all() and (probs[0, :5, 5:] == 0).all()  # no mass across documents
    np.testing.assert_allclose(got[1], probs, atol=1e-5)  # scan_layers stacks them; same last layer
    q = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
    k = jax.random.normal(jax.random.key(1), (1, 4, 2, 8))
    p = attention_probs(q, k, jnp.tril(jnp.ones((1, 4, 4), bool)))
    ref = jax.nn.softmax(
        jnp.where(
            jnp.tril(jnp.ones((4, 4), bool)),
            jnp.einsum("thd,shd->hts", q[0], jnp.repeat(k[0], 2, 1)) / 8**0.5,
            -1e30,
        )
    )
    np.testing.assert_allclose(p[0], ref, rtol=1e-5)  # GQA head h reads kv head h // 2


# --- composition in the train step --------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _plain_step_result():
    """One plain (untransformed) step on `_sft_batch()`, 2 microbatches: the reference."""
    model = Transformer(MCFG)
    state = nn.meta.unbox(init_state(model, _TX, jax.random.key(0), 32))
    return jax.jit(make_train_step(model, _TX, microbatches=2))(state, _sft_batch(), jax.random.key(3))


def _step_pair(transforms, ema=False):
    """(plain step result, transformed step result, initial state) on the same batch and keys."""
    model = Transformer(MCFG)
    state = nn.meta.unbox(init_state(model, _TX, jax.random.key(0), 32, ema=ema))
    new = jax.jit(make_train_step(model, _TX, microbatches=2, transforms=transforms))
    return _plain_step_result(), new(state, _sft_batch(), jax.random.key(3)), state


def test_uniform_reweighting_and_meap_rate_zero_equal_the_plain_step_exactly():
    lcfg = LossConfig(reweight="uniform", reweight_unit="segment", aux_scales="")
    tr = LossTransforms.from_config(lcfg, MCFG)
    tr = LossTransforms(
        batch_fns=(lambda key, b, step: meap_mask_inputs(key, b, rate=0.0, mask_id=257),),
        weight_fns=tr.weight_fns,
    )
    (s0, m0), (s1, m1), _ = _step_pair(tr)
    for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)):
        np.testing.assert_array_equal(a, b)
    assert float(m1["transform/objective"]) == float(m0["loss"])
    assert float(m1["transform/reweight/w_max"]) == 1.0


def test_sstoken_keep_one_equals_plain_sft_and_updates_the_ema():
    lcfg = LossConfig(token_select="sstoken", token_keep=1.0, token_gamma=0.5, token_ema_decay=0.9)
    tr = LossTransforms.from_config(lcfg, MCFG)
    assert tr.capture_attention and tr.ema_decay == 0.9
    (s0, m0), (s1, m1), init = _step_pair(tr, ema=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s0.params, s1.params)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)
    assert float(m1["transform/sstoken/kept_fraction"]) == 1.0
    expect = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, init.params, s1.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), s1.ema_params, expect)


def test_sstoken_selection_changes_the_update_and_resume_with_the_ema_is_exact(tmp_path):
    model = Transformer(MCFG)
    tx = optax.adam(1e-2)
    lcfg = LossConfig(token_select="sstoken", token_keep=0.5, token_gamma=1.0, token_ema_decay=0.5)
    tr = LossTransforms.from_config(lcfg, MCFG)
    assert not tr.capture_attention  # gamma = 1: excess loss only
    step = jax.jit(make_train_step(model, tx, transforms=tr))
    state = nn.meta.unbox(init_state(model, tx, jax.random.key(0), 32, ema=True))
    batches = [_sft_batch(seed=i) for i in range(3)]
    s1, m = step(state, batches[0], jax.random.key(0))
    assert 0.45 < float(m["transform/sstoken/kept_fraction"]) < 0.6
    with Checkpointer(str(tmp_path / "ck")) as ck:
        ck.save(1, s1, data_state=None)
        ck.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), s1)
    with Checkpointer(str(tmp_path / "ck")) as ck:
        restored, _, _ = ck.restore(None, abstract)
    straight, resumed = s1, restored
    for b in batches[1:]:
        straight, _ = step(straight, b, jax.random.key(1))
        resumed, _ = step(resumed, b, jax.random.key(1))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="ema_params"):
        step(state.replace(ema_params=None), batches[0], jax.random.key(0))


def test_aux_scales_multiply_named_losses_and_reject_unknown_names():
    tr = LossTransforms.from_config(LossConfig(aux_scales="mod_balance:0.5, z:0"), MCFG)
    out = tr.scale_aux({"mod_balance": jnp.array(2.0), "z": jnp.array(3.0), "other": jnp.array(1.0)})
    assert {k: float(v) for k, v in out.items()} == {"mod_balance": 1.0, "z": 0.0, "other": 1.0}
    with pytest.raises(ValueError, match="mod_balance"):
        tr.scale_aux({"z": jnp.array(1.0)})


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("meap_rate", 1.0),
        ("meap_rate", -0.1),
        ("reweight", "lin_upper"),
        ("token_select", "rho1"),
        ("reweight_temperature", 0.0),
        ("token_keep", 0.0),
        ("token_ema_decay", 1.0),
        ("reweight_unit", "doc"),
        ("aux_scales", "mod_balance=0.5"),
    ],
)
def test_bad_loss_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'loss.{field}'"):
        LossConfig(**{field: value})


def test_loss_config_override_round_trip():
    cd = to_config_dict(ExperimentConfig())
    cd.loss.reweight = "quadratic"
    cd.loss.meap_rate = 0.1
    cd.optim.name = "spam"
    cd.data.decomposition = True
    cfg = from_config_dict(cd)
    assert cfg.loss.reweight == "quadratic" and cfg.loss.meap_rate == 0.1 and cfg.optim.name == "spam"
    assert from_dict(ExperimentConfig, to_config_dict(cfg).to_dict()) == cfg
    with pytest.raises(ConfigError, match="loss.meap_mask_id"):
        from_dict(ExperimentConfig, {"loss": {"meap_mask_id": 258}})
