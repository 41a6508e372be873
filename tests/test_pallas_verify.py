"""Split-K verification attention vs the jnp reference, and rocket's impl="pallas" dispatch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.verify_attention import verify_attention, verify_reference
from rocket.config import AttentionConfig, ConfigError, ModelConfig, override
from rocket.layers.cache import KVBlock, commit_block, init_cache
from rocket.layers.kernels import resolve_impl
from rocket.models import Transformer
from tests._pallas_helpers import assert_matches
from tests.helpers import tiny_model

PARENTS = (-1, 0, 0, 1, 2)  # a token tree: root, two children, one grandchild under each


def _ancestor_mask(parents) -> np.ndarray:
    t = len(parents)
    anc = np.eye(t, dtype=bool)
    for i in range(t):
        p = parents[i]
        while p >= 0:
            anc[i, p], p = True, parents[p]
    return anc


def _verify_operands(key, b=2, h=4, kv=2, d=24, s=70):
    t = len(PARENTS)
    ks = jax.random.split(key, 5)
    q = jax.random.normal(ks[0], (b, t, h, d))
    k_cache, v_cache = jax.random.normal(ks[1], (b, s, kv, d)), jax.random.normal(ks[2], (b, s, kv, d))
    k_block, v_block = jax.random.normal(ks[3], (b, t, kv, d)), jax.random.normal(ks[4], (b, t, kv, d))
    lengths = jnp.array([min(50, s), 7][:b], jnp.int32)
    block_mask = jnp.broadcast_to(jnp.asarray(_ancestor_mask(PARENTS)), (b, t, t))
    return q, k_cache, v_cache, lengths, k_block, v_block, block_mask


@pytest.mark.parametrize("kind,power", [("softmax", None), ("softplus", None), ("softplus", 3.0)])
def test_tree_block_against_a_ragged_cache_matches_reference(kind, power):
    """Per-row lengths (50 and 7 of 70 slots: early exit and a partly used last tile), 2 splits,
    GQA, a token tree's ancestor mask; slot positions hide the slots at or after the query."""
    args = _verify_operands(jax.random.key(0))
    lengths = args[3]
    slot_pos = jnp.broadcast_to(jnp.arange(70), (2, 70)).at[0, 40].set(10_000)  # slot 40 is "later"
    q_pos = lengths[:, None] + jnp.array([0, 1, 1, 2, 2])[None]
    kw = dict(kind=kind, power=power, slot_pos=slot_pos, q_pos=q_pos)
    assert_matches(
        functools.partial(verify_attention, **kw, block_k=16, n_splits=2),
        functools.partial(verify_reference, **kw),
        args,
        tol=2e-5,
        grads=False,
    )


def test_lssar_power_15_on_a_long_concentrated_row_does_not_overflow():
    """450 visible keys, all anti-aligned with the query but one: N * A_bar ~ 450 and 450^15 > f32
    max, so re-weighting without dividing by the row max first would give inf / inf = NaN."""
    d, s = 16, 464
    q = jax.random.normal(jax.random.key(4), (1, 1, 1, d))
    k_cache = jnp.broadcast_to(-q, (1, s, 1, d)).at[0, 123].set(q[0, 0])
    v_cache = jax.random.normal(jax.random.key(5), (1, s, 1, d))
    args = (q, k_cache, v_cache, jnp.array([450]), -q, v_cache[:, :1], jnp.ones((1, 1, 1), bool))
    out = verify_attention(*args, kind="softplus", power=15.0, block_k=32)
    np.testing.assert_allclose(
        out, verify_reference(*args, kind="softplus", power=15.0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(out[0, 0, 0], v_cache[0, 123, 0], rtol=1e-4)  # all weight on the aligned key


def test_bad_arguments_raise_clear_errors():
    args = _verify_operands(jax.random.key(1))
    with pytest.raises(ValueError, match="block_mask"):
        verify_attention(*args[:6], args[6][:, :3])
    with pytest.raises(ValueError, match="together"):
        verify_attention(*args, slot_pos=jnp.zeros((2, 70), jnp.int32))


def test_impl_resolution_and_config():
    assert resolve_impl("auto") == ("xla" if jax.default_backend() == "cpu" else "pallas")
    assert resolve_impl("pallas") == "pallas"
    with pytest.raises(ValueError, match="impl"):
        resolve_impl("cuda")
    assert ModelConfig(attention=AttentionConfig(impl="pallas")).attention.impl == "pallas"
    with pytest.raises(ConfigError, match="impl"):
        ModelConfig(attention=AttentionConfig(impl="triton"))


@pytest.mark.parametrize(
    "kinds",
    [
        {},
        {
            "attention": {"kind": "softplus", "softplus_power": 3.0},
            "projection": {"kind": "pattention", "param_tokens": 24},
        },
    ],
    ids=["softmax-dense", "lssar-pattention"],
)
def test_model_with_pallas_attention_matches_xla_in_training_and_decoding(kinds):
    """The whole model: packed training forward (flash kernel with the dense mask; fused Pattention
    for every projection) and a token-tree verify step against a committed cache (split-K kernel)
    give the xla logits."""
    xla_model, params = tiny_model(n_layers=1, **kinds)
    pallas_model = Transformer(override(xla_model.cfg, {"attention.impl": "pallas"}))  # same params
    tokens = jax.random.randint(jax.random.key(2), (1, 11), 0, 258)
    positions = jnp.arange(11)[None]
    segments = jnp.array([[0] * 6 + [1] * 5])
    train = lambda m: m.apply(params, tokens, positions, segment_ids=segments)[0]
    np.testing.assert_allclose(jax.jit(lambda: train(pallas_model))(), train(xla_model), rtol=2e-5, atol=2e-5)

    cfg = xla_model.cfg
    cache = init_cache(1, 1, 24, cfg.n_kv_heads, cfg.resolved_head_dim)
    _, aux = xla_model.apply(params, tokens, positions, cache=cache)
    cache = commit_block(cache, aux["new_kv"], 11)
    tree = jnp.array([[5, 9, 17, 3, 4]])
    tree_pos = 11 + jnp.array([[0, 1, 1, 2, 2]])
    block_mask = jnp.asarray(_ancestor_mask(PARENTS))[None]
    step = lambda m: m.apply(params, tree, tree_pos, cache=cache, block_mask=block_mask)[0]
    np.testing.assert_allclose(jax.jit(lambda: step(pallas_model))(), step(xla_model), rtol=2e-5, atol=2e-5)
    assert isinstance(aux["new_kv"], KVBlock)


@pytest.mark.slow
def test_tpu_lowering_under_the_tpu_interpreter():
    """The heads-major Mosaic TPU variant, run by the TPU simulator (~200x slower)."""
    args = _verify_operands(jax.random.key(3), b=1, s=32)
    for kind, power in [("softmax", None), ("softplus", 3.0)]:
        kw = dict(kind=kind, power=power)
        assert_matches(
            functools.partial(verify_attention, **kw, block_k=16, backend="tpu", interpret=True),
            functools.partial(verify_reference, **kw),
            args,
            tol=2e-5,
            grads=False,
        )
