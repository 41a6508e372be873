"""Attention-sink streaming caches: StreamingLLM (Xiao et al., "Efficient Streaming Language Models with
Attention Sinks", arXiv 2309.17453; mit-han-lab/streaming-llm `kv_cache.py`, `pos_shift/`) and
LM-Infinite's Lambda-shaped attention (Han et al., arXiv 2308.16137) on the same cache.

Cache: static S = s + w slots per row and layer: slots [0, s) hold the stream's first s tokens (the
attention sinks), slots [s, s + w) a ring of the most recent w tokens; token at logical position p
goes to slot p (p < s) or s + (p - s) mod w. Keys are stored *before* RoPE (`Cache.rope_at_read`)
and `slot_pos` stores logical positions. Memory is constant however long the stream runs.

Positions are cache-relative (rotated at read time by the attention layer). With n tokens
committed, filled = min(n, S) slots are valid and the oldest ring position is o = max(s, n - w):

    StreamingLLM:  rank(sink p) = p,  rank(ring p) = s + (p - o),  rank(query p) = filled + (p - n)
    LM-Infinite:   ring and query ranks as above; a sink sits at distance min(q - p, d_max) from the
                   block's first query q (d_max = the training length: distances never exceed it).

While n + T <= S nothing was evicted, every rank equals the logical position, and both policies are
exactly the dense cache. A block of T <= w tokens attends to the cache as it was before the block
(as StreamingLLM's `evict_for_space` before a prompt); longer prompts are fed in chunks of w.

`StreamingAR` is the autoregressive method of the shared engine on this cache (`generate(method=
StreamingAR(...))`); `stream_logits` scores a long token stream (teacher forcing) for perplexity.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from rocket.decode.engine import Ctx, Method, ModelStep, RoundOut, Stats, StepOut, last_prompt_token
from rocket.decode.sampling import sample
from rocket.layers.cache import Cache, KVBlock

POLICIES = ("sinks", "lm_infinite")


@dataclasses.dataclass(frozen=True)
class StreamPolicy:
    """n_sinks = s >= 0, window = w >= 1 ring slots; policy "sinks" (StreamingLLM) or "lm_infinite"
    (needs max_distance = d_max, the training context length)."""

    n_sinks: int = 4
    window: int = 124
    policy: str = "sinks"
    max_distance: int | None = None

    def __post_init__(self):
        if self.n_sinks < 0 or self.window < 1:
            raise ValueError(f"need n_sinks >= 0 and window >= 1, got {self.n_sinks}, {self.window}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown streaming policy {self.policy!r}; known: {POLICIES}")
        if self.policy == "lm_infinite" and (self.max_distance or 0) < self.size:
            raise ValueError(
                f"lm_infinite needs max_distance (the training length) >= n_sinks + window = {self.size}"
            )

    @property
    def size(self) -> int:
        return self.n_sinks + self.window

    def slot_of(self, pos: jax.Array) -> jax.Array:
        s, w = self.n_sinks, self.window
        return jnp.where(pos < s, pos, s + jnp.mod(pos - s, w))


@flax.struct.dataclass
class StreamState:
    cache: Cache  # rope_at_read, slot_pos = logical positions
    n: jax.Array  # [B] tokens committed so far (= next logical position)


def new_stream(model: ModelStep, batch: int, policy: StreamPolicy) -> StreamState:
    cache = model.new_cache(batch, policy.size)
    return StreamState(cache.replace(rope_at_read=True), jnp.zeros((batch,), jnp.int32))


def _view(state: StreamState, policy: StreamPolicy, q_pos_bt: jax.Array) -> tuple[Cache, jax.Array]:
    """The cache with slot_pos replaced by cache-relative ranks, and the block's query ranks [B, T]."""
    s, w = policy.n_sinks, policy.window
    n_b = state.n
    filled_b = jnp.minimum(n_b, policy.size)
    oldest_b = jnp.maximum(s, n_b - w)
    pos = state.cache.slot_pos  # [L, B, S]
    q_rank_bt = filled_b[:, None] + (q_pos_bt - n_b[:, None])
    rank = s + (pos - oldest_b[None, :, None])
    if policy.policy == "sinks":
        sink_rank = pos
    else:  # LM-Infinite: sinks at distance min(q - p, d_max) from the block's first query
        q0_b, p0_b = q_rank_bt[:, 0], q_pos_bt[:, 0]
        sink_rank = q0_b[None, :, None] - jnp.minimum(p0_b[None, :, None] - pos, policy.max_distance)
    rank = jnp.where(pos < s, sink_rank, rank)  # empty slots (pos = -1) lie past `filled`: masked
    view = state.cache.replace(slot_pos=rank, length=jnp.broadcast_to(filled_b, state.cache.length.shape))
    return view, q_rank_bt


def stream_step(
    model: ModelStep,
    state: StreamState,
    policy: StreamPolicy,
    tokens_bt: jax.Array,
    n_commit_b: jax.Array | int | None = None,
) -> tuple[StepOut, StreamState]:
    """Feeds tokens[B, T] (T <= window) at logical positions n.., commits the first n_commit[b]
    (default all) into the ring. Returns the step output (logits, hidden, pre-RoPE K/V)."""
    b, t = tokens_bt.shape
    if t > policy.window:
        raise ValueError(f"a streaming block has at most window={policy.window} tokens, got {t}")
    pos_bt = state.n[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
    view, q_rank_bt = _view(state, policy, pos_bt)
    out = model(tokens_bt, q_rank_bt, view)
    n_b = jnp.broadcast_to(jnp.asarray(t if n_commit_b is None else n_commit_b, jnp.int32), (b,))
    return out, _commit(state, out.new_kv, pos_bt, n_b, policy)


def _commit(state: StreamState, block: KVBlock, pos_bt: jax.Array, n_b: jax.Array, policy: StreamPolicy):
    if block.valid is not None:
        raise ValueError("streaming caches need every layer to process every token (no MoD/MoR skipping)")
    n_layers, b, t = block.k.shape[:3]
    keep_bt = jnp.arange(t)[None, :] < n_b[:, None]
    slot_bt = jnp.where(keep_bt, policy.slot_of(pos_bt), policy.size)  # dropped: out of bounds
    li = jnp.arange(n_layers)[:, None, None]
    bi = jnp.arange(b)[None, :, None]
    put = lambda buf, x: buf.at[li, bi, slot_bt[None]].set(x.astype(buf.dtype), mode="drop")
    c = state.cache
    pos_lbt = jnp.broadcast_to(pos_bt[None], (n_layers, b, t))
    cache = c.replace(k=put(c.k, block.k), v=put(c.v, block.v), slot_pos=put(c.slot_pos, pos_lbt))
    n_new = state.n + n_b
    return StreamState(
        cache.replace(length=jnp.broadcast_to(jnp.minimum(n_new, policy.size), c.length.shape)), n_new
    )


def stream_logits(model: ModelStep, tokens_bn: jax.Array, policy: StreamPolicy, chunk: int = 1) -> jax.Array:
    """Teacher-forced logits [B, N, V] of a token stream through the streaming cache, `chunk` tokens
    per call (chunk divides N; chunk = 1 is exact token-by-token streaming)."""
    b, n = tokens_bn.shape
    if n % chunk or chunk > policy.window:
        raise ValueError(f"chunk={chunk} must divide the stream length {n} and be <= window {policy.window}")

    def body(state, toks_bc):
        out, state = stream_step(model, state, policy, toks_bc)
        return state, out.logits

    chunks = tokens_bn.reshape(b, n // chunk, chunk).transpose(1, 0, 2)
    _, logits = jax.lax.scan(body, new_stream(model, b, policy), chunks)  # [N/c, B, c, V]
    return logits.transpose(1, 0, 2, 3).reshape(b, n, -1)


@dataclasses.dataclass(frozen=True)
class StreamingAR(Method):
    """Autoregressive decoding on a streaming cache (an engine method; memory O(n_sinks + window)).

    Generation can run past the model's training length: positions never exceed the cache size.
    The prompt (all but its last token, which is pending as in every engine method) is fed in chunks
    of `window`; rows whose prompts are shorter are padded, and padding is never committed.
    """

    stream: StreamPolicy = StreamPolicy()
    emit_width: ClassVar[int] = 1
    block_width: ClassVar[int] = 1
    rebases_positions: ClassVar[bool] = True  # the engine skips its max_seq_len check

    def init(self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any):
        del key, carry
        b, p = prompt_bp.shape
        state = new_stream(ctx.target, b, self.stream)
        w = self.stream.window
        for start in range(0, p - 1, w):  # static chunks of the prompt minus its (pending) last token
            toks = prompt_bp[:, start : min(start + w, p - 1)]
            n_b = jnp.clip(prompt_len_b - 1 - start, 0, toks.shape[1])
            _, state = stream_step(ctx.target, state, self.stream, toks, n_b)
        return state, last_prompt_token(prompt_bp, prompt_len_b)

    def round(self, ctx: Ctx, state: Any, key: jax.Array, active_b: jax.Array) -> RoundOut:
        stream, pending_b = state
        step_b = active_b.astype(jnp.int32)
        out, stream = stream_step(ctx.target, stream, self.stream, pending_b[:, None], step_b)
        tok_b = sample(key, out.logits[:, 0], ctx.sampler)
        b = tok_b.shape[0]
        return RoundOut(
            (stream, tok_b), tok_b[:, None], jnp.ones((b,), jnp.int32), Stats.per_round(b, 1, 0, 0, 0)
        )

    def carry(self, state: Any) -> None:
        return None
