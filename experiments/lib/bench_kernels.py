"""The kernel benchmark's sections (`experiments.bench_kernels`, `experiments.bench_device`): each
times the Pallas kernels against their XLA references (and cuDNN) at given sizes, prints its table
and returns its rows (dicts of seconds, GB/s, TFLOP/s; None where a measurement failed).

  ceilings(reps)                         HBM bandwidth and bf16 matmul TFLOP/s
  bench_attention(seqs, head_dims, reps) softmax / LSSA / LSSAR, ours vs XLA vs cuDNN, fwd and fwd+bwd
  bench_verify(caches, reps, hbm_gbs)    split-K tree-verify attention vs the XLA path
  bench_pattention(reps, m, d, n)        fused Pattention vs XLA, fwd and fwd+bwd
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from pallas_kernels.flash_attention import attention, attention_reference
from pallas_kernels.pattention import pattention, pattention_reference
from pallas_kernels.verify_attention import verify_attention, verify_reference


def timed(fn: Callable, *args, reps: int) -> float | None:
    """Median seconds of a jitted call (after one warm-up/compile), None if it fails (e.g. OOM)."""
    try:
        jax.block_until_ready(fn(*args))
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    except Exception as err:  # noqa: BLE001 - a benchmark reports failures and goes on
        print(f"    failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
        return None


def fwd_bwd(fn: Callable) -> Callable:
    """jit of the gradient of sum(fn(...)) w.r.t. every argument (the forward included)."""
    return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32)), argnums=tuple(range(3))))


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def ceilings(reps: int) -> dict:
    x = jnp.ones((1 << 28,), jnp.float32)  # 1 GiB
    t_copy = timed(jax.jit(lambda x: x + 1.0), x, reps=reps)
    a = jax.random.normal(jax.random.key(0), (8192, 8192), jnp.bfloat16)
    t_mm = timed(jax.jit(lambda a: a @ a), a, reps=reps)
    out = {
        "hbm_gbs": None if t_copy is None else 2 * x.nbytes / t_copy / 1e9,
        "matmul_tflops": None if t_mm is None else 2 * 8192**3 / t_mm / 1e12,
    }
    print(
        f"ceilings: HBM {fmt(out['hbm_gbs'], '.0f')} GB/s, bf16 matmul {fmt(out['matmul_tflops'], '.0f')} TFLOP/s"
    )
    return out


def bench_attention(seqs: list[int], head_dims: list[int], reps: int) -> list[dict]:
    rows = []
    print("\nattention (causal, bf16; ms and TFLOP/s; ratios are time(other) / time(ours))")
    for d in head_dims:
        for t in seqs:
            h = 2048 // d
            kq, kk, kv = jax.random.split(jax.random.key(t + d), 3)
            q, k, v = (jax.random.normal(key, (1, t, h, d), jnp.bfloat16) for key in (kq, kk, kv))
            flops = 2 * h * t * t * d  # causal half of 4*B*H*T^2*D
            cudnn = functools.partial(jax.nn.dot_product_attention, is_causal=True, implementation="cudnn")

            def causally_masked(q, k, v):  # the mask is built under jit (iota compare), not a constant
                mask = jnp.tril(jnp.ones((q.shape[0], q.shape[1], k.shape[1]), bool))
                return attention(q, k, v, mask=mask)

            variants = {
                "softmax": (
                    functools.partial(attention, causal=True),
                    functools.partial(attention_reference, causal=True),
                ),
                "softmax_masked": (causally_masked, None),  # no xla column
                "lssa": (
                    functools.partial(attention, kind="softplus", causal=True),
                    functools.partial(attention_reference, kind="softplus", causal=True),
                ),
                "lssar15": (
                    functools.partial(attention, kind="softplus", power=15.0, causal=True),
                    functools.partial(attention_reference, kind="softplus", power=15.0, causal=True),
                ),
            }
            times = {
                "cudnn": (
                    timed(jax.jit(cudnn), q, k, v, reps=reps),
                    timed(fwd_bwd(cudnn), q, k, v, reps=reps),
                )
            }
            for name, (ours, ref) in variants.items():
                times[name] = (
                    timed(jax.jit(ours), q, k, v, reps=reps),
                    timed(fwd_bwd(ours), q, k, v, reps=reps),
                )
                if ref is not None:
                    times[name + "_xla"] = (
                        timed(jax.jit(ref), q, k, v, reps=reps),
                        timed(fwd_bwd(ref), q, k, v, reps=reps),
                    )
            for i, phase in enumerate(("fwd", "fwd+bwd")):
                scale = 1.0 if i == 0 else 3.5
                ms = {n: (None if ts[i] is None else ts[i] * 1e3) for n, ts in times.items()}
                tf = {n: (None if ts[i] is None else scale * flops / ts[i] / 1e12) for n, ts in times.items()}
                print(
                    f"  D={d:3d} T={t:5d} {phase:7s} softmax {fmt(ms['softmax'])}ms {fmt(tf['softmax'], '.0f')}TF"
                    f" | cudnn {fmt(ms['cudnn'])}ms (ours/cudnn {ratio(ms['softmax'], ms['cudnn'])})"
                    f" | masked/causal {ratio(ms['softmax_masked'], ms['softmax'])}"
                    f" | lssa {fmt(ms['lssa'])}ms xla/ours {ratio(ms['lssa_xla'], ms['lssa'])}"
                    f" | lssar15 {fmt(ms['lssar15'])}ms xla/ours {ratio(ms['lssar15_xla'], ms['lssar15'])}"
                    f" ours/softmax {ratio(ms['lssar15'], ms['softmax'])}"
                )
                rows.append({"section": "attention", "d": d, "t": t, "phase": phase, "ms": ms, "tflops": tf})
    return rows


def bench_verify(caches: list[int], reps: int, hbm_gbs: float | None) -> list[dict]:
    rows = []
    b, h, kv_heads, d = 8, 32, 8, 128
    parents = [-1] + [i // 2 for i in range(15)]  # a 16-node binary token tree
    anc = jnp.eye(16, dtype=bool)
    for i in range(1, 16):
        p = parents[i]
        while p >= 0:
            anc, p = anc.at[i, p].set(True), parents[p]
    print("\nverify (16-token tree, B=8, 32/8 heads, D=128, bf16; GB/s of the K/V cache read)")
    for s in caches:
        ks = jax.random.split(jax.random.key(s), 5)
        q = jax.random.normal(ks[0], (b, 16, h, d), jnp.bfloat16)
        k_cache, v_cache = (jax.random.normal(key, (b, s, kv_heads, d), jnp.bfloat16) for key in ks[1:3])
        k_blk, v_blk = (jax.random.normal(key, (b, 16, kv_heads, d), jnp.bfloat16) for key in ks[3:5])
        args = (
            q,
            k_cache,
            v_cache,
            jnp.full((b,), s, jnp.int32),
            k_blk,
            v_blk,
            jnp.broadcast_to(anc, (b, 16, 16)),
        )
        t_ours = timed(jax.jit(verify_attention), *args, reps=reps)
        t_xla = timed(jax.jit(verify_reference), *args, reps=reps)
        gbs = None if t_ours is None else 2 * k_cache.nbytes / t_ours / 1e9
        frac = None if gbs is None or hbm_gbs is None else gbs / hbm_gbs
        print(
            f"  S={s:6d} ours {fmt(None if t_ours is None else t_ours * 1e3)}ms {fmt(gbs, '.0f')}GB/s"
            f" ({fmt(None if frac is None else 100 * frac, '.0f')}% of HBM)"
            f" | xla {fmt(None if t_xla is None else t_xla * 1e3)}ms xla/ours {ratio(t_xla, t_ours)}"
        )
        rows.append(
            {"section": "verify", "s": s, "ours_s": t_ours, "xla_s": t_xla, "gbs": gbs, "hbm_frac": frac}
        )
    return rows


def bench_pattention(reps: int, m: int = 16384, d: int = 1024, n: int = 4096) -> list[dict]:
    ks = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(ks[0], (m, d), jnp.bfloat16)
    k_p = (0.02 * jax.random.normal(ks[1], (n, d))).astype(jnp.bfloat16)
    v_p = (0.02 * jax.random.normal(ks[2], (n, d))).astype(jnp.bfloat16)
    flops = 2 * 2 * m * n * d
    rows = []
    print(f"\npattention (M={m}, d={d}, n={n}, bf16; model FLOPs 4*M*n*d fwd, 3x fwd+bwd)")
    for norm in ("l2_norm_gelu", "softmax"):
        ours = functools.partial(pattention, tau=n**0.5, norm=norm)
        ref = functools.partial(pattention_reference, tau=n**0.5, norm=norm)
        for phase, wrap, scale in (("fwd", jax.jit, 1.0), ("fwd+bwd", fwd_bwd, 3.0)):
            t_ours, t_xla = (
                timed(wrap(ours), x, k_p, v_p, reps=reps),
                timed(wrap(ref), x, k_p, v_p, reps=reps),
            )
            tf = None if t_ours is None else scale * flops / t_ours / 1e12
            print(
                f"  {norm:13s} {phase:7s} ours {fmt(None if t_ours is None else t_ours * 1e3)}ms {fmt(tf, '.0f')}TF"
                f" | xla {fmt(None if t_xla is None else t_xla * 1e3)}ms xla/ours {ratio(t_xla, t_ours)}"
            )
            rows.append(
                {"section": "pattention", "norm": norm, "phase": phase, "ours_s": t_ours, "xla_s": t_xla}
            )
    return rows
