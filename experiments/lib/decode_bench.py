"""Speculative decoding measured side by side (batch 1, warm, compile excluded): the machinery of
`bench_decode.py` and `repro_decoding.py`.

`train_or_load` trains (or reloads) a byte-level decoder on the built-in corpus with rocket.train;
`measure` decodes the same prompts with every method and returns per method: draft acceptance rate,
mean accepted tokens per target call (MAT), target and draft calls per emitted token, warm tokens/s
(whole generation inside one jit) and the speedup over autoregressive decoding of the same target in
the same run (Leviathan et al. 2023, Chen et al. 2023: speculative sampling; Luo et al. 2024: Token
Recycling).

Because a CPU has little parallel slack (a wide verify block costs several 1-token steps), it also
measures the per-call cost of each model at every block width the methods use and gives two
modelled speedups (`rocket.decode.cost_model`): "model" from the measured CPU costs t(w), and
"flat" (the memory-bound accelerator regime, a model, not a measurement) where a call of any
width costs its model's measured 1-token call. For chains the theoretical MAT (1 - a^(g+1)) / (1 - a)
from the per-position acceptance a is given next to the measured one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig
from rocket.decode import (
    Autoregressive,
    ModelStep,
    SamplerConfig,
    Speculative,
    TokenRecycling,
    call_widths,
    chain_mat,
    decode_stats,
    generate,
    modelled_speedup,
    prefill,
)
from rocket.train.loop import train
from rocket.train.restore import restore_run

PROMPTS = [
    "def __init__(self, ",
    "import os\nimport sys\n\n",
    "class Error(Exception):\n    ",
    "    for i in range(len(",
    "        if not isinstance(",
    "    return self.",
]
CALLS_PER_TIMING = 16


def train_or_load(root: str, name: str, layers: int, steps: int) -> tuple[ModelStep, Any, float]:
    """Trains (or reloads) a d=128 byte-level decoder of `layers` layers on the built-in corpus under
    root/name -> (ModelStep, tokenizer, validation bits/byte)."""
    cfg = ExperimentConfig(
        model=ModelConfig(
            vocab_size=258, d_model=128, n_layers=layers, n_heads=4, n_kv_heads=2, max_seq_len=256
        ),
        data=DataConfig(corpus="stdlib", tokenizer="byte", seq_len=128, batch_size=16, eval_batches=4),
        optim=OptimConfig(lr=3e-3, warmup_steps=30, schedule="cosine"),
        train=TrainConfig(
            steps=steps,
            workdir=os.path.join(root, name),
            log_every=50,
            eval_every=steps,
            ckpt_every=steps,
            sample_tokens=0,
            progress=False,
        ),
    )
    t0 = time.time()
    bpb = float(train(cfg)["eval_bits_per_byte"])  # resumes: a finished run only reloads
    print(f"{name}: {layers} layers, eval bits/byte {bpb:.3f} ({time.time() - t0:.0f}s)", flush=True)
    run = restore_run(os.path.join(root, name))
    model, tokenizer = ModelStep(run.model, {"params": run.params}), run.tokenizer()
    return model, tokenizer, bpb


def calls_loop(calls: list[tuple[ModelStep, int]], max_len: int) -> Callable[[int], float]:
    """-> once(n): runs n iterations of the `width`-token calls of each (model, width) in `calls`, in
    order (batch 1, causal block mask, a half-full cache of `max_len` slots), warm, inside jit, in one
    `fori_loop`, and returns seconds per iteration. Each block's tokens are the previous call's argmax,
    and its positions depend on them too (`+ min(token, 0)`, always 0), so that XLA can neither fold
    nor hoist any part of a call out of the loop (a decoding round computes them at run time)."""
    fill = max_len // 2
    caches, masks, widths = [], [], [w for _, w in calls]
    for model, width in calls:
        cache = model.new_cache(1, max_len)
        caches.append(prefill(model, cache, jnp.zeros((1, fill + 1), jnp.int32), jnp.array([fill + 1]))[1])
        masks.append(None if width == 1 else jnp.tril(jnp.ones((1, width, width), bool)))  # [1, W, W]

    @jax.jit
    def run(models, caches, tok, n):
        def body(_, tok):
            for model, cache, mask, width in zip(models, caches, masks, widths):
                pos = jnp.arange(fill, fill + width, dtype=jnp.int32)[None] + jnp.minimum(tok, 0)  # [1, W]
                logits = model(jnp.broadcast_to(tok, (1, width)), pos, cache, mask).logits
                tok = jnp.argmax(logits[0, -1]).astype(jnp.int32)
            return tok

        return jax.lax.fori_loop(0, n, body, tok)

    models = [m for m, _ in calls]
    tok = jnp.int32(1)
    jax.block_until_ready(run(models, caches, tok, 1))

    def once(n: int) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(run(models, caches, tok, n))
        return (time.perf_counter() - t0) / n

    return once


def call_loop(model: ModelStep, width: int, max_len: int) -> Callable[[], float]:
    """-> a function timing one pass of CALLS_PER_TIMING `width`-token calls of `model` (`calls_loop`)
    and returning seconds per call."""
    once = calls_loop([(model, width)], max_len)
    return lambda: once(CALLS_PER_TIMING)


def call_time(model: ModelStep, width: int, max_len: int, repeats: int) -> float:
    """Seconds per `width`-token call (`call_loop`), the best of `repeats` timings."""
    once = call_loop(model, width, max_len)
    return min(once() for _ in range(repeats))


def modelled(row: dict, method, draft_name: str | None, t: dict) -> tuple[float, float]:
    """(speedup from the measured costs t[(model, width)], flat-cost speedup) for one method."""
    verify, draft_widths = call_widths(method)
    t1 = t[("target", 1)]
    t_draft = float(np.mean([t[(draft_name, w)] for w in draft_widths])) if draft_widths else 0.0
    flat_draft = t[(draft_name, 1)] if draft_widths else 0.0
    return (
        modelled_speedup(row, t1, t[("target", verify)], t_draft),
        modelled_speedup(row, t1, t1, flat_draft),
    )


def prefill_loop(models: list[ModelStep], width: int, max_len: int) -> Callable[[], float]:
    """-> once(): seconds of prefilling a fresh `max_len`-slot cache of each model in `models` with a
    `width`-token prompt (batch 1), warm, inside one jit: the calls a generation makes before its
    first round."""

    @jax.jit
    def run(models, prompt_bp):
        return [prefill(m, m.new_cache(1, max_len), prompt_bp, jnp.array([width]))[1] for m in models]

    prompt_bp = jnp.ones((1, width), jnp.int32)
    jax.block_until_ready(run(models, prompt_bp))

    def once() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(run(models, prompt_bp))
        return time.perf_counter() - t0

    return once


class RoundCalls:
    """The model calls of `method`'s generation, timed interleaved with it: `time(rounds)` after every
    timed generation runs the prefill of its models (`prefill_loop`, the prompt's width) and its
    round's calls (its target verify call, then its draft calls, at the cache size its generation
    uses) for as many iterations as that generation had rounds (`calls_loop`: one loop of the same
    length as the generation's, so the load of a shared machine hits both sides of the round /
    model-call ratio alike); `seconds` is the best of (prefill + rounds x calls) / rounds, the model
    time a round of that generation carries."""

    def __init__(self, models: dict, method, draft_name: str | None, prompt_width: int, max_len: int):
        verify, draft_widths = call_widths(method)
        calls = [(models["target"], verify)] + [(models[draft_name], w) for w in draft_widths]
        self.once = calls_loop(calls, max_len)
        prefilled = [models["target"]] + ([models[draft_name]] if draft_widths else [])
        self.prefill = prefill_loop(prefilled, prompt_width, max_len)
        self.seconds = float("inf")

    def time(self, rounds: int) -> None:
        rounds = max(rounds, 1)
        self.seconds = min(self.seconds, self.once(rounds) + self.prefill() / rounds)


def run_method(
    target,
    draft,
    tokenizer,
    method,
    sampler,
    max_new: int,
    prompts: list,
    repeats: int,
    seed: int = 0,
    between: Callable[[int], None] | None = None,
) -> dict:
    """Warm generation of every prompt (batch 1): two untimed warm-up calls (compile; Token Recycling's
    carried M changes the argument's placement once), then the best of `repeats` timed calls per prompt
    (the minimum is robust to other processes on a shared machine); `between(rounds)` runs after each
    with the generation's round count."""
    encoded = [np.concatenate([[tokenizer.bos_id], tokenizer.encode(p)]).astype(np.int32) for p in prompts]
    width = max(len(e) for e in encoded)
    carry = (
        jnp.zeros((target.spec.vocab_size, method.k), jnp.int32)
        if isinstance(method, TokenRecycling)
        else None
    )

    def call(e, key, carry):
        prompt = jnp.asarray(np.pad(e, (0, width - len(e))))[None]
        return jax.block_until_ready(
            generate(
                target,
                prompt,
                jnp.array([len(e)]),
                key,
                max_new_tokens=max_new,
                method=method,
                sampler=sampler,
                draft=draft,
                carry=carry,
            )
        )

    for _ in range(2):
        warm = call(encoded[0], jax.random.key(seed), carry)
        carry = None if carry is None else warm.carry[0]
    outs, elapsed = [], 0.0
    for i, e in enumerate(encoded):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = call(e, jax.random.key(seed + i), carry)
            times.append(time.perf_counter() - t0)
            if between is not None:
                between(int(out.rounds))
        elapsed += min(times)
        outs.append(out)
        if carry is not None:
            carry = out.carry[0]  # hot start: M carries over to the next prompt (the paper's setting)
    stats = [decode_stats(o) for o in outs]
    n = sum(int(o.n_tokens[0]) for o in outs)
    row = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    row["tokens_per_s"] = n / elapsed
    row["tokens"] = [np.asarray(o.tokens[0]) for o in outs]
    return row


def measure(
    runs: list[tuple[str, Any, str | None, SamplerConfig]],
    models: dict[str, ModelStep],
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    repeats: int,
) -> list[dict]:
    """Decodes `prompts` with every run (name, method, draft name or None, sampler) -> one dict per
    run: `decode_stats`, tokens/s, `speedup` over the autoregressive run of the same sampler (which
    must come first in `runs`), `model_speedup` / `flat_speedup` (`modelled`), `theory_mat` (chains
    only), `same_as_ar` (greedy runs: output identical to greedy AR, else None), `tokens`, and the
    round's cost split: `round_s` (measured seconds per round = per target call), `model_call_s` (its
    model calls alone, the prompt's prefill included: `RoundCalls`, timed between the generations at
    the run's own cache size) and
    `round_overhead` = round_s / model_call_s (1.0: sampling, verification, tree building and
    bookkeeping cost nothing).

    models: "target" and the drafts by name; per-call costs are measured at every width the runs use
    (one cache size: the largest any run needs) and printed."""
    needed = {("target", 1)}
    for _, method, draft, _ in runs:
        verify, draft_widths = call_widths(method)
        needed |= {("target", verify)} | {(draft, w) for w in draft_widths + (1,) * bool(draft_widths)}
    prompt_width = 1 + max(len(tokenizer.encode(p)) for p in prompts)
    max_len = prompt_width + max_new_tokens + max(m.block_width for _, m, _, _ in runs)
    t = {(name, width): call_time(models[name], width, max_len, repeats) for name, width in sorted(needed)}
    for name in sorted({n for n, _ in t}):
        costs = "  ".join(f"t({w})={t[(n, w)] * 1e3:.3f}" for n, w in sorted(t) if n == name)
        print(f"per-call ms, {name:6s} (cache {max_len}): {costs}", flush=True)

    def decode(method, draft, sampler, between=None):
        target, draft = models["target"], models.get(draft)
        args = (tokenizer, method, sampler, max_new_tokens, prompts, repeats)
        return run_method(target, draft, *args, between=between)

    base, results, ar_runs = {}, [], {}
    for name, method, draft, sampler in runs:
        t0 = time.time()
        calls = RoundCalls(
            models, method, draft, prompt_width, prompt_width + max_new_tokens + method.block_width
        )
        r = decode(method, draft, sampler, between=calls.time)
        if isinstance(method, Autoregressive):
            base[sampler], ar_runs[sampler] = r, (method, draft)
        if sampler not in base:
            raise ValueError(f"run {name!r}: no autoregressive run with its sampler precedes it")
        r["same_as_ar"] = (
            all((a == b).all() for a, b in zip(r["tokens"], base[sampler]["tokens"]))
            if sampler.greedy
            else None
        )
        r["model_speedup"], r["flat_speedup"] = modelled(r, method, draft, t)
        r["model_call_s"] = calls.seconds
        r["round_s"] = 1.0 / (r["tokens_per_s"] * r["target_calls_per_token"])  # one target call a round
        r["round_overhead"] = r["round_s"] / r["model_call_s"]
        is_chain = isinstance(method, Speculative) and set(method.branching) == {1}
        r["theory_mat"] = chain_mat(r["position_acceptance"], len(method.branching)) if is_chain else None
        r["name"], r["sampler"], r["seconds"] = name, sampler, time.time() - t0
        results.append(r)
    # The AR baseline is timed again after every other run and the faster of its two timings kept, so
    # a load change on a shared machine during the first AR run does not inflate every speedup.
    for sampler, (method, draft) in ar_runs.items():
        again = decode(method, draft, sampler)["tokens_per_s"]
        print(f"AR {sampler}: {base[sampler]['tokens_per_s']:.1f} tok/s first, {again:.1f} last", flush=True)
        base[sampler]["tokens_per_s"] = max(base[sampler]["tokens_per_s"], again)
    for r in results:
        r["speedup"] = r["tokens_per_s"] / base[r.pop("sampler")]["tokens_per_s"]
        print_run(r)
    return results


def print_run(r: dict) -> None:
    """One line of the side-by-side table."""
    theory = f" (th {r['theory_mat']:.2f})" if r["theory_mat"] is not None else " " * 9
    same = {None: "", True: "  (== AR greedy)", False: "  (!= AR)"}[r["same_as_ar"]]
    print(
        f"{r['name']:30s} acc {r['acceptance']:.3f} a/pos {r['position_acceptance']:.3f}  "
        f"MAT {r['mean_accepted_tokens']:.2f}{theory}  target/tok {r['target_calls_per_token']:.3f}  "
        f"draft/tok {r['draft_calls_per_token']:.3f}  {r['tokens_per_s']:7.1f} tok/s  x{r['speedup']:.2f}  "
        f"model x{r['model_speedup']:.2f}  flat(model) x{r['flat_speedup']:.2f}  round {r['round_s'] * 1e3:.2f} ms "
        f"= {r['round_overhead']:.2f} x calls {r['model_call_s'] * 1e3:.2f} ms{same}  [{r['seconds']:.0f}s]",
        flush=True,
    )
