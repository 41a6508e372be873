"""Contrastive search (Su et al., "A Contrastive Framework for Neural Text Generation", arXiv 2202.06417;
Su & Collier, arXiv 2210.14140) as a method of the shared decoding engine.

    x_t = argmax_{v in top-k p(. | x_<t)}  (1 - alpha) p(v | x_<t) - alpha max_{j < t} cos(h_v, h_j)

h = the model's last hidden state *after the final norm* (what the LM head reads, `aux["hidden"]`),
as in Hugging Face's implementation (`hidden_states[-1]`, post final norm for GPT-2 / Llama) and
Tunix's `last_hidden_state`; h_j ranges over every context token (prompt included), h_v is the
hidden state obtained by feeding candidate v as the next token.

One round = one target call on a block of the k candidates at the same position with block mask
eye(k) (each candidate sees the committed cache and itself, never its siblings), so the cache is
read once and never replicated k times (Tunix copies it with `jnp.repeat`). Only the winner's K/V is
committed (`commit_path` with its block index); its logits and hidden state are the next round's.
So, unlike other engine methods, the emitted token is committed at once and the state carries the
next-token logits instead of a pending token. Cost per token: one k-token forward plus O(k S D) for
the similarities. alpha = 0 or k = 1 is greedy decoding (ties broken toward the most likely token).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from rocket.decode.engine import Ctx, Method, RoundOut, Stats
from rocket.layers.cache import Cache, commit_block, commit_path


def _l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)


def degeneration_penalty(cand_bkd: jax.Array, context_bsd: jax.Array, length_b: jax.Array) -> jax.Array:
    """max_{s < length[b]} cos(cand[b, k], context[b, s]) -> [B, k]; context rows are L2-normalized,
    slots at or beyond length never count."""
    sim_bks = jnp.einsum("bkd,bsd->bks", _l2_normalize(cand_bkd), context_bsd)
    valid_bs = jnp.arange(context_bsd.shape[1])[None, :] < length_b[:, None]
    return jnp.max(jnp.where(valid_bs[:, None, :], sim_bks, -jnp.inf), axis=-1)


@flax.struct.dataclass
class ContrastiveState:
    cache: Cache  # every emitted token committed
    logits: jax.Array  # [B, V] next-token logits
    context: jax.Array  # [B, S_max, D] L2-normalized hidden states of the committed tokens
    length: jax.Array  # [B] committed tokens (= next position)


@dataclasses.dataclass(frozen=True)
class ContrastiveSearch(Method):
    """top_k candidates (k >= 1), penalty alpha in [0, 1]; defaults k = 4, alpha = 0.6 (Hugging Face)."""

    uses_sampler: ClassVar[bool] = False  # deterministic: `sampler` is not read (rocket.generate refuses one)
    top_k: int = 4
    alpha: float = 0.6
    emit_width: ClassVar[int] = 1

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"ContrastiveSearch.top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"ContrastiveSearch.alpha must be in [0, 1], got {self.alpha}")

    @property
    def block_width(self) -> int:
        return self.top_k

    def init(
        self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any
    ) -> ContrastiveState:
        del key, carry
        b, p = prompt_bp.shape
        cache = ctx.target.new_cache(b, ctx.max_len)
        positions_bp = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
        out = ctx.target(prompt_bp, positions_bp, cache)
        cache = commit_block(cache, out.new_kv, prompt_len_b)
        logits_bv = jnp.take_along_axis(out.logits, (prompt_len_b - 1)[:, None, None], axis=1)[:, 0]
        context = jnp.zeros((b, ctx.max_len, out.hidden.shape[-1]), jnp.float32)
        context = context.at[:, :p].set(_l2_normalize(out.hidden))  # slots >= prompt_len are masked
        return ContrastiveState(cache, logits_bv, context, prompt_len_b.astype(jnp.int32))

    def round(self, ctx: Ctx, state: ContrastiveState, key: jax.Array, active_b: jax.Array) -> RoundOut:
        del key  # deterministic
        k = self.top_k
        probs_bv = jax.nn.softmax(state.logits, axis=-1)
        p_bk, cand_bk = jax.lax.top_k(probs_bv, k)
        b = cand_bk.shape[0]
        pos_bk = jnp.broadcast_to(state.length[:, None], (b, k))
        block_mask = jnp.broadcast_to(jnp.eye(k, dtype=bool), (b, k, k))
        out = ctx.target(cand_bk, pos_bk, state.cache, block_mask)
        score_bk = (1.0 - self.alpha) * p_bk - self.alpha * degeneration_penalty(
            out.hidden, state.context, state.length
        )
        j_b = jnp.argmax(score_bk, axis=-1)  # first maximum: the most likely among ties
        take = lambda x: jnp.take_along_axis(x, j_b.reshape((b,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
        tok_b = take(cand_bk)
        step_b = active_b.astype(jnp.int32)
        cache = commit_path(state.cache, out.new_kv, j_b[:, None].astype(jnp.int32), step_b)
        slot_b = jnp.where(active_b, state.length, ctx.max_len)  # finished rows: dropped write
        context = state.context.at[jnp.arange(b), slot_b].set(_l2_normalize(take(out.hidden)), mode="drop")
        new = ContrastiveState(cache, take(out.logits), context, state.length + step_b)
        return RoundOut(new, tok_b[:, None], jnp.ones((b,), jnp.int32), Stats.per_round(b, 1, 0, 0, 0))

    def carry(self, state: ContrastiveState) -> None:
        return None
