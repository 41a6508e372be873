"""Cross-cutting composition: adaptive depth (MoD, MoR) x layer kinds (TokenFormer projections,
softplus attention with re-weighting, lexinvariant embeddings) x the decoding engine.

Every combination must stay causal in routing="causal", keep block-consistency (a T-token block's
logits equal T single cached steps, which every speculative verifier relies on), and reproduce
target greedy decoding token for token under speculative decoding and Token Recycling.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import ModelStep, Speculative, TokenRecycling, generate
from rocket.train.step import MODEL_RNG_STREAM
from tests.helpers import assert_cached_decoding_matches, positions_for, tiny_model

KINDS = dict(
    attention=dict(kind="softplus", softplus_power=3.0),
    projection=dict(kind="pattention", param_tokens=32),
    embedding=dict(kind="lexinvariant"),
)
DEPTH = {
    "mod": dict(mod=dict(pattern="dense,mod", capacity=0.5, gate="tanhnorm")),
    "mor": dict(n_layers=4, mor=dict(sharing="middle_cycle", recursions=2)),
}


@pytest.mark.parametrize("depth", DEPTH)
def test_adaptive_depth_with_every_layer_kind_is_causal_and_block_consistent(depth):
    model, params = tiny_model(**DEPTH[depth], **KINDS)
    rngs = {MODEL_RNG_STREAM: jax.random.key(5)}  # one per-sequence embedding draw for all calls
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 2, 258)
    full, _ = model.apply(params, tokens, positions_for(tokens), routing="causal", rngs=rngs)
    changed = tokens.at[:, 8].set((tokens[:, 8] + 7) % 258)
    after, _ = model.apply(params, changed, positions_for(changed), routing="causal", rngs=rngs)
    chex.assert_trees_all_close(after[:, :8], full[:, :8], atol=1e-6)
    assert float(jnp.abs(after[:, 8:] - full[:, 8:]).max()) > 1e-4

    # a prefill, single steps, a block on a filled cache: two block shapes, so two compiles
    cache, _ = assert_cached_decoding_matches(
        model, params, tokens, [5, 1, 1, 5], full, max_len=16, atol=5e-5, rngs=rngs
    )
    if depth == "mod":  # the routed layer skipped some tokens: it holds fewer K/V slots than dense ones
        assert int(cache.length[1].min()) < 12 == int(cache.length[0].min())


@pytest.mark.parametrize("depth", DEPTH)
def test_lossless_methods_reproduce_greedy_decoding_of_adaptive_depth_targets(depth):
    target = ModelStep(*tiny_model(**DEPTH[depth]))
    draft = ModelStep(*tiny_model(n_layers=1))
    prompt = jax.random.randint(jax.random.key(3), (2, 6), 2, 258)
    lens = jnp.array([6, 3])
    run = lambda **kw: np.asarray(
        generate(target, prompt, lens, jax.random.key(0), max_new_tokens=10, **kw).tokens
    )
    reference = run()
    np.testing.assert_array_equal(run(method=Speculative(branching=(1, 1, 1)), draft=draft), reference)
    np.testing.assert_array_equal(run(method=TokenRecycling()), reference)
