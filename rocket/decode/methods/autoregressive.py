"""Plain autoregressive decoding as an engine method: one 1-token target call per emitted token.

The smallest `Method` (see `rocket.decode.engine`): feed the pending token at its position,
commit its K/V (staged: written when the next round reads the cache), sample the next token from
the warped target (or argmax), which becomes pending.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from rocket.decode.engine import Ctx, Method, RoundOut, StagedCache, Stats, last_prompt_token, prefill
from rocket.decode.sampling import sample


@flax.struct.dataclass
class ARState:
    cache: StagedCache  # the committed history; the last round's token is written at the next read
    pending: jax.Array  # [B] last emitted token, not yet in the cache
    pos: jax.Array  # [B] its logical position


@dataclasses.dataclass(frozen=True)
class Autoregressive(Method):
    emit_width: ClassVar[int] = 1
    block_width: ClassVar[int] = 1

    def init(
        self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any
    ) -> ARState:
        del key, carry
        cache = ctx.target.new_cache(prompt_bp.shape[0], ctx.max_len)
        out, cache = prefill(ctx.target, cache, prompt_bp, prompt_len_b)
        staged = StagedCache.empty(cache, out.new_kv, 1)
        return ARState(staged, last_prompt_token(prompt_bp, prompt_len_b), prompt_len_b - 1)

    def round(self, ctx: Ctx, state: ARState, key: jax.Array, active_b: jax.Array) -> RoundOut:
        cache = state.cache.read()
        out = ctx.target(state.pending[:, None], state.pos[:, None], cache)
        step_b = active_b.astype(jnp.int32)
        tok_b = sample(key, out.logits[:, 0], ctx.sampler)
        new = ARState(StagedCache(cache, out.new_kv, step_b), tok_b, state.pos + step_b)
        b = tok_b.shape[0]
        return RoundOut(new, tok_b[:, None], jnp.ones((b,), jnp.int32), Stats.per_round(b, 1, 0, 0, 0))

    def carry(self, state: ARState) -> None:
        return None
