"""Loss -> weight functions (the weight-function plug-in of `rocket.train.transforms`), pure and jit-able.

* `sample_weights`: dynamic loss-based sample reweighting (Sow et al., ICLR 2025, arXiv 2502.06733;
  sowmaster/Sample-Level-Loss-Reweighting-ICLR-2025 `src/trainer.py`).
* `sstoken_keep`: ssToken token selection (arXiv 2510.18250, ICLR 2026; jianke0604/ssToken
  `scripts/finetune.py`).

Weights are normalised to mean 1 over the valid units (samples, or a sample's response tokens), so
the objective sum(w * nats * mask) / sum(mask) keeps the unweighted learning-rate scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_STRATEGIES = {
    "uniform": lambda h, d: jnp.zeros_like(h),
    "linupper": lambda h, d: jnp.minimum(h + d, d),
    "quadratic": lambda h, d: 1.0 - jnp.square(h) / d**2,
    "extremes": lambda h, d: jnp.abs(h),
    "upper": lambda h, d: 0.5 * h + 0.5 * d,
}
STRATEGIES = tuple(_STRATEGIES)


def sample_weights(
    loss_n: jax.Array,
    valid_n: jax.Array,
    *,
    strategy: str,
    temperature: float = 1.0,
    delta: float = 1.0,
    eps: float = 1e-6,
) -> jax.Array:
    """Mean-1 sample weights w[N] from per-sample losses loss[N] (stop-gradient).

      h_i = delta (2 l_i - (l_max + l_min)) / max(l_max - l_min, eps)     in [-delta, delta]
      f_i = strategy(h_i):  uniform 0 | linupper min(h + delta, delta) | quadratic 1 - h^2/delta^2
                            | extremes |h| | upper h/2 + delta/2
      w_i = N exp((f_i - max f) / r) / sum_j exp((f_j - max f) / r)      (r = temperature)

    over the `valid_n` samples (min, max, softmax and N count valid ones only; invalid get 0).
    "uniform" gives weights of exactly 1.0 (exp(0) * N / N), so it reproduces the plain loss bit
    for bit. Invariant to adding a constant to every loss; r -> infinity tends to uniform.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown reweighting strategy {strategy!r}; valid: {STRATEGIES}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    loss_n = jax.lax.stop_gradient(loss_n.astype(jnp.float32))
    lo = jnp.min(jnp.where(valid_n, loss_n, jnp.inf))
    hi = jnp.max(jnp.where(valid_n, loss_n, -jnp.inf))
    h_n = delta * (2.0 * loss_n - (hi + lo)) / jnp.maximum(hi - lo, eps)
    f_n = jnp.where(valid_n, _STRATEGIES[strategy](h_n, delta), -jnp.inf)
    e_n = jnp.where(valid_n, jnp.exp((f_n - jnp.max(f_n)) / temperature), 0.0)
    count = jnp.sum(valid_n.astype(jnp.float32))
    return e_n * (count / jnp.maximum(jnp.sum(e_n), jnp.finfo(jnp.float32).tiny))


def _per_row_segments(fn, values_bt: jax.Array, seg_bt: jax.Array) -> jax.Array:
    """fn(values[T], seg[T], num_segments) per row -> [B, T + 1] (segment ids are in [0, T])."""
    num = values_bt.shape[1] + 1
    return jax.vmap(lambda v, s: fn(v, s, num_segments=num))(values_bt, seg_bt)


def _gather_segments(per_seg_bs: jax.Array, seg_bt: jax.Array) -> jax.Array:
    """[B, S] per-segment values -> [B, T] each token's segment's value."""
    return jnp.take_along_axis(per_seg_bs, seg_bt, axis=1)


def sstoken_keep(
    nats_bt: jax.Array,
    history_nats_bt: jax.Array,
    prompt_attention_bt: jax.Array | None,
    response_bt: jax.Array,
    segment_ids_bt: jax.Array,
    *,
    keep: float,
    gamma: jax.Array | float,
    eps: float = 1e-8,
) -> jax.Array:
    """ssToken token weights [B, T]: the top ceil(keep * n) response tokens of every sample, each
    weighted n / k (mean 1 over the sample's n response tokens), 0 elsewhere.

      REL_t = l_hist(t) - l_theta(t)                      retrospective excess loss
      score_t = gamma * minmax_sample(REL)_t + (1 - gamma) * A_t
      A_t = sum_{j in prompt} attn[t, j]                  (`prompt_attention_bt`, the last layer's
                                                         head-mean attention of the position t
                                                         that predicts target t)

    A sample is a packed segment (one per row when unpacked). Ties rank by position. With
    keep = 1 every response token gets weight exactly 1. gamma = 1 needs no attention (pass None).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    sg = jax.lax.stop_gradient
    response_bt = response_bt.astype(bool)
    seg_bt = jnp.where(response_bt, segment_ids_bt, 0).astype(jnp.int32)  # 0 = not ranked
    rel_bt = sg(history_nats_bt - nats_bt).astype(jnp.float32)
    lo_bt = _gather_segments(
        _per_row_segments(jax.ops.segment_min, jnp.where(response_bt, rel_bt, jnp.inf), seg_bt), seg_bt
    )
    hi_bt = _gather_segments(
        _per_row_segments(jax.ops.segment_max, jnp.where(response_bt, rel_bt, -jnp.inf), seg_bt), seg_bt
    )
    score_bt = gamma * (rel_bt - lo_bt) / jnp.maximum(hi_bt - lo_bt, eps)
    if prompt_attention_bt is not None:
        score_bt = score_bt + (1.0 - gamma) * sg(prompt_attention_bt).astype(jnp.float32)
    elif not isinstance(gamma, float) or gamma != 1.0:
        raise ValueError("sstoken_keep: gamma < 1 needs prompt_attention_bt")
    # Rank within each segment: sort by (segment, -score); rank = sorted index - segment start.
    order_bt = jax.vmap(lambda s, x: jnp.lexsort((-x, s)))(seg_bt, jnp.where(response_bt, score_bt, -jnp.inf))
    sorted_index_bt = jnp.argsort(order_bt, axis=1)
    counts_bs = _per_row_segments(jax.ops.segment_sum, jnp.ones_like(seg_bt), seg_bt)  # [B, T + 1]
    starts_bs = jnp.cumsum(counts_bs, axis=1) - counts_bs
    rank_bt = sorted_index_bt - _gather_segments(starts_bs, seg_bt)
    n_bt = _gather_segments(counts_bs, seg_bt).astype(jnp.float32)
    k_bt = jnp.maximum(jnp.ceil(keep * n_bt - 1e-3), 1.0)  # the slack absorbs float error in keep * n
    kept_bt = response_bt & (rank_bt < k_bt)
    return jnp.where(kept_bt, n_bt / k_bt, 0.0)
