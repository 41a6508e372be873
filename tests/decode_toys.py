"""Enumerable toys for the decoding tests: lookup-table "models" and a chi-square test.

A `TableModel` is a rocket-signature module whose logits at a token depend on (position, token):
logits = table[position, token]. It is cheap, so the exactness harness can draw 1e5 generations in
one jitted call, and its exact sequence law is a product of table rows.
"""

from __future__ import annotations

import dataclasses
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from rocket.decode import KVBlock, ModelStep, SamplerConfig, warp


@dataclasses.dataclass(frozen=True)
class TableConfig:
    vocab_size: int
    max_seq_len: int = 16
    cache_layers: int = 1
    n_kv_heads: int = 1
    resolved_head_dim: int = 1
    dtype: str = "float32"
    sample_rng: bool = (
        False  # add per-sequence noise from the "sample" rng stream (a lexinvariant-like model)
    )


class TableModel(nn.Module):
    cfg: TableConfig

    @nn.compact
    def __call__(self, tokens, positions, *, cache=None, block_mask=None, routing="causal"):
        del cache, block_mask, routing
        v = self.cfg.vocab_size
        table = self.param("table", nn.initializers.normal(1.0), (self.cfg.max_seq_len, v, v))
        if self.cfg.sample_rng:  # fails without rngs={"sample": key}; fixed per generation by the caller
            table = table + jax.random.normal(self.make_rng("sample"), table.shape)
        b, t = tokens.shape
        z = jnp.zeros((1, b, t, 1, 1))
        return table[positions, tokens], {"hidden": jnp.zeros((b, t, 1)), "new_kv": KVBlock(z, z, positions)}


def table_step(table: np.ndarray, **kwargs) -> ModelStep:
    """kwargs: extra apply kwargs; `rngs={"sample": key}` switches on the per-sequence noise."""
    cfg = TableConfig(vocab_size=table.shape[-1], max_seq_len=table.shape[0], sample_rng="rngs" in kwargs)
    return ModelStep(TableModel(cfg), {"params": {"table": jnp.asarray(table, jnp.float32)}}, kwargs)


def exact_law(table: np.ndarray, prompt: list[int], n: int, sampler: SamplerConfig) -> np.ndarray:
    """[V] * n array: the warped target's probability of each n-token continuation."""
    v = table.shape[-1]
    probs = np.asarray(warp(jnp.asarray(table, jnp.float32), sampler), np.float64)  # [P, V, V]
    law = np.zeros((v,) * n)
    start = len(prompt) - 1
    for seq in itertools.product(range(v), repeat=n):
        prev, pr = prompt[-1], 1.0
        for i, x in enumerate(seq):
            pr *= probs[start + i, prev, x]
            prev = x
        law[seq] = pr
    return law / law.sum()


def chi_square_pvalue(tokens: np.ndarray, law: np.ndarray) -> tuple[float, float, int]:
    """Pearson chi-square of joint outcomes tokens[N, n] against `law`; cells with expected count < 5
    are merged into one. Returns (p-value, statistic, df)."""
    n_samples = tokens.shape[0]
    flat = np.ravel_multi_index(tokens.T, law.shape)
    counts = np.bincount(flat, minlength=law.size).astype(np.float64)
    expected = law.ravel() * n_samples
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] < 5:  # too little mass to form a merged cell: fold it into the largest cell
        obs[np.argmax(exp[:-1])] += obs[-1]
        exp[np.argmax(exp[:-1])] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    stat = float(np.sum((obs - exp) ** 2 / exp))
    df = len(obs) - 1
    return float(stats.chi2.sf(stat, df)), stat, df


def critical_value(df: int, alpha: float = 1e-4) -> float:
    return float(stats.chi2.isf(alpha, df))


def noncentrality(law: np.ndarray, law_bad: np.ndarray, n_samples: int) -> float:
    """lambda = N sum (pi_bad - pi)^2 / pi over the cells of expected count >= 5 under `law`: the
    chi-square test's expected excess when the data follow `law_bad` (power ~ 1 when lambda is far
    above the critical value)."""
    law, law_bad = np.ravel(law), np.ravel(law_bad)
    big = law * n_samples >= 5
    return float(n_samples * np.sum((law_bad[big] - law[big]) ** 2 / law[big]))
