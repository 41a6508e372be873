"""The decoding engine: one `lax.while_loop` that every decoding method plugs into.

The engine owns what all methods share: the output buffer, per-row progress, EOS handling, the
per-round RNG key and the stats. A method owns its caches and drafting/verification and is a
`round_fn`:

    state = method.init(ctx, prompt[B, P], prompt_len[B], key, carry)     # prefill, method state
    out = method.round(ctx, state, key_round, active[B])                  # one round -> RoundOut
    carry = method.carry(state)                                           # e.g. Token Recycling's M

`RoundOut.tokens[B, method.emit_width]` holds the round's emitted tokens, the first `n[b]` of them
valid. `active[b]` is False once row b is done: a method must not advance a finished row's caches
(commit `where(active, n, 0)`), so caches never outgrow their capacity; the engine ignores what a
finished row emits. Per-call stats (`Stats`) come back from the round and are masked by `active`.

Conventions every method follows (so methods compose with the shared prefill):
  * Prefill commits the prompt *except its last token*: the last prompt token is the *pending* root
    of the first round, at logical position prompt_len - 1. Every round starts from the pending
    token (the last emitted token, not yet in the target cache) at position `pos[b]`, feeds it
    through the target together with any drafts, commits what it accepts and leaves its final
    (correction / bonus) token pending. Target calls per round = 1 for every built-in method.
  * Round keys are `fold_in(key, round)`; a method splits its own keys from it, so no uniform is
    ever reused across rounds.

Adding a method: subclass `Method` with a frozen (hashable) dataclass defining `emit_width`,
`block_width` (the largest in-flight block a call feeds, for the capacity check), `init`, `round`
and `carry` as in `rocket.decode.methods.autoregressive.Autoregressive` (the smallest example), then
pass an instance as `rocket.decode.generate(method=...)` or register it under a name with
`rocket.decode.register_method`. Use `ctx.target(...)` / `ctx.draft(...)` for model calls (models
satisfy `rocket.decode.protocol.DecodableModel`) and `rocket.decode.verify` for acceptance rules.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import flax.struct
import jax
import jax.numpy as jnp

from rocket.decode.protocol import DecodableModel, DecodeSpec
from rocket.decode.rng import unroll_threefry_on_cpu
from rocket.decode.sampling import SamplerConfig
from rocket.layers.cache import Cache, KVBlock, commit_block

unroll_threefry_on_cpu()  # before any round is lowered: its random draws then need no nested loops


def new_cache(model: DecodableModel, batch: int, max_len: int) -> Cache:
    """An empty cache for `model` (its `cache_layers` K/V layers) with max_len slots per row."""
    return DecodeSpec.of(model).new_cache(batch, max_len)


@flax.struct.dataclass
class StepOut:
    logits: jax.Array  # [B, T, V] float32
    hidden: jax.Array  # [B, T, D] final normed hidden state
    new_kv: KVBlock  # the block's K/V, not yet committed
    aux: dict  # the model's full aux dict (router stats etc.)


@flax.struct.dataclass
class ModelStep:
    """A model bound to its variables and extra apply kwargs: the engine's model interface.

    `kwargs` are passed to every call (e.g. `{"rngs": {"sample": key}}` for models with per-sequence
    randomness, fixed for a whole generation); `routing` is "causal" for decoding (MoD/MoR decide
    per token, so a T-token block equals T one-token steps). Any `DecodableModel` works, as target
    or draft; its sizes are read through `spec` only.
    """

    module: DecodableModel = flax.struct.field(pytree_node=False)
    variables: Any  # {"params": ...}
    kwargs: dict = dataclasses.field(default_factory=dict)
    routing: str = flax.struct.field(pytree_node=False, default="causal")

    def __call__(
        self,
        tokens_bt: jax.Array,
        positions_bt: jax.Array,
        cache: Cache,
        block_mask_btt: jax.Array | None = None,
    ) -> StepOut:
        """Reads `cache`, never writes it; block_mask is the in-block mask (tree: ancestor-or-self)."""
        logits, aux = self.module.apply(
            self.variables,
            tokens_bt,
            positions_bt,
            cache=cache,
            block_mask=block_mask_btt,
            routing=self.routing,
            **self.kwargs,
        )
        return StepOut(logits.astype(jnp.float32), aux["hidden"], aux["new_kv"], aux)

    @property
    def spec(self) -> DecodeSpec:
        return DecodeSpec.of(self.module)

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def max_seq_len(self) -> int:
        return self.spec.max_seq_len

    def new_cache(self, batch: int, max_len: int) -> Cache:
        return self.spec.new_cache(batch, max_len)


@flax.struct.dataclass
class Stats:
    """Per-row counters [B] int32, advanced only while the row is active."""

    target_calls: jax.Array
    draft_calls: jax.Array
    drafted: jax.Array  # draft tokens offered to the verifier (tree nodes, chain drafts)
    accepted: jax.Array  # draft tokens accepted (emitted tokens = accepted + 1 per round)
    # draft depths the verifier examined (accepted + 1 per round, capped at the draft depth): the
    # denominator of the per-position acceptance rate; 0 for methods that do not report it
    tested: jax.Array

    @classmethod
    def zeros(cls, b: int) -> Stats:
        z = jnp.zeros((b,), jnp.int32)
        return cls(z, z, z, z, z)

    @classmethod
    def per_round(
        cls, b: int, target_calls: int, draft_calls: int, drafted: Any, accepted: Any, tested: Any = 0
    ) -> Stats:
        full = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.int32), (b,))
        return cls(full(target_calls), full(draft_calls), full(drafted), full(accepted), full(tested))

    def add(self, other: Stats, active_b: jax.Array) -> Stats:
        return jax.tree.map(lambda a, o: a + jnp.where(active_b, o, 0), self, other)


@flax.struct.dataclass
class RoundOut:
    state: Any  # the method's state after the round
    tokens: jax.Array  # [B, emit_width] emitted tokens, the first n[b] valid
    n: jax.Array  # [B] int32, 1 <= n <= emit_width for active rows
    stats: Stats


@flax.struct.dataclass
class Ctx:
    """What a method may use: the models, the samplers and the cache size (static)."""

    target: ModelStep
    draft: ModelStep | None
    sampler: SamplerConfig = flax.struct.field(pytree_node=False)
    draft_sampler: SamplerConfig = flax.struct.field(pytree_node=False)
    max_len: int = flax.struct.field(pytree_node=False)  # cache slots per row


@runtime_checkable
class Method(Protocol):
    """A decoding method: a hashable, frozen dataclass (it is a static argument of jit).

    Every attribute the engine reads is declared here; subclass `Method` to inherit the defaults of
    the two flags (a class that only matches the protocol structurally must define them itself).
    """

    needs_draft: ClassVar[bool] = False  # the method calls `ctx.draft`: generate() requires one
    # positions stay within the method's own cache (streaming): the max_seq_len check is skipped
    rebases_positions: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def emit_width(self) -> int: ...  # most tokens one round emits

    @property
    @abc.abstractmethod
    def block_width(self) -> int: ...  # most tokens one model call feeds

    @abc.abstractmethod
    def init(
        self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any
    ) -> Any: ...

    @abc.abstractmethod
    def round(self, ctx: Ctx, state: Any, key: jax.Array, active_b: jax.Array) -> RoundOut: ...

    @abc.abstractmethod
    def carry(self, state: Any) -> Any: ...


@flax.struct.dataclass
class DecodeOutput:
    tokens: jax.Array  # [B, max_new] int32; after EOS (or past n_tokens) filled with eos_id / 0
    n_tokens: jax.Array  # [B] int32 tokens generated (EOS included)
    stats: Stats
    rounds: jax.Array  # int32, loop iterations
    carry: Any  # the method's carry-over state (e.g. Token Recycling's adjacency matrix)


def prefill(
    model: ModelStep, cache: Cache, prompt_bp: jax.Array, prompt_len_b: jax.Array
) -> tuple[StepOut, Cache]:
    """Runs the prompts and commits all but each row's last token (the first round's pending root).

    prompt[B, P] is right-padded; 1 <= prompt_len[b] <= P. Returns the step output (for methods that
    seed state from the prompt's logits) and the cache.
    """
    b, p = prompt_bp.shape
    positions_bp = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    out = model(prompt_bp, positions_bp, cache)
    return out, commit_block(cache, out.new_kv, prompt_len_b - 1)


@flax.struct.dataclass
class StagedCache:
    """A cache and the block a round accepted, written only when the next round reads the cache.

    Same cache contents at every model call as committing at the end of the round, but the write
    then comes before the round's reads instead of after them, so XLA updates the cache in place;
    a write after the reads costs copies of the whole cache every round (`while` loop carries).
    """

    committed: Cache
    block: KVBlock  # the staged tokens [L, B, W, ...]
    n: jax.Array  # [B] how many of them to write (a prefix, as `commit_block`)

    @classmethod
    def empty(cls, cache: Cache, like: KVBlock, width: int) -> StagedCache:
        """Nothing staged yet; `like` (e.g. the prefill's K/V) gives the block's structure."""
        b = cache.batch_size
        return cls(cache, like.take(jnp.zeros((b, width), jnp.int32)), jnp.zeros((b,), jnp.int32))

    def read(self) -> Cache:
        """The cache with the staged block written (what the next model call reads)."""
        return commit_block(self.committed, self.block, self.n)


def last_prompt_token(prompt_bp: jax.Array, prompt_len_b: jax.Array) -> jax.Array:
    """[B] the pending root of the first round."""
    return jnp.take_along_axis(prompt_bp, (prompt_len_b - 1)[:, None], axis=1)[:, 0]


@flax.struct.dataclass
class _LoopState:
    out: jax.Array  # [B, max_new + emit_width]
    n_out: jax.Array  # [B]
    done: jax.Array  # [B]
    stats: Stats
    method_state: Any
    round: jax.Array  # int32


def run(
    method: Method,
    ctx: Ctx,
    prompt_bp: jax.Array,
    prompt_len_b: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    carry: Any = None,
) -> DecodeOutput:
    """The shared loop: rounds until every row has `max_new_tokens` tokens or emitted EOS."""
    b, p = prompt_bp.shape
    check_capacity_for(method, ctx, p, max_new_tokens)
    w = method.emit_width
    key_init, key_loop = jax.random.split(key)
    state = _LoopState(
        out=jnp.zeros((b, max_new_tokens + w), jnp.int32),
        n_out=jnp.zeros((b,), jnp.int32),
        done=jnp.zeros((b,), bool),
        stats=Stats.zeros(b),
        method_state=method.init(ctx, prompt_bp, prompt_len_b, key_init, carry),
        round=jnp.int32(0),
    )

    def body(s: _LoopState) -> _LoopState:
        active_b = ~s.done
        r = method.round(ctx, s.method_state, jax.random.fold_in(key_loop, s.round), active_b)
        n_b = jnp.where(active_b, r.n, 0)
        j_w = jnp.arange(w)[None, :]
        if eos_id is not None:  # truncate after the first EOS inside the emitted block
            is_eos_bw = (r.tokens == eos_id) & (j_w < n_b[:, None])
            first_eos_b = jnp.min(jnp.where(is_eos_bw, j_w, w), axis=1)
            n_b = jnp.minimum(n_b, first_eos_b + 1)
            hit_eos_b = first_eos_b < w
        else:
            hit_eos_b = jnp.zeros_like(s.done)
        dest_bw = jnp.where(j_w < n_b[:, None], s.n_out[:, None] + j_w, s.out.shape[1])
        out = s.out.at[jnp.arange(b)[:, None], dest_bw].set(r.tokens, mode="drop")
        n_out = s.n_out + n_b
        done = s.done | (active_b & hit_eos_b) | (n_out >= max_new_tokens)
        return _LoopState(out, n_out, done, s.stats.add(r.stats, active_b), r.state, s.round + 1)

    state = jax.lax.while_loop(lambda s: ~jnp.all(s.done), body, state)
    n_tokens = jnp.minimum(state.n_out, max_new_tokens)
    tokens = state.out[:, :max_new_tokens]
    fill = 0 if eos_id is None else eos_id
    tokens = jnp.where(jnp.arange(max_new_tokens)[None, :] < n_tokens[:, None], tokens, fill)
    return DecodeOutput(tokens, n_tokens, state.stats, state.round, method.carry(state.method_state))


def check_capacity_for(method: Method, ctx: Ctx, prompt_width: int, max_new_tokens: int) -> None:
    """Clear errors, at trace time, for a generation that cannot fit the cache or the model."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    needed = prompt_width + max_new_tokens + method.block_width
    if needed > ctx.max_len:
        raise ValueError(
            f"the KV cache has {ctx.max_len} slots but this generation needs {needed} (prompt width "
            f"{prompt_width} + max_new_tokens {max_new_tokens} + in-flight block {method.block_width}); "
            "allocate a larger cache (max_len) or generate fewer tokens"
        )
    for name, m in (("target", ctx.target), ("draft", ctx.draft)):
        if m is None or method.rebases_positions:
            continue
        if prompt_width + max_new_tokens > m.max_seq_len:
            raise ValueError(
                f"prompt width {prompt_width} + max_new_tokens {max_new_tokens} exceeds the {name} "
                f"model's max_seq_len {m.max_seq_len}"
            )
        if method.block_width > m.max_seq_len:
            raise ValueError(
                f"{type(method).__name__} feeds blocks of {method.block_width} tokens, more than the {name} "
                f"model's max_seq_len {m.max_seq_len}; use a smaller tree"
            )
    if ctx.draft is not None and ctx.draft.vocab_size != ctx.target.vocab_size:
        raise ValueError(
            f"the draft's vocabulary ({ctx.draft.vocab_size}) differs from the target's ({ctx.target.vocab_size})"
        )
    if method.needs_draft and ctx.draft is None:
        raise ValueError(f"method {type(method).__name__} needs a draft model (pass draft=ModelStep(...))")
