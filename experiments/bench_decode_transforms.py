"""Decoding transforms on the shared engine, measured side by side on the built-in corpus (CPU-sized).

  python -m experiments.bench_decode_transforms [--quick] [--only contrastive,bytes,streaming,awrs] [--smoke]

  contrastive  greedy vs nucleus (p=0.95) vs contrastive search (k=4, alpha=0.6) vs momentum
               decoding (k=8, alpha=0.2): rep-2/3/4 and
               diversity = prod_n (1 - rep-n) of 80-byte continuations of 48-byte prompts, the
               model's NLL of the continuation (coherence proxy), tokens/s.
  bytes        prompts cut mid-token (SentencePiece BPE model): bits of the true next byte and
               exact match of the next 8 bytes (greedy), naive prefix tokenization vs exact byte-level
               probabilities; control: cuts at token boundaries; byte-level ensemble of the BPE
               model with a byte-level model.
  streaming    loss per position over streams of 8x the training length (ctx 128): dense cache,
               plain window, 4 sinks + window (StreamingLLM), LM-Infinite.
  awrs         regex-constrained samples per second: AWRS (weighted, every sample valid; also its
               effective sample size per second) vs naive rejection sampling of whole continuations
               (exact samples of the same global constrained law).
Models (4 layers, d = 128, ctx 128) are trained once with the real train step and cached in runs/.
"""

from __future__ import annotations

import argparse
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.lib.decode_models import CTX, trained_model
from rocket.data import prepare_corpus
from rocket.decode import ModelStep, SamplerConfig, generate
from rocket.decode.methods.awrs import AWRSDecode, ess
from rocket.decode.methods.contrastive import ContrastiveSearch
from rocket.decode.methods.momentum import MomentumDecoding
from rocket.decode.methods.streaming import StreamPolicy, stream_logits
from rocket.decode.tools.byte_probs import ByteLM, ensemble_next_byte_probs, rocket_next_token_logprobs
from rocket.decode.tools.regex_dfa import compile_regex, token_dfa
from rocket.utils import enable_compilation_cache


def _val_texts(n: int, length: int, seed: int = 0) -> list[bytes]:
    val = prepare_corpus("stdlib")["validation"]
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    while len(out) < n:
        doc = val[int(rng.integers(len(val)))]
        if len(doc) > length + 1:
            s = int(rng.integers(len(doc) - length))
            chunk = doc[s : s + length]
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append(chunk)
    return out


def _rep(tokens: np.ndarray, n: int) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / max(len(grams), 1)


def bench_contrastive(quick: bool, steps: int) -> None:
    model, variables, tok, _ = trained_model("byte", steps)
    target = ModelStep(model, variables)
    n_prompts, n_new = (8, 64) if quick else (16, CTX - 48)  # prompt 48 + new <= ctx
    prompts = np.stack([tok.encode(t) for t in _val_texts(n_prompts, 48, seed=1)])
    p = jnp.asarray(prompts)
    plen = jnp.full((n_prompts,), p.shape[1])
    runs = {
        "greedy": dict(method="ar"),
        "nucleus p=0.95": dict(method="ar", sampler=SamplerConfig(top_p=0.95)),
        "contrastive k=4 a=0.6": dict(method=ContrastiveSearch(4, 0.6)),
        "momentum k=8 a=0.2": dict(method=MomentumDecoding(8, 0.2)),
    }
    print(f"\n== contrastive search: {n_prompts} prompts x {n_new} new bytes (byte model, {steps} steps)")
    print(
        f"{'method':24s} {'rep-2':>6s} {'rep-3':>6s} {'rep-4':>6s} {'diversity':>9s} {'NLL':>6s} "
        f"{'tok/s':>8s} {'vs greedy':>9s}"
    )
    positions = jnp.broadcast_to(jnp.arange(p.shape[1] + n_new), (n_prompts, p.shape[1] + n_new))
    full_logits = jax.jit(lambda t: model.apply(variables, t, positions)[0])
    base = None
    for name, kw in runs.items():
        call = lambda kw=kw: generate(target, p, plen, jax.random.key(0), max_new_tokens=n_new, **kw)
        jax.block_until_ready(call())
        t0 = time.perf_counter()
        out = jax.block_until_ready(call())
        tps = n_prompts * n_new / (time.perf_counter() - t0)
        base = base or tps
        toks = np.asarray(out.tokens)
        reps = [np.mean([_rep(r, n) for r in toks]) for n in (2, 3, 4)]
        div = float(np.prod([1 - r for r in reps]))
        # Coherence proxy: the model's own NLL (nats/byte) of the continuation, teacher forced.
        logp = jax.nn.log_softmax(
            full_logits(jnp.concatenate([p, out.tokens], 1))[:, p.shape[1] - 1 : -1], -1
        )
        nll = -float(jnp.mean(jnp.take_along_axis(logp, out.tokens[..., None], -1)))
        print(
            f"{name:24s} {reps[0]:6.3f} {reps[1]:6.3f} {reps[2]:6.3f} {div:9.3f} {nll:6.3f} "
            f"{tps:8.0f} {tps / base:9.2f}"
        )
        print(f"{'':24s} sample: {tok.decode(toks[0][:60])!r}")


def bench_bytes(quick: bool, steps: int) -> None:
    bpe, bpe_vars, spm, _ = trained_model("sentencepiece", steps)
    byte, byte_vars, btok, _ = trained_model("byte", steps)
    lm = ByteLM(spm, rocket_next_token_logprobs(bpe, bpe_vars, spm.bos_id, bucket=64))
    lm_byte = ByteLM(btok, rocket_next_token_logprobs(byte, byte_vars, btok.bos_id, bucket=64))
    n, m = (12, 6) if quick else (40, 8)
    rng = np.random.default_rng(0)
    rows = {"mid": [], "boundary": []}
    for text in _val_texts(3 * n, 160, seed=2):
        enc = list(spm.encode(text[:120]))
        ends = np.cumsum([len(spm.decode_bytes([t])) for t in enc])
        long = [j for j in range(len(enc) - 1) if ends[j] - (ends[j - 1] if j else 0) >= 2 and ends[j] > 40]
        if not long:
            continue
        j = int(rng.choice(long))
        start = int(ends[j - 1]) if j else 0
        for kind, cut in (("mid", start + 1), ("boundary", start)):
            if len(rows[kind]) < n:
                rows[kind].append((text[:cut], text[cut : cut + m]))
    print(f"\n== byte-level probabilities: {n} prompts per kind, BPE vocab {spm.vocab_size} ({steps} steps)")
    print(
        f"{'cut':9s} {'naive bits':>10s} {'exact bits':>10s} {'naive EM@' + str(m):>10s} {'exact EM':>9s} "
        f"{'byte-model bits':>15s} {'ensemble bits':>13s}"
    )
    for kind, items in rows.items():
        naive_bits, exact_bits, byte_bits, ens_bits, naive_em, exact_em = [], [], [], [], [], []
        for prefix, truth in items:
            enc = tuple(int(t) for t in spm.encode(prefix))
            row = np.exp(lm.next_logprobs([enc])[0])
            naive = np.zeros(256)  # tokenize the prefix, first byte of the next token
            np.add.at(naive, lm.table.bytes_vl[:, 0], row * (lm.table.length_v > 0))
            naive /= naive.sum()
            naive_bits.append(-np.log2(max(naive[truth[0]], 1e-12)))
            exact_bits.append(-np.log2(max(lm.next_byte_probs(prefix)[truth[0]], 1e-12)))
            byte_bits.append(-np.log2(max(lm_byte.next_byte_probs(prefix)[truth[0]], 1e-12)))
            ens = ensemble_next_byte_probs([lm, lm_byte], prefix)
            ens_bits.append(-np.log2(max(ens[truth[0]], 1e-12)))
            naive_em.append(_naive_greedy(bpe, bpe_vars, spm, prefix, m) == truth)
            exact_em.append(_byte_greedy(lm, prefix, m) == truth)
        print(
            f"{kind:9s} {np.mean(naive_bits):10.3f} {np.mean(exact_bits):10.3f} {np.mean(naive_em):10.2f} "
            f"{np.mean(exact_em):9.2f} {np.mean(byte_bits):15.3f} {np.mean(ens_bits):13.3f}"
        )


def _byte_greedy(lm: ByteLM, prefix: bytes, m: int) -> bytes:
    x = prefix
    for _ in range(m):
        x += bytes([int(np.argmax(lm.next_byte_probs(x)))])
    return x[len(prefix) :]


def _naive_greedy(model, variables, tok, prefix: bytes, m: int, width: int = 100) -> bytes:
    """Greedy token decoding from the tokenized prefix (prompt right-padded to one width: one compile)."""
    ids = np.concatenate([[tok.bos_id], tok.encode(prefix)]).astype(np.int32)
    padded = np.zeros((1, width), np.int32)
    padded[0, : len(ids)] = ids
    out = generate(
        ModelStep(model, variables),
        jnp.asarray(padded),
        jnp.array([len(ids)]),
        jax.random.key(0),
        max_new_tokens=m,
    )
    return tok.decode_bytes(np.asarray(out.tokens[0]))[:m]


def bench_streaming(quick: bool, steps: int) -> None:
    model, variables, tok, _ = trained_model("byte", steps)
    target = ModelStep(model, variables)
    n_streams, length = (2, 4 * CTX) if quick else (4, 8 * CTX)
    streams = jnp.asarray(np.stack([tok.encode(t) for t in _val_texts(n_streams, length + 1, seed=3)]))
    inputs, labels = streams[:, :-1], np.asarray(streams[:, 1:])
    policies = {
        "dense cache": StreamPolicy(0, length),
        "window 128": StreamPolicy(0, CTX),
        "4 sinks + 124": StreamPolicy(4, CTX - 4),
        "LM-Infinite 4+124": StreamPolicy(4, CTX - 4, "lm_infinite", max_distance=CTX),
    }
    edges = [0, CTX] + [CTX * 2**i for i in range(1, 4) if CTX * 2**i <= length]
    print(f"\n== streaming: loss (nats/byte) per position bucket, {n_streams} streams x {length} bytes")
    print(
        f"{'cache':20s} " + " ".join(f"{f'[{a},{b})':>11s}" for a, b in zip(edges, edges[1:])) + f" {'s':>6s}"
    )
    fn = jax.jit(stream_logits, static_argnums=(2, 3))
    for name, pol in policies.items():
        t0 = time.perf_counter()
        logp = jax.nn.log_softmax(fn(target, inputs, pol, 1), -1)
        nll = -np.take_along_axis(np.asarray(logp), labels[..., None], -1)[..., 0]
        cells = " ".join(f"{nll[:, a:b].mean():11.3f}" for a, b in zip(edges, edges[1:]))
        print(f"{name:20s} {cells} {time.perf_counter() - t0:6.1f}")


def bench_awrs(quick: bool, steps: int) -> None:
    model, variables, tok, _ = trained_model("byte", steps)
    target = ModelStep(model, variables)
    pattern = r"[a-z_][a-z_0-9]*"  # an identifier after "return "
    n_new, m = 8, (32 if quick else 128)
    tdfa = token_dfa(compile_regex(pattern), [tok.decode_bytes([i]) for i in range(tok.vocab_size)])
    prompt = jnp.tile(jnp.asarray(tok.encode(b"        return "))[None], (m, 1))
    plen = jnp.full((m,), prompt.shape[1])
    sampler = SamplerConfig(temperature=1.0)
    runs = {"AWRS": dict(method=AWRSDecode(tdfa)), "naive rejection": dict(method="ar")}
    print(f"\n== AWRS: {m} rows x {n_new} tokens after {tok.decode(prompt[0])!r}, constraint {pattern!r}")
    for name, kw in runs.items():
        call = lambda k, kw=kw: generate(target, prompt, plen, k, max_new_tokens=n_new, sampler=sampler, **kw)
        jax.block_until_ready(call(jax.random.key(0)))
        t0 = time.perf_counter()
        out = jax.block_until_ready(call(jax.random.key(1)))
        dt = time.perf_counter() - t0
        texts = [tok.decode(r) for r in np.asarray(out.tokens)]
        ok = [re.fullmatch(pattern, t) is not None for t in texts]
        line = f"{name:16s} valid {np.mean(ok):5.2f}  valid samples/s {sum(ok) / dt:8.1f}"
        if name == "AWRS":
            lw = out.carry.log_weight
            line += f"  ESS {float(ess(lw)):.1f}/{m} = {float(ess(lw)) / dt:.1f}/s"
            line += f"  checks/token {float(np.mean(out.carry.n_checks)) / n_new:.1f}"
        print(line + f"  e.g. {texts[0]!r}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer training steps, prompts and tokens")
    ap.add_argument("--only", default="contrastive,bytes,streaming,awrs")
    ap.add_argument("--steps", type=int, default=None, help="training steps of the benchmark models")
    ap.add_argument(
        "--smoke", action="store_true", help="--quick with 2-step models (the test suite's check)"
    )
    args = ap.parse_args(argv)
    enable_compilation_cache()
    if args.smoke:
        args.quick, args.steps = True, 2
    steps = args.steps or (300 if args.quick else 1500)
    benches = {
        "contrastive": bench_contrastive,
        "bytes": bench_bytes,
        "streaming": bench_streaming,
        "awrs": bench_awrs,
    }
    for name in args.only.split(","):
        benches[name](args.quick, steps)


if __name__ == "__main__":
    main()
