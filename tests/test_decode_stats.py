"""decode_stats and the cost model (rocket.decode.cost_model) on hand-computed numbers; no model."""

import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import (
    Autoregressive,
    DecodeOutput,
    DySpec,
    Speculative,
    Stats,
    TokenRecycling,
    call_widths,
    chain_mat,
    decode_stats,
    modelled_speedup,
    modelled_time_per_token,
)


def _output(n_tokens, target_calls, draft_calls, drafted, accepted, tested) -> DecodeOutput:
    a = lambda x: jnp.asarray(x, jnp.int32)
    stats = Stats(a(target_calls), a(draft_calls), a(drafted), a(accepted), a(tested))
    return DecodeOutput(jnp.zeros((len(n_tokens), 8), jnp.int32), a(n_tokens), stats, a(0), None)


def test_decode_stats_sums_rows():
    # two rows of a gamma = 4 chain: row 0 rounds (n_acc) 4, 1 -> 7 tokens, tested 4 + 2;
    # row 1 rounds 0, 0, 3 -> 6 tokens, tested 1 + 1 + 4
    out = _output([7, 6], [2, 3], [8, 12], [8, 12], [5, 3], [6, 6])
    s = decode_stats(out)
    np.testing.assert_allclose(s["mean_accepted_tokens"], 13 / 5)
    np.testing.assert_allclose(s["acceptance"], 8 / 20)
    np.testing.assert_allclose(s["position_acceptance"], 8 / 12)
    np.testing.assert_allclose(s["target_calls_per_token"], 5 / 13)
    np.testing.assert_allclose(s["draft_calls_per_token"], 20 / 13)
    ar = decode_stats(_output([5], [5], [0], [0], [0], [0]))
    assert np.isnan(ar["acceptance"]) and np.isnan(ar["position_acceptance"])


def test_chain_mat():
    np.testing.assert_allclose(chain_mat(0.5, 2), 1.75)  # 1 + 0.5 + 0.25
    np.testing.assert_allclose(chain_mat(0.8, 4), (1 - 0.8**5) / 0.2)
    assert chain_mat(1.0, 4) == 5.0 and chain_mat(0.0, 4) == 1.0 and chain_mat(0.3, 0) == 1.0
    with pytest.raises(ValueError, match="alpha"):
        chain_mat(1.2, 4)
    with pytest.raises(ValueError, match="gamma"):
        chain_mat(0.5, -1)


def test_modelled_speedup():
    # chain: 0.25 target calls/token at 2 ms, 1 draft call/token at 0.5 ms -> 1 ms/token = AR's t(1)
    chain = {"target_calls_per_token": 0.25, "draft_calls_per_token": 1.0}
    np.testing.assert_allclose(modelled_time_per_token(0.25, 1.0, 2e-3, 5e-4), 1e-3)
    np.testing.assert_allclose(modelled_speedup(chain, 1e-3, 2e-3, 5e-4), 1.0)
    # memory-bound regime: the verify costs a 1-token call -> 1 / (0.25 + 1.0 * 0.5 / 1)
    np.testing.assert_allclose(modelled_speedup(chain, 1e-3, 1e-3, 5e-4), 1 / 0.75)
    # draft-free tree: 0.2 target calls/token at 3 ms vs 1 ms -> 1 / 0.6
    tree = {"target_calls_per_token": 0.2, "draft_calls_per_token": 0.0}
    np.testing.assert_allclose(modelled_speedup(tree, 1e-3, 3e-3), 1 / 0.6)
    # AR against itself
    ar = {"target_calls_per_token": 1.0, "draft_calls_per_token": 0.0}
    np.testing.assert_allclose(modelled_speedup(ar, 1e-3, 1e-3), 1.0)
    with pytest.raises(ValueError, match="t_draft is 0"):
        modelled_speedup(chain, 1e-3, 2e-3)
    with pytest.raises(ValueError, match="t_target_1"):
        modelled_speedup(tree, 0.0, 3e-3)
    with pytest.raises(ValueError, match="t_target must"):
        modelled_speedup(tree, 1e-3, -1.0)


def test_call_widths():
    assert call_widths(Autoregressive()) == (1, ())
    # chain gamma = 4: verify root + 4; draft: pending block of 2, then levels 1..d for d = 1, 2, 3
    assert call_widths(Speculative(branching=(1, 1, 1, 1))) == (5, (2, 1, 2, 3))
    # tree 3-2-1: levels of 3, 6, 6 nodes -> verify 16; draft 2, then 3, then 3 + 6
    assert call_widths(Speculative(branching=(3, 2, 1))) == (16, (2, 3, 9))
    assert call_widths(DySpec(widths=(4, 8, 8, 8))) == (29, (2, 4, 12, 20))
    assert call_widths(TokenRecycling(template=((0,), (1,), (0, 0)), k=2)) == (4, ())
