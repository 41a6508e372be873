"""Momentum decoding (Lan et al., "Momentum Decoding: Open-ended Text Generation As Graph Exploration",
arXiv 2212.02175; gmftbyGMFTBY/MomentumDecoding `models/utlis_ngram.py`) as an engine method.

Generation walks a token graph; re-entering a circuit is resisted. For each of the top-k tokens v:

    L(v) = length (<= l_max) of the longest suffix of (context + v) that already occurred in the
           context (0 when v never occurred),          score(v) = p(v) - alpha R(L(v)),

with R = {0, 1, 2, 3 -> 0; 4 -> 5; >= 5 -> inf} by default (repeated 5-grams are blocked outright)
and the prompt seeding the graph; x_t = argmax score. No look-ahead forward: one 1-token call per
token, plus O(l_max S k) integer compares against the token history. alpha = 0 is greedy decoding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from rocket.decode.engine import Ctx, Method, RoundOut, StagedCache, Stats
from rocket.decode.methods.autoregressive import ARState, Autoregressive


def repeat_length(history_bs: jax.Array, length_b: jax.Array, cand_bk: jax.Array, l_max: int) -> jax.Array:
    """L(v) [B, k]: the longest l <= l_max such that (history[n-l+1:n], v) equals the window of
    history ending at some e < n (n = length[b]); 0 when v never occurred."""
    s = history_bs.shape[1]
    e_s = jnp.arange(s)
    run_bke = (history_bs[:, None, :] == cand_bk[..., None]) & (e_s < length_b[:, None])[:, None, :]
    total_bke = run_bke.astype(jnp.int32)
    for j in range(1, l_max):  # token j back: history[e - j] vs history[n - j]
        back_bs = jnp.pad(history_bs, ((0, 0), (j, 0)))[:, :s]  # back[e] = history[e - j]
        want_b = jnp.take_along_axis(history_bs, jnp.clip(length_b - j, 0, s - 1)[:, None], 1)
        ok_bs = (back_bs == want_b) & (e_s >= j)[None, :] & (length_b >= j)[:, None]
        run_bke &= ok_bs[:, None, :]
        total_bke += run_bke.astype(jnp.int32)
    return jnp.max(total_bke, axis=-1)


@flax.struct.dataclass
class MomentumState:
    ar: ARState
    history: jax.Array  # [B, S_max] prompt + emitted tokens
    length: jax.Array  # [B] tokens in history


@dataclasses.dataclass(frozen=True)
class MomentumDecoding(Method):
    """top_k candidates, alpha (paper: 0.2), resistance R[l] for l = 0..l_max (inf = blocked)."""

    uses_sampler: ClassVar[bool] = False  # deterministic: `sampler` is not read (rocket.generate refuses one)
    top_k: int = 8
    alpha: float = 0.2
    resistance: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 5.0, float("inf"))
    emit_width: ClassVar[int] = 1
    block_width: ClassVar[int] = 1

    def __post_init__(self):
        if self.top_k < 1 or self.alpha < 0 or len(self.resistance) < 2:
            raise ValueError(
                "MomentumDecoding needs top_k >= 1, alpha >= 0 and a resistance table for l = 0..l_max"
            )

    def init(self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any):
        ar = Autoregressive().init(ctx, prompt_bp, prompt_len_b, key, carry)
        b, p = prompt_bp.shape
        history = jnp.zeros((b, ctx.max_len), jnp.int32).at[:, :p].set(prompt_bp)
        return MomentumState(ar, history, prompt_len_b.astype(jnp.int32))

    def round(self, ctx: Ctx, state: MomentumState, key: jax.Array, active_b: jax.Array) -> RoundOut:
        del key
        ar = state.ar
        cache = ar.cache.read()
        out = ctx.target(ar.pending[:, None], ar.pos[:, None], cache)
        p_bk, cand_bk = jax.lax.top_k(jax.nn.softmax(out.logits[:, 0], -1), self.top_k)
        l_max = len(self.resistance) - 1
        rep_bk = repeat_length(state.history, state.length, cand_bk, l_max)
        penalty_bk = jnp.asarray(self.resistance, jnp.float32)[rep_bk]
        score_bk = p_bk - self.alpha * penalty_bk if self.alpha else p_bk  # (0 * inf is not 0)
        tok_b = jnp.take_along_axis(cand_bk, jnp.argmax(score_bk, -1)[:, None], 1)[:, 0]
        step_b = active_b.astype(jnp.int32)
        b = tok_b.shape[0]
        slot_b = jnp.where(active_b, state.length, state.history.shape[1])
        history = state.history.at[jnp.arange(b), slot_b].set(tok_b, mode="drop")
        new_ar = ARState(StagedCache(cache, out.new_kv, step_b), tok_b, ar.pos + step_b)
        new = MomentumState(new_ar, history, state.length + step_b)
        return RoundOut(new, tok_b[:, None], jnp.ones((b,), jnp.int32), Stats.per_round(b, 1, 0, 0, 0))

    def carry(self, state: MomentumState) -> None:
        return None
