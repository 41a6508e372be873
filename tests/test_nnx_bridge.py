"""NNX users can wrap rocket's linen modules with `nnx.bridge.ToNNX` and train them with nnx.Optimizer."""

import chex
import jax
import optax
from flax import nnx

from tests.helpers import positions_for, tiny_model


def test_linen_transformer_through_the_nnx_bridge():
    model, _ = tiny_model()
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 258)
    pos = positions_for(tokens)
    # rocket's params carry *logical* axis names; without a mesh, don't shard them eagerly.
    with nnx.use_eager_sharding(False):
        bridged = nnx.bridge.ToNNX(model, rngs=nnx.Rngs(0))
        nnx.bridge.lazy_init(bridged, tokens, pos)
    logits, _ = bridged(tokens, pos)

    # The NNX module computes exactly the linen function of its parameters.
    pure_params = nnx.to_pure_dict(nnx.state(bridged, nnx.Param))
    linen_logits, _ = model.apply({"params": pure_params}, tokens, pos)
    chex.assert_trees_all_close(logits, linen_logits, atol=1e-6)

    opt = nnx.Optimizer(bridged, optax.adam(1e-2), wrt=nnx.Param)

    def loss_fn(m):
        lg, _ = m(tokens, pos)
        return optax.softmax_cross_entropy_with_integer_labels(lg[:, :-1], tokens[:, 1:]).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    losses = [float(step(bridged, opt)) for _ in range(4)]
    assert losses[-1] < losses[0] - 0.5, losses
