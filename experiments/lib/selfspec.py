"""Measurements of self-speculative decoding (`rocket.decode.methods.self_spec`) on small trained
models: decoding runs with their stats and wall time, per-call costs, target-equivalent calls per
token and the search of the free choices (exit layer, gamma, skip set) on held-out prompts.

Target-equivalent calls per token count each call by the depth it runs (stages of the model): a
self-draft call costs (shared prefix + private stages) / L, the self-verifier (L - shared) / L, a
separate draft model's call its layers / the target's layers; embedding and LM head are not counted.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rocket.decode import ModelStep, SamplerConfig, decode_stats, generate, new_cache
from rocket.decode.methods.self_spec import verify_forward
from rocket.models.exits import readout

GREEDY = SamplerConfig(greedy=True)


def prompts(batches: list[dict[str, np.ndarray]], n_select: int, n_score: int, length: int):
    """Disjoint held-out prompt sets (rows of the validation split): (selection [n, P], scored [n, P])."""
    rows = np.concatenate([b["inputs"][:, :length] for b in batches])
    if len(rows) < n_select + n_score:
        raise ValueError(f"need {n_select + n_score} validation rows, have {len(rows)}")
    return jnp.asarray(rows[:n_select]), jnp.asarray(rows[n_select : n_select + n_score])


def depth_fractions(method: Any, cfg: Any, draft: ModelStep | None) -> tuple[float, float]:
    """(draft call, target call) cost in full-depth calls (module docstring)."""
    if hasattr(method, "cost_fractions"):
        return method.cost_fractions(cfg)
    if draft is not None:
        return draft.module.cfg.n_layers / cfg.n_layers, 1.0
    return 0.0, 1.0


def decode(
    step: ModelStep,
    method: Any,
    prompt_bp: jax.Array,
    max_new: int,
    *,
    draft: ModelStep | None = None,
    sampler: SamplerConfig = GREEDY,
    repeats: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """One generation (and `repeats` timed ones after it) -> decode_stats + target-equivalent calls
    per token (`teq_per_token`) + median seconds per generation (`seconds`, nan without repeats)."""
    b, p = prompt_bp.shape
    plen = jnp.full((b,), p, jnp.int32)
    run = lambda: generate(
        step, prompt_bp, plen, jax.random.key(seed), method=method, max_new_tokens=max_new,
        sampler=sampler, draft=draft,
    )  # fmt: skip
    out = run()
    out.tokens.block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run().tokens.block_until_ready()
        times.append(time.perf_counter() - t0)
    stats = decode_stats(out)
    f_draft, f_target = depth_fractions(method, step.module.cfg, draft)
    stats["teq_per_token"] = (
        stats["target_calls_per_token"] * f_target + stats["draft_calls_per_token"] * f_draft
    )
    stats["seconds"] = float(np.median(times)) if times else float("nan")
    stats["tokens"] = float(jnp.sum(out.n_tokens))
    return stats


def _timed(fn, *args, repeats: int = 20) -> float:
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(*args))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(jitted(*args))
    return (time.perf_counter() - t0) / repeats


def call_times(step: ModelStep, method: Any, draft: ModelStep | None, max_len: int) -> dict[str, float]:
    """Measured seconds of one call (batch 1, a cache of `max_len` slots): the target at width 1
    (`t_target_1`), the method's verifier at its width (`t_target`) and its draft call (`t_draft`)."""
    cfg, params = step.module.cfg, step.variables["params"]
    cache = new_cache(step.module, 1, max_len)
    w = method.block_width
    tok = lambda t: jnp.zeros((1, t), jnp.int32)
    pos = lambda t: jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (1, t))
    full = lambda m: lambda c, x: m(x, pos(x.shape[1]), c).logits
    out = {"t_target_1": _timed(full(step), cache, tok(1))}
    if hasattr(method, "plan"):
        plan = method.plan(cfg)
        act = jnp.ones((1, w), bool)
        h = jnp.zeros((1, w, cfg.d_model), jnp.float32)
        out["t_target"] = _timed(
            lambda c, x: verify_forward(cfg, params, plan, x, act, pos(w), c)[0], cache, h
        )
        body = lambda c, x: readout(cfg, params, method._draft_body(cfg, params, plan, x, pos(1), c, c)[0])[0]
        out["t_draft"] = _timed(body, cache, tok(1))
    else:
        out["t_target"] = _timed(full(step), cache, tok(w))
        dcache = new_cache(draft.module, 1, max_len)
        out["t_draft"] = _timed(full(draft), dcache, tok(1))
    return out


def skip_candidates(n_layers: int, max_size: int = 2) -> list[tuple[int, ...]]:
    """Draft & Verify's search space here: every set of 1..max_size layers, never layer 0, never a
    suffix {k, ..., L - 1} (that is an early exit, `SelfExit`, not layer skipping)."""
    layers = range(1, n_layers)
    sets = [c for k in range(1, max_size + 1) for c in itertools.combinations(layers, k)]
    return [c for c in sets if c != tuple(range(c[0], n_layers))]


def choose(step: ModelStep, candidates: list, select_bp: jax.Array, max_new: int) -> tuple[Any, list[dict]]:
    """The candidate with the fewest target-equivalent calls per token on the selection prompts
    (greedy decoding, no timing): the free choices are fixed before anything is scored."""
    trials = []
    for method in candidates:
        s = decode(step, method, select_bp, max_new)
        trials.append(
            {"method": repr(method), "teq_per_token": s["teq_per_token"], "acceptance": s["acceptance"]}
        )
    best = int(np.argmin([t["teq_per_token"] for t in trials]))
    return candidates[best], trials
