"""Lexinvariant embeddings: per-document Gaussian matrices, tied readout, invariance to relabelling."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import ConfigError
from rocket.layers.lexinvariant import LexinvariantEmbed, relabel_ids, units_mod
from rocket.models import Transformer, param_count
from rocket.train.step import MODEL_RNG_STREAM
from tests.helpers import positions_for, tiny_cfg, tiny_model

LEX = dict(embedding=dict(kind="lexinvariant"))


def _doc_matrices(embed, b, d, segments):
    """E_s of each segment, read back through the readout: h = e_d at the d-th token of a segment."""
    t = d * len(segments)
    seg_bt = jnp.broadcast_to(jnp.repeat(jnp.array(segments), d), (b, t))
    h_btd = jnp.broadcast_to(jnp.tile(jnp.eye(d), (len(segments), 1)), (b, t, d))
    logits_btv = embed.apply({}, h_btd, seg_bt, method="attend")
    return seg_bt, [jnp.swapaxes(logits_btv[:, i * d : (i + 1) * d], 1, 2) for i in range(len(segments))]


def test_input_and_readout_use_the_same_fresh_gaussian_matrix_per_document():
    v, d = 258, 8
    embed = LexinvariantEmbed(v, d)
    seg_bt, (e1_bvd, e2_bvd) = _doc_matrices(embed, 2, d, [1, 2])
    tokens_bt = jax.random.randint(jax.random.key(0), seg_bt.shape, 0, v)
    x_btd = embed.apply({}, tokens_bt, seg_bt)
    for i, e_bvd in enumerate((e1_bvd, e2_bvd)):
        sl = slice(i * d, (i + 1) * d)
        np.testing.assert_allclose(
            x_btd[:, sl], jnp.take_along_axis(e_bvd, tokens_bt[:, sl, None], 1), atol=1e-6
        )
    # Same id -> same vector within a document; fresh across documents and rows; entries N(0, 1/D).
    for a, b in ((e1_bvd[0], e2_bvd[0]), (e1_bvd[0], e1_bvd[1])):
        assert abs(float(jnp.corrcoef(a.ravel(), b.ravel())[0, 1])) < 0.1
    assert abs(float(jnp.std(e1_bvd)) * np.sqrt(d) - 1.0) < 0.05  # 4128 samples: SE ~ 1.1%
    assert abs(float(jnp.mean(e1_bvd)) * np.sqrt(d)) < 0.07


def test_relabelling_is_a_bijection_for_any_vocab():
    for v in (13, 258, 1000):
        units = units_mod(v)
        ids = jnp.arange(v)
        for a in units[:: max(1, len(units) // 5)]:
            assert len(np.unique(np.asarray(relabel_ids(ids, jnp.uint32(a), jnp.uint32(7), v)))) == v


def _intercepted(table_1vd):
    """Replaces the random draw by `table` and the per-document relabelling by the identity."""

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, LexinvariantEmbed):
            if context.method_name == "draw":
                return table_1vd
            if context.method_name == "labels":
                seg_bt = args[0]
                ones = jnp.ones(seg_bt.shape, jnp.uint32)
                return ones, 0 * ones, jnp.zeros(seg_bt.shape, bool)
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


def test_permuting_ids_with_the_matching_matrix_permutation_leaves_the_loss_unchanged():
    model, params = tiny_model(**LEX)
    tokens = jax.random.randint(jax.random.key(1), (1, 17), 0, 258)
    sigma = jax.random.permutation(jax.random.key(2), 258)
    table = jax.random.normal(jax.random.key(3), (1, 258, 64)) / 8
    permuted_table = jnp.zeros_like(table).at[:, sigma].set(table)  # E'[sigma(v)] = E[v]

    def loss(toks, table):
        with _intercepted(table):
            logits, _ = model.apply(params, toks[:, :-1], positions_for(toks[:, :-1]))
        return logits, optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:])

    logits, nats = loss(tokens, table)
    logits_p, nats_p = loss(sigma[tokens], permuted_table)
    np.testing.assert_allclose(nats_p, nats, atol=1e-5)
    np.testing.assert_allclose(logits_p[..., sigma], logits, atol=1e-5)
    _, nats_wrong = loss(sigma[tokens], table)  # power check: ids permuted, matrix not
    assert float(jnp.abs(nats_wrong - nats).max()) > 1e-2


def test_loss_does_not_depend_on_which_ids_a_sequence_uses():
    """Over fresh per-row draws, a sequence and its relabelled copy have the same mean loss (4 SE),
    while the same test tells apart a sequence with a different repetition structure."""
    model, params = tiny_model(**LEX)
    n = 96
    rng = np.random.default_rng(0)
    x = rng.integers(0, 258, 32)
    x[16:] = x[:16]  # a repeated half: structure the model can see
    sigma = rng.permutation(258)
    y = np.full(32, x[0])  # one id repeated: at init the residual stream favours the current id

    def losses(seq):
        toks = jnp.asarray(np.tile(seq, (n, 1)), jnp.int32)
        logits, _ = model.apply(
            params, toks[:, :-1], positions_for(toks[:, :-1]), rngs={MODEL_RNG_STREAM: jax.random.key(5)}
        )
        return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:]).mean(-1))

    def z(a, b):
        return abs(a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)

    lx, lsx, ly = losses(x), losses(sigma[x]), losses(y)
    assert z(lx, lsx) < 4.0
    assert z(lx, ly) > 4.0


def test_randomness_comes_from_the_sample_stream():
    model, params = tiny_model(**LEX)
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 258)
    run = lambda **kw: model.apply(params, tokens, positions_for(tokens), **kw)[0]
    chex.assert_trees_all_equal(run(), run())  # no rng: a fixed key, deterministic
    k1, k2 = ({MODEL_RNG_STREAM: jax.random.key(i)} for i in (1, 2))
    chex.assert_trees_all_equal(run(rngs=k1), run(rngs=k1))
    assert float(jnp.abs(run(rngs=k1) - run(rngs=k2)).max()) > 1e-2


def test_regularised_variant_mixes_in_the_learned_table_per_document():
    model, params = tiny_model()  # learned embeddings: param "embed/embedding"
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 258)
    mixed = Transformer(tiny_cfg(**LEX, **{"embedding.learned_prob": 1.0}))
    chex.assert_trees_all_close(
        mixed.apply(params, tokens, positions_for(tokens))[0],
        model.apply(params, tokens, positions_for(tokens))[0],
        atol=1e-6,
    )
    half = LexinvariantEmbed(258, 8, learned_prob=0.5)
    seg_bt = jnp.broadcast_to(jnp.arange(200), (4, 200))
    _, _, learned_bt = half.apply({"params": {"embedding": jnp.zeros((258, 8))}}, seg_bt, method="labels")
    assert abs(float(learned_bt.mean()) - 0.5) < 0.06  # 800 documents: SE 0.018
    assert param_count(mixed.cfg) == sum(x.size for x in jax.tree.leaves(params))
    assert param_count(tiny_cfg(**LEX)) == param_count(model.cfg) - 258 * 64


def test_bad_lexinvariant_configs_are_rejected():
    with pytest.raises(ConfigError, match="'model.tie_embeddings'"):
        tiny_cfg(**LEX, tie_embeddings=False)
    with pytest.raises(ConfigError, match="'model.embedding.kind'"):
        tiny_cfg(**{"embedding.kind": "onehot"})
    with pytest.raises(ConfigError, match="'model.embedding.learned_prob'"):
        tiny_cfg(**LEX, **{"embedding.learned_prob": 1.5})
    with pytest.raises(ValueError, match="vocab_size"):
        LexinvariantEmbed(70_000, 8).apply({}, jnp.zeros((1, 2), jnp.int32))
