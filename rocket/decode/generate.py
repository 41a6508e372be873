"""`generate(method=...)`: every decoding method behind one jit-compiled function, and `decode_stats`.

    out = generate(ModelStep(model, {"params": params}), prompt[B, P], prompt_len[B], key,
                   method="speculative", draft=ModelStep(draft_model, {"params": dparams}),
                   max_new_tokens=64, sampler=SamplerConfig(temperature=0.7))
    out.tokens[B, 64], out.n_tokens[B], out.stats (target/draft calls, drafted, accepted)

`method` is a method instance (a frozen dataclass, e.g. `Speculative(branching=(1, 1, 1, 1))`) or
one of the names in `METHODS` (their default configurations, or methods added by `register_method`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from rocket.decode.engine import Ctx, DecodeOutput, Method, ModelStep, run
from rocket.decode.methods import resolve_method
from rocket.decode.sampling import SamplerConfig


def generate(
    target: ModelStep,
    prompt_bp: jax.Array,
    prompt_len_b: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    method: str | Method = "ar",
    sampler: SamplerConfig = SamplerConfig(greedy=True),
    draft: ModelStep | None = None,
    draft_sampler: SamplerConfig | None = None,
    eos_id: int | None = None,
    max_len: int | None = None,
    carry: Any = None,
) -> DecodeOutput:
    """Generates `max_new_tokens` after each right-padded prompt (1 <= prompt_len[b] <= P).

    The output law is the warped target's (`sampler`) for every lossless method; `draft_sampler`
    (default: `sampler`) warps the draft. `max_len` is the KV cache size per row (default: exactly
    enough: P + max_new_tokens + the method's block). `carry` seeds a method's carried state (Token
    Recycling: the adjacency matrix from a previous call, "hot start"); `out.carry` returns it.
    A method name is resolved before compiling, so re-registering a name never reuses a stale trace.
    """
    return _generate(
        target,
        prompt_bp,
        prompt_len_b,
        key,
        max_new_tokens=max_new_tokens,
        method=resolve_method(method),
        sampler=sampler,
        draft=draft,
        draft_sampler=draft_sampler,
        eos_id=eos_id,
        max_len=max_len,
        carry=carry,
    )


@functools.partial(
    jax.jit, static_argnames=("method", "max_new_tokens", "sampler", "draft_sampler", "eos_id", "max_len")
)
def _generate(
    target: ModelStep,
    prompt_bp: jax.Array,
    prompt_len_b: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    method: Method,
    sampler: SamplerConfig,
    draft: ModelStep | None,
    draft_sampler: SamplerConfig | None,
    eos_id: int | None,
    max_len: int | None,
    carry: Any,
) -> DecodeOutput:
    ctx = Ctx(
        target=target,
        draft=draft,
        sampler=sampler,
        draft_sampler=sampler if draft_sampler is None else draft_sampler,
        max_len=prompt_bp.shape[1] + max_new_tokens + method.block_width if max_len is None else max_len,
    )
    return run(
        method, ctx, prompt_bp, prompt_len_b, key, max_new_tokens=max_new_tokens, eos_id=eos_id, carry=carry
    )


def decode_stats(out: DecodeOutput) -> dict[str, float]:
    """Summed over rows: mean accepted tokens per target call (MAT: emitted tokens / target calls,
    the correction/bonus token included), draft acceptance rate (accepted / drafted; for trees,
    drafted counts every node), per-position acceptance (accepted / tested: the rate at which the
    verifier advances one more draft depth, the alpha of a chain's MAT (1 - a^(g+1)) / (1 - a); it
    is the maximum-likelihood estimate under i.i.d. acceptance, since a round's draws after the first
    rejection are never examined; nan for methods that do not count tested depths), and target / draft
    calls per emitted token."""
    n = float(jax.numpy.sum(out.n_tokens))
    s = jax.tree.map(lambda x: float(jax.numpy.sum(x)), out.stats)
    return {
        "mean_accepted_tokens": n / max(s.target_calls, 1.0),
        "acceptance": s.accepted / s.drafted if s.drafted else float("nan"),
        "position_acceptance": s.accepted / s.tested if s.tested else float("nan"),
        "target_calls_per_token": s.target_calls / max(n, 1.0),
        "draft_calls_per_token": s.draft_calls / max(n, 1.0),
    }
