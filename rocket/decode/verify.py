"""The acceptance rules of lossless speculative decoding, as one library.

Notation: p = warped target distribution at a node, q = the distribution the draft candidates were
drawn from (warped draft), candidates c_1..c_m = the node's children in proposal order.

Node kernels (`verify_node(rule, ...)`, one [V] row, vmap for batches):

  "iid"                  c_j ~ q i.i.d. (SpecInfer multi-round; m = 1 is the chain rule of Leviathan
                         et al. 2211.17192 / Chen et al. 2302.01318): r_1 = p; accept c_j w.p.
                         min(1, r_j(c_j) / q(c_j)); on reject r_{j+1} = norm(max(r_j - q, 0)).
  "without_replacement"  c_j ~ s_j, s_1 = q, s_{j+1} = s_j with c_j zeroed, renormalized (RSD
                         2402.14160, DySpec 2410.11744): accept w.p. min(1, r_j(c_j) / s_j(c_j)); on
                         reject r_{j+1} = norm(max(r_j - s_j, 0)).
  "deterministic"        point proposals s_j = delta_{c_j} (Token Recycling, top-k drafts): accept
                         w.p. r_j(c_j); on reject zero c_j in r_j and renormalize.
  "kseq"                 SpecTr's K-SEQ (2310.15141) for k i.i.d. candidates: accept c_i w.p.
                         min(1, p(c_i) / (rho* q(c_i))), first accepted wins; otherwise sample
                         p_res ∝ p - min(q, p / rho*) (1 - (1 - beta)^k) / beta.

If no candidate is accepted the node emits a sample of the final residual (with no candidates:
of p itself, the bonus token). Proof of exactness for the first three, by induction on stages:
P(emit x at stage j) = min(s_j, r_j)(x) and the law after a rejection is r_{j+1}; the number of
candidates m must be a stopping time of the candidate sequence. Acceptance is tested as
`u * s(c) <= r(c)` (no division). A residual with mass < 1e-12 (p == q up to rounding) falls back
to r.

`walk_tree` runs a kernel from the root down a token tree (evaluated at every node at once, then
the walk read off with the ancestor mask); `greedy_tree` is the greedy special case (accept a child
iff it is the target's argmax); both pick the deepest node whose whole path is accepted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

RULES = ("iid", "without_replacement", "deterministic", "kseq")
_EPS = 1e-12


def _normalize(x_v: jax.Array, fallback_v: jax.Array) -> jax.Array:
    total = jnp.sum(x_v)
    return jnp.where(total > _EPS, x_v / jnp.maximum(total, _EPS), fallback_v)


def residual(r_v: jax.Array, s_v: jax.Array) -> jax.Array:
    """norm(max(r - s, 0)); falls back to r when the residual has (numerically) no mass."""
    return _normalize(jnp.maximum(r_v - s_v, 0.0), r_v)


def _categorical(g_v: jax.Array, probs_v: jax.Array) -> jax.Array:
    """A draw from probs given Gumbel noise g (Gumbel-max; zero-probability tokens never win)."""
    return jnp.argmax(jnp.log(probs_v) + g_v).astype(jnp.int32)


def draw_noise(key: jax.Array, batch: tuple[int, ...], m: int, v: int) -> tuple[jax.Array, jax.Array]:
    """Fresh randomness for node kernels: uniforms [*batch, m] and Gumbel noise [*batch, V].

    Drawn once per round outside the kernels (so the kernels are pure arithmetic: small programs,
    fast compiles); never reuse them across rounds.
    """
    ku, kg = jax.random.split(key)
    return jax.random.uniform(ku, batch + (m,)), jax.random.gumbel(kg, batch + (v,))


def verify_node(
    rule: str,
    u_m: jax.Array,
    g_v: jax.Array,
    p_v: jax.Array,
    q_v: jax.Array,
    cand_m: jax.Array,
    valid_m: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One node: -> (index j of the accepted candidate or -1, emitted token).

    u[m] uniforms and g[V] Gumbel noise (`draw_noise`); p[V], q[V] float32 distributions; cand[m]
    int32 tokens; valid[m] bool (invalid slots are skipped; the valid ones must be a stopping-time
    prefix of the candidate sequence).
    """
    if rule == "kseq":
        return _verify_kseq(u_m, g_v, p_v, q_v, cand_m, valid_m)
    if rule not in RULES:
        raise ValueError(f"unknown verification rule {rule!r}; known: {RULES}")
    m, v = cand_m.shape[0], p_v.shape[0]

    def stage(j, carry):  # stage j of the candidate sequence
        r_v, s_v, accepted, done = carry
        c = cand_m[j]
        s_stage = jax.nn.one_hot(c, v, dtype=p_v.dtype) if rule == "deterministic" else s_v
        test = valid_m[j] & ~done
        ok = test & (u_m[j] * s_stage[c] <= r_v[c]) & (s_stage[c] > 0)
        rejected = test & ~ok
        r_v = jnp.where(rejected, residual(r_v, s_stage), r_v)
        if rule == "without_replacement":
            s_v = jnp.where(rejected, _normalize(s_v.at[c].set(0.0), jnp.zeros_like(s_v)), s_v)
        return r_v, s_v, jnp.where(ok, j, accepted), done | ok

    carry = (p_v, q_v, jnp.int32(-1), jnp.bool_(False))
    for j in range(m):  # unrolled (m is small and static): straight-line code XLA fuses across stages
        carry = stage(j, carry)
    r_v, _, accepted, _ = carry
    y = _categorical(g_v, r_v)
    token = jnp.where(accepted >= 0, cand_m[jnp.maximum(accepted, 0)], y)
    return accepted, token


def kseq_rho(p_v: jax.Array, q_v: jax.Array, k: jax.Array, iters: int = 30) -> jax.Array:
    """SpecTr's rho* in [1, k]: the root of f(rho) = 1 - (1 - beta)^k - rho beta, beta = sum min(q, p/rho).

    f is decreasing with f(1) >= 0 >= f(k); bisection returns the upper bracket (the safe side,
    where (1 - (1 - beta)^k) / beta <= rho, so the residual stays non-negative).
    """
    k = jnp.asarray(k, jnp.float32)
    beta = lambda rho: jnp.sum(jnp.minimum(q_v, p_v / rho))
    f = lambda rho: 1.0 - (1.0 - beta(rho)) ** k - rho * beta(rho)

    def bisect(_, lo_hi):
        lo, hi = lo_hi
        mid = 0.5 * (lo + hi)
        pos = f(mid) >= 0
        return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)

    _, hi = jax.lax.fori_loop(0, iters, bisect, (jnp.float32(1.0), jnp.maximum(k, 1.0)))
    return hi


def _verify_kseq(
    u_m: jax.Array, g_v: jax.Array, p_v: jax.Array, q_v: jax.Array, cand_m: jax.Array, valid_m: jax.Array
) -> tuple[jax.Array, jax.Array]:
    k = jnp.sum(valid_m)
    rho = kseq_rho(p_v, q_v, k)
    ok_m = valid_m & (u_m * rho * q_v[cand_m] <= p_v[cand_m]) & (q_v[cand_m] > 0)
    first = jnp.argmax(ok_m)
    accepted = jnp.where(jnp.any(ok_m), first, -1).astype(jnp.int32)
    min_v = jnp.minimum(q_v, p_v / rho)
    beta = jnp.sum(min_v)
    kf = k.astype(jnp.float32)
    coef = jnp.where(beta > _EPS, (1.0 - (1.0 - beta) ** kf) / jnp.maximum(beta, _EPS), kf)
    p_res = _normalize(jnp.maximum(p_v - min_v * coef, 0.0), p_v)
    y = _categorical(g_v, p_res)
    return accepted, jnp.where(accepted >= 0, cand_m[jnp.maximum(accepted, 0)], y)


def walk_tree(
    rule: str,
    u_dm: jax.Array,
    g_dv: jax.Array,
    p_nv: jax.Array,
    q_nv: jax.Array,
    tokens_n: jax.Array,
    children_nc: jax.Array,
    anc_nn: jax.Array,
    depth_n: np.ndarray,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Samples a path down a token tree (one row; node 0 = root) -> (path[D+1], n_accepted, emitted[D+1]).

    u[D+1, C] / g[D+1, V]: noise per depth (`draw_noise`); p[N, V] / q[N, V]: target / draft
    distributions at each node (for its children); children[N, C] node indices in proposal order,
    -1 = none; anc[N, N] the ancestor-or-self mask (`trees.ancestors`); depth[N] static node depths.
    path[0] = root; path[1..n] the accepted nodes; emitted[0..n] = their tokens then the final
    residual/bonus token (n + 1 tokens).

    Vectorized: the walk visits at most one node per depth d and runs the kernel there with the
    noise of depth d, so the kernel is run at every node n at once with the noise of depth(n)
    (one batched program instead of a loop over depth). A node is on the walk iff every node on
    its root path is the child its parent accepted, so the walk is the deepest such node's path
    (`deepest_path`, shared with `greedy_tree`). The visited nodes see exactly the inputs of the
    sequential walk, so the sampled path and tokens are those of the sequential walk.
    """
    n = children_nc.shape[0]
    kernel = lambda *a: verify_node(rule, *a)
    j_n, tok_n = jax.vmap(kernel)(
        u_dm[depth_n], g_dv[depth_n], p_nv, q_nv, tokens_n[jnp.maximum(children_nc, 0)], children_nc >= 0
    )
    # chosen[n] = the child node n accepted (-1: none); node m is accepted iff some node chose it.
    chosen_n = jnp.where(
        j_n >= 0, jnp.take_along_axis(children_nc, jnp.maximum(j_n, 0)[:, None], 1)[:, 0], -1
    )
    ok_n = jnp.any(chosen_n[:, None] == jnp.arange(n)[None, :], axis=0)
    return deepest_path(ok_n, tok_n, tokens_n, anc_nn, depth_n)


def deepest_path(
    ok_n: jax.Array, final_n: jax.Array, tokens_n: jax.Array, anc_nn: jax.Array, depth_n: np.ndarray
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The deepest node all of whose ancestors-or-self (root excepted) are accepted -> (path[D+1],
    n_accepted, emitted[D+1]) as `walk_tree`.

    ok[n]: node n was accepted at its parent; final[n]: the token emitted after stopping at n (its
    correction / bonus token). Ties (greedy trees only): the lowest index = highest-ranked branch.
    """
    max_depth = int(depth_n.max())  # depth_n is a static numpy array
    anc_nn, ok_n = jnp.asarray(anc_nn), jnp.asarray(ok_n).at[0].set(True)
    acc_n = ~jnp.any(anc_nn & ~ok_n[None, :], axis=1)
    depth_j = jnp.asarray(depth_n)
    best = jnp.argmax(jnp.where(acc_n, depth_j, -1))
    n_acc = depth_j[best]
    on_path_n = anc_nn[best]
    at_depth_dn = on_path_n[None, :] & (depth_j[None, :] == jnp.arange(max_depth + 1)[:, None])
    path = jnp.argmax(at_depth_dn, axis=1).astype(jnp.int32)  # [D+1]; 0 past the best node's depth
    d = jnp.arange(max_depth + 1)
    emitted = jnp.where(d < n_acc, tokens_n[path[jnp.minimum(d + 1, max_depth)]], 0)
    emitted = jnp.where(d == n_acc, final_n[best], emitted)
    return path, n_acc.astype(jnp.int32), emitted.astype(jnp.int32)


def greedy_tree(
    pred_n: jax.Array,
    tokens_n: jax.Array,
    parent_n: jax.Array,
    valid_n: jax.Array,
    anc_nn: jax.Array,
    depth_n: np.ndarray,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Greedy verification of a tree (one row) -> (path[D+1], n_accepted, emitted[D+1]) as `walk_tree`.

    pred[N] = argmax of the target at each node. A node is accepted iff it and all its ancestors
    match the target's argmax at their parent (ok[n] = tok[n] == pred[parent[n]]); the deepest
    accepted node wins (ties: lowest index = highest-ranked branch); emit its path and pred[best].
    """
    ok_n = valid_n & (tokens_n == pred_n[jnp.maximum(parent_n, 0)])
    return deepest_path(ok_n, pred_n, tokens_n, anc_nn, depth_n)
