"""Adaptive weighted rejection sampling (AWRS; Lipkin et al., "Fast Controlled Generation from Language
Models with Adaptive Weighted Rejection Sampling", arXiv 2504.05410; reference: genlm/genlm-control
`genlm/control/sampler/token.py`, `recursive_awrs`).

Target of one step: the locally constrained distribution pi(x) = p(x) c(x) / Z, Z = sum_x p(x) c(x),
with c(x) in {0, 1} the constraint (here: the token automaton does not die, `regex_dfa`).

Sampling: one Gumbel draw keys = log p + G orders the vocabulary as a sample without replacement;
tokens are checked in that order, rejected ones are removed, and the first accepted token x is an
exact sample of pi (adaptive rejection sampling without replacement).

Weight (recursive AWRS): with m = the mass rejected before x and y the next token in the same order,

    w = (1 - m)   if c(y) = 1 (or no token of positive mass is left),      w = p(x)   otherwise,

one extra check. It is *properly weighted*: E[w 1{X = x}] = p(x) c(x) for every x, so E[w] = Z.
Proof (induction on the rejections): with r = p / (1 - m) the remaining law and Z_r = Z / (1 - m),
the estimator of Z_r is, after drawing x ~ r: (1 - r(x)) * (estimator for r without x) when c(x) = 0,
and r(x) + (1 - r(x)) c(y) with y ~ r(. | != x) when c(x) = 1, whose mean is r(x) + Z_r - r(x) c(x).
Multiplying out the factors (1 - r) of the rejections gives the closed form above. If no token is
accepted the particle dies (w = 0). Sequence level: the product of the step weights makes the
particles properly weighted for the global constrained law p(x_{1:n}) c(x_{1:n}) (self-normalised
importance sampling, or SMC with resampling on low ESS: `resample`), which local masking does not
reach (it is biased toward prefixes whose continuations are mostly forbidden).

JAX: the constraint is a table gather `next_sv[state, token]`, so the `max_checks` candidates in key
order are checked in one vectorised gather; `n_checks` reports how many checks the sequential
algorithm consumes (first acceptance + 2), the cost that matters when checks are expensive.

`AWRSDecode` is the engine method: every row is a particle (repeat a prompt M times), and the final
log-weights, automaton states and check counts come back as `out.carry` (`AWRSCarry`). The engine
owns the output rows, so resampling (SMC) is not done inside the loop: the weighted particles are
an importance sample of the global constrained law; `resample` / `ess` serve host-side SMC.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from rocket.decode.engine import Ctx, Method, RoundOut, StagedCache, Stats
from rocket.decode.methods.autoregressive import ARState, Autoregressive
from rocket.decode.sampling import warp
from rocket.decode.tools.regex_dfa import TokenDFA


class AWRSStep(NamedTuple):
    token: jax.Array  # [...] int32 (arbitrary when the particle dies)
    log_weight: jax.Array  # [...] float32, -inf when no candidate was accepted
    n_checks: jax.Array  # [...] int32 constraint checks the sequential algorithm makes


class DFATables(NamedTuple):
    """A `TokenDFA` as device arrays (a pytree, so it can be a jit argument)."""

    next_sv: jax.Array  # [S, V] int32
    accepting: jax.Array  # [S] bool
    dead: jax.Array  # [] int32

    @classmethod
    def from_dfa(cls, dfa: TokenDFA) -> DFATables:
        return cls(jnp.asarray(dfa.next_sv), jnp.asarray(dfa.accepting), jnp.asarray(dfa.dead, jnp.int32))

    def allowed(self, state: jax.Array, token: jax.Array) -> jax.Array:
        return self.next_sv[state, token] != self.dead


def awrs_step(
    key: jax.Array, logp_v: jax.Array, state: jax.Array, dfa: DFATables, max_checks: int | None = None
) -> AWRSStep:
    """One AWRS draw for one row: logp[V] normalized log-probs (already warped), automaton state [].

    `max_checks` (static, default V: exact) bounds the rejections; a particle that exhausts it dies,
    as with the reference's `max_rejects`. vmap over rows / particles.
    """
    v = logp_v.shape[-1]
    k = v if max_checks is None else min(max_checks, v)
    if k < 1:
        raise ValueError(f"max_checks must be >= 1, got {max_checks}")
    keys_v = logp_v + jax.random.gumbel(key, logp_v.shape, logp_v.dtype)
    order_keys, order = jax.lax.top_k(keys_v, min(k + 1, v))  # candidates in sampling order
    live = order_keys > -jnp.inf  # tokens of probability 0 are never proposed
    ok = dfa.allowed(state, order) & live
    first = jnp.argmax(ok[:k])  # first accepted candidate
    found = ok[:k].any()
    p_order = jnp.where(live, jnp.exp(logp_v[order]), 0.0)
    rejected_mass = jnp.sum(jnp.where(jnp.arange(p_order.shape[0]) < first, p_order, 0.0))
    nxt = jnp.minimum(first + 1, order.shape[0] - 1)
    next_exists = (first + 1 < order.shape[0]) & live[nxt]
    next_ok = jnp.where(next_exists, ok[nxt], True)
    log_w = jnp.where(next_ok, jnp.log1p(-jnp.minimum(rejected_mass, 1.0)), logp_v[order[first]])
    log_w = jnp.where(found, log_w, -jnp.inf)
    n_checks = jnp.where(found, first + 1 + next_exists, jnp.sum(live[:k]))
    return AWRSStep(order[first].astype(jnp.int32), log_w.astype(jnp.float32), n_checks.astype(jnp.int32))


def resample(key: jax.Array, log_w_m: jax.Array) -> jax.Array:
    """Systematic resampling: ancestor indices [M] with P(i) proportional to exp(log_w[i])."""
    m = log_w_m.shape[0]
    w = jax.nn.softmax(log_w_m)
    u = (jax.random.uniform(key) + jnp.arange(m)) / m
    return jnp.minimum(jnp.searchsorted(jnp.cumsum(w), u), m - 1).astype(jnp.int32)


def ess(log_w_m: jax.Array) -> jax.Array:
    """Effective sample size (sum w)^2 / sum w^2 of M log-weights."""
    w = jax.nn.softmax(log_w_m)
    return 1.0 / jnp.sum(w**2)


@flax.struct.dataclass
class AWRSCarry:
    dfa_state: jax.Array  # [B] automaton state after the emitted tokens (dead: the particle died)
    log_weight: jax.Array  # [B] sum of the step log-weights (-inf: dead)
    n_checks: jax.Array  # [B] constraint checks made


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class AWRSDecode(Method):
    """Constrained sampling with AWRS on the shared engine (rows = particles). `dfa` from
    `rocket.decode.tools.regex_dfa.token_dfa` over the model's vocabulary (with eos_id so that EOS is
    allowed exactly in accepting states); the sampler's temperature / top-k / top-p warp p first."""

    dfa: TokenDFA
    max_checks: int | None = None
    emit_width: ClassVar[int] = 1
    block_width: ClassVar[int] = 1

    def init(self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any):
        if ctx.sampler.greedy:
            raise ValueError("AWRSDecode samples: use a non-greedy SamplerConfig")
        if self.dfa.next_sv.shape[1] != ctx.target.vocab_size:
            raise ValueError(
                f"the token automaton has {self.dfa.next_sv.shape[1]} tokens, the model {ctx.target.vocab_size}"
            )
        b = prompt_bp.shape[0]
        ar = Autoregressive().init(ctx, prompt_bp, prompt_len_b, key, carry)
        zeros = jnp.zeros((b,), jnp.int32)
        return ar, AWRSCarry(zeros, jnp.zeros((b,), jnp.float32), zeros)

    def round(self, ctx: Ctx, state: Any, key: jax.Array, active_b: jax.Array) -> RoundOut:
        ar, acc = state
        tables = DFATables.from_dfa(self.dfa)
        cache = ar.cache.read()
        out = ctx.target(ar.pending[:, None], ar.pos[:, None], cache)
        logp_bv = jnp.log(warp(out.logits[:, 0], ctx.sampler))
        b = logp_bv.shape[0]
        draw = jax.vmap(lambda k, lp, s: awrs_step(k, lp, s, tables, self.max_checks))(
            jax.random.split(key, b), logp_bv, acc.dfa_state
        )
        step_b = active_b.astype(jnp.int32)
        ar = ARState(StagedCache(cache, out.new_kv, step_b), draw.token, ar.pos + step_b)
        acc = AWRSCarry(
            jnp.where(active_b, tables.next_sv[acc.dfa_state, draw.token], acc.dfa_state),
            acc.log_weight + jnp.where(active_b, draw.log_weight, 0.0),
            acc.n_checks + step_b * draw.n_checks,
        )
        ones = jnp.ones((b,), jnp.int32)
        return RoundOut((ar, acc), draw.token[:, None], ones, Stats.per_round(b, 1, 0, 0, 0))

    def carry(self, state: Any) -> AWRSCarry:
        return state[1]
