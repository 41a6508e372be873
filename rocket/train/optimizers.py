"""Optimizers and schedules optax lacks: SPAM, AdamP and the Power scheduler.

All are plain optax objects: `scale_by_spam` / `scale_by_adamp` are `GradientTransformation`s that
chain with `optax.add_decayed_weights` and `optax.scale_by_learning_rate`; `power_schedule` is an
`optax.Schedule`. `rocket.train.optim.make_optimizer` selects them from `OptimConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class SpamState(NamedTuple):
    count: jax.Array  # int32 [] steps taken
    mu: optax.Updates  # first moment since the last reset
    nu: optax.Updates  # second moment since the last reset


def scale_by_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    theta: float = 5000.0,
    reset_interval: int = 500,
    clip_skip: int = 20,
    warmup_steps: int = 150,
) -> optax.GradientTransformation:
    """SPAM: spike-aware Adam with momentum reset (Huang et al., 2025, arXiv 2501.06842).

    At step t (1-based), with k = t mod reset_interval the steps since the last reset:
      k == 0 (t >= reset_interval):  m <- 0, v <- 0                              (momentum reset)
      a - 1 >= clip_skip:  g_i <- sign(g_i) sqrt(theta v_i)  where g_i**2 > theta v_i  (spike
                       clipping against the previous, not bias-corrected v, once it holds
                       clip_skip gradients; a = the moments' age, defined below)
      m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g**2
      u = s_k * m_hat / (sqrt(v_hat) + eps)

    "Done right" where the released code is not (spec section 7 pitfalls):
      * bias correction uses the moments' own age a (steps since the last reset, this one
        included): m_hat = m / (1 - b1**a). The official code keeps the global t, which
        under-corrects freshly reset moments.
      * the cosine warmup s_k = 0.01 + 0.99 (1 - cos(pi k / N)) / 2 for k < N = warmup_steps
        re-triggers after every reset, as the official `SPAM.step` (it sets `current_step = 0`
        and a fresh `CosineDecay` at every reset); before the first reset s = 1 here (the
        learning-rate schedule has its own warmup), where the official code starts past it.
    Resets are `jnp.where` on the count, so the transform is jit-safe. Without resets
    (reset_interval > steps) and spikes (theta large) this is exactly `optax.scale_by_adam`.
    Sparse momentum (the paper's density option) is not implemented.
    """
    if reset_interval < 1 or not 1 <= clip_skip < reset_interval or not 0 <= warmup_steps <= reset_interval:
        raise ValueError(
            f"need reset_interval >= 1, 1 <= clip_skip < reset_interval, 0 <= warmup_steps <= "
            f"reset_interval; got {reset_interval}, {clip_skip}, {warmup_steps}"
        )

    def init(params: optax.Params) -> SpamState:
        zeros = optax.tree_utils.tree_zeros_like(params)
        return SpamState(jnp.zeros([], jnp.int32), zeros, optax.tree_utils.tree_zeros_like(params))

    def update(grads: optax.Updates, state: SpamState, params: optax.Params | None = None):
        del params
        t = optax.safe_increment(state.count)
        k = t % reset_interval
        after_reset = t >= reset_interval
        reset = after_reset & (k == 0)
        mu = jax.tree.map(lambda m: jnp.where(reset, jnp.zeros_like(m), m), state.mu)
        nu = jax.tree.map(lambda v: jnp.where(reset, jnp.zeros_like(v), v), state.nu)
        age = jnp.where(after_reset, k + 1, t)  # gradients in the moments after this step
        clip_on = age - 1 >= clip_skip  # v has seen clip_skip gradients since init / the last reset

        def clip(g: jax.Array, v: jax.Array) -> jax.Array:
            bound = jnp.sqrt(theta * v).astype(g.dtype)
            return jnp.where(clip_on & (jnp.square(g) > theta * v), jnp.sign(g) * bound, g)

        grads = jax.tree.map(clip, grads, nu)
        mu = optax.tree_utils.tree_update_moment(grads, mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(grads, nu, b2, 2)
        mu_hat = optax.tree_utils.tree_bias_correction(mu, b1, age)
        nu_hat = optax.tree_utils.tree_bias_correction(nu, b2, age)
        if warmup_steps > 0:
            ramp = 0.01 + 0.99 * 0.5 * (1.0 - jnp.cos(jnp.pi * k / warmup_steps))
            scale = jnp.where(after_reset & (k < warmup_steps), ramp, 1.0)
        else:
            scale = jnp.ones([], jnp.float32)
        updates = jax.tree.map(lambda m, v: (scale * m / (jnp.sqrt(v) + eps)).astype(m.dtype), mu_hat, nu_hat)
        return updates, SpamState(t, mu, nu)

    return optax.GradientTransformation(init, update)


def channel_rows(path: tuple[Any, ...], w: jax.Array) -> tuple[int, ...]:
    """The axes of a Flax parameter that index AdamP's channel-view rows (one row per output unit,
    as the reference's `x.view(x.size(0), -1)` of a PyTorch (out, in...) weight):

      (V, D) "embedding"            rows = the V tokens (axis 0), each of size D (as nn.Embedding)
      (d, H, d_h) "wq" / "wk" / "wv"  rows = the H * d_h outputs (axes 1, 2), each of size d
      (H, d_h, d) "wo"              rows = the d outputs (axis 2), each of size H * d_h
      any other (in..., out)        rows = the last axis (Flax's Dense layout), each of size in
    """
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    if name == "embedding":
        return (0,)
    if w.ndim == 3 and name in ("wq", "wk", "wv"):
        return (1, 2)
    return (w.ndim - 1,)


def _projection(
    p: jax.Array, g: jax.Array, w: jax.Array, rows_axes: tuple[int, ...], delta: float, eps: float
) -> tuple[jax.Array, jax.Array]:
    """AdamP's projection for one tensor: (update, projected?) with the radial part of `p` removed
    along w when w looks scale-invariant (max_rows |cos(g, w)| < delta / sqrt(row size))."""
    if w.ndim < 2:
        return p, jnp.zeros([], bool)
    out, projected = p, jnp.zeros([], bool)
    # Channel view: `rows_axes` first, one row per output unit (`channel_rows`); then the whole
    # tensor as one row. The first view that looks scale-invariant wins.
    order = (*rows_axes, *(a for a in range(w.ndim) if a not in rows_axes))
    n_rows = math.prod(w.shape[a] for a in rows_axes)
    moved = tuple(w.shape[a] for a in order)
    views = (  # (tensor -> rows, rows -> tensor)
        (
            lambda x: jnp.transpose(x, order).reshape(n_rows, -1),
            lambda r: jnp.transpose(r.reshape(moved), np.argsort(order)),
        ),
        (lambda x: x.reshape(1, -1), lambda r: r.reshape(w.shape)),
    )
    for rows, unrows in views:
        w_r, g_r, p_r = rows(w), rows(g), rows(p)
        norms = jnp.linalg.norm(w_r, axis=1) * jnp.linalg.norm(g_r, axis=1)
        cos = jnp.abs(jnp.sum(w_r * g_r, 1)) / (norms + eps)
        hit = (jnp.max(cos) < delta / math.sqrt(w_r.shape[1])) & ~projected
        w_hat = w_r / (jnp.linalg.norm(w_r, axis=1, keepdims=True) + eps)
        out = jnp.where(hit, unrows(p_r - w_hat * jnp.sum(w_hat * p_r, 1, keepdims=True)), out)
        projected = projected | hit
    return out, projected


class AdampState(NamedTuple):
    count: jax.Array  # int32 []
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adamp(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """AdamP (Heo et al., ICLR 2021, arXiv 2006.08217; clovaai/AdamP `adamp.py`), before the lr.

    p = m_hat / (sqrt(v_hat) + eps) (Adam). For a tensor w with >= 2 dims, if
    max_rows |cos(g, w)| < delta / sqrt(row size) in the channel view (rows = output units,
    `channel_rows`: the reference's view of the PyTorch layout of the same weight), else
    in the layer view (the whole tensor), w counts as scale-invariant:
      p <- p - w_hat (w_hat . p) per row, w_hat = w / |w|, and its weight decay is scaled by wd_ratio.
    Output u = p + weight_decay * ratio * w (decoupled decay on `mask`-ed leaves); chain with
    `optax.scale_by_learning_rate`. The cosine uses the raw gradient, so this one transform holds
    both the moments and the decay. With delta = 0 nothing is projected: AdamW exactly.
    """

    def init(params: optax.Params) -> AdampState:
        zeros = optax.tree_utils.tree_zeros_like(params)
        return AdampState(jnp.zeros([], jnp.int32), zeros, optax.tree_utils.tree_zeros_like(params))

    def update(grads: optax.Updates, state: AdampState, params: optax.Params | None = None):
        if params is None:
            raise ValueError("scale_by_adamp needs params (the projection and decay read them)")
        t = optax.safe_increment(state.count)
        mu = optax.tree_utils.tree_update_moment(grads, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(grads, state.nu, b2, 2)
        mu_hat = optax.tree_utils.tree_bias_correction(mu, b1, t)
        nu_hat = optax.tree_utils.tree_bias_correction(nu, b2, t)
        decay_mask = mask(params) if callable(mask) else mask
        if decay_mask is None:
            decay_mask = jax.tree.map(lambda _: True, params)

        def leaf(path, m: jax.Array, v: jax.Array, g: jax.Array, w: jax.Array, decay: bool) -> jax.Array:
            p, projected = _projection(m / (jnp.sqrt(v) + eps), g, w, channel_rows(path, w), delta, eps)
            ratio = jnp.where(projected, wd_ratio, 1.0)
            return (p + (weight_decay * ratio * w if decay else 0.0)).astype(w.dtype)

        updates = jax.tree_util.tree_map_with_path(leaf, mu_hat, nu_hat, grads, params, decay_mask)
        return updates, AdampState(t, mu, nu)

    return optax.GradientTransformation(init, update)


def power_schedule(
    *,
    lr_max: float,
    a: float,
    b: float,
    tokens_per_step: int,
    warmup_steps: int,
    decay_steps: int = 0,
    total_steps: int | None = None,
    final_factor: float = 0.0,
) -> optax.Schedule:
    """Power scheduler (Shen et al., 2024, arXiv 2408.13359; IBM/dolomite-engine `PowerScheduler`).

    With n = step * tokens_per_step tokens seen (float, no int32 overflow):
      eta(n) = min(lr_max, a * n**b)                    the power law (a absorbs the batch size)
      step < warmup:  eta(n_warmup) * step / warmup      linear warmup
      last `decay_steps` of `total_steps`, x steps into the decay:
        eta(n_decay) * ((1 - f) e / (e - 1) exp(-x / D) + (f e - 1) / (e - 1)),  going 1 -> f.
    """
    if tokens_per_step < 1 or warmup_steps < 0 or decay_steps < 0:
        raise ValueError(
            f"need tokens_per_step >= 1, warmup_steps >= 0, decay_steps >= 0; "
            f"got {tokens_per_step}, {warmup_steps}, {decay_steps}"
        )
    if decay_steps and total_steps is None:
        raise ValueError("power_schedule: decay_steps needs total_steps")
    decay_start = (total_steps or 0) - decay_steps
    e = math.e

    def law(step: jax.Array) -> jax.Array:
        n = jnp.maximum(jnp.asarray(step, jnp.float32), 1.0) * float(tokens_per_step)
        return jnp.minimum(lr_max, a * n**b)

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        lr = law(step)
        if warmup_steps > 0:
            lr = jnp.where(step < warmup_steps, law(warmup_steps) * step / warmup_steps, lr)
        if decay_steps > 0:
            x = step - decay_start
            f = final_factor
            factor = (1 - f) * e / (e - 1) * jnp.exp(-x / decay_steps) + (f * e - 1) / (e - 1)
            lr = jnp.where(x >= 0, law(decay_start) * factor, lr)
        return lr

    return schedule
