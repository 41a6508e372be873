"""Lexinvariant embeddings: per-sequence random Gaussian token vectors, scored by the same matrix.

Huang, Zelikman, Chen, Wu, Valiant and Liang, "Lexinvariant Language Models", arXiv 2305.16349.
Every sequence s gets its own E_s[V, D] with i.i.d. N(0, 1/D) entries; the model reads
h_0 = E_s[x_t] and scores logits_t = h_L,t E_s^T (tied, per sequence: no learned lexicon anywhere),
so it can only use co-occurrence and repetition inside its context. The final RMSNorm's learned
scale acts as the logit temperature.

Construction (one [V, D] draw per row, exact per document):
  E_row[b]  = N(0, 1/D) from fold_in(key, b)                              [B, V, D]
  E_s[v]    = E_row[b][(a_s v + c_s) mod V]  for document s of row b
with (a_s, c_s) a random affine bijection of the ids (a_s a unit mod V, c_s uniform) drawn from
fold_in(key, b, segment_id). A bijection of i.i.d. Gaussian rows is i.i.d. Gaussian, so each document
sees an exactly lexinvariant E_s; documents packed in the same row re-use the row's pool of V
vectors under different labellings (they never attend to each other), which keeps the readout one
[B, T, D] x [B, V, D] matmul plus a gather instead of one [V, D] matrix per document. Rows and
steps are independent. Memory: B * V * D floats for the row tables and B * T * V for the logits
(V = 258, D = 128: 33k floats per row); ids must be < 65536 (uint32 affine arithmetic).

Randomness: the flax rng stream "sample" (the train step feeds a fresh key per step). Decoding must
pass the *same* key at every step of a sequence (and keep row order and segment ids), which keeps
E_s fixed; without that rng a fixed key is used, so evaluation and default decoding are
deterministic (and draw the same E for the same row index and segment id every call).

Regularised variant (semi-lexinvariant): with probability `learned_prob` a document uses a learned
table (input and tied readout) instead of its random E_s, decided per document from the same key.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rocket.layers.init import embed_init

RNG_STREAM = "sample"  # = rocket.train.step.MODEL_RNG_STREAM (layers do not import the trainer)
MAX_VOCAB = 1 << 16


def units_mod(v: int) -> np.ndarray:
    """The multipliers a in [1, V) coprime to V: x -> (a x + c) mod V is then a bijection."""
    return np.array([a for a in range(1, max(v, 2)) if math.gcd(a, v) == 1] or [1], np.uint32)


def relabel_ids(ids: jax.Array, a: jax.Array, c: jax.Array, vocab_size: int) -> jax.Array:
    """(a * ids + c) mod V in uint32 (exact for V <= 65536), as int32; a and c broadcast against ids."""
    out = (a.astype(jnp.uint32) * ids.astype(jnp.uint32) + c.astype(jnp.uint32)) % jnp.uint32(vocab_size)
    return out.astype(jnp.int32)


class LexinvariantEmbed(nn.Module):
    """tokens[B, T] (+ segment_ids) -> x[B, T, D]; `attend(h[B, T, D], segment_ids) -> logits[B, T, V]` f32.

    Same call protocol as `Embed`; see the module docstring for the construction.
    """

    vocab_size: int
    d_model: int
    learned_prob: float = 0.0
    init_std: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        if self.vocab_size > MAX_VOCAB:
            raise ValueError(
                f"lexinvariant embeddings support vocab_size <= {MAX_VOCAB}, got {self.vocab_size}"
            )
        # One key per model call, shared by the input embedding and the readout.
        self.key = self.make_rng(RNG_STREAM) if self.has_rng(RNG_STREAM) else jax.random.key(0)
        if self.learned_prob > 0:
            self.table_vd = self.param(
                "embedding",
                embed_init(("vocab", "embed"), self.init_std),
                (self.vocab_size, self.d_model),
                self.param_dtype,
            )

    def draw(self, batch: int) -> jax.Array:
        """The rows' random tables E_row: float32 [B, V, D], entries N(0, 1 / D)."""
        keys = jax.vmap(lambda b: jax.random.fold_in(jax.random.fold_in(self.key, 0), b))(jnp.arange(batch))
        shape = (self.vocab_size, self.d_model)
        return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys) / math.sqrt(self.d_model)

    def labels(self, segment_ids_bt: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per token, its document's relabelling (a, c) uint32 [B, T] and learned-table flag bool [B, T]."""
        units = jnp.asarray(units_mod(self.vocab_size))
        base = jax.random.fold_in(self.key, 1)

        def one(b, seg):
            k_a, k_c, k_l = jax.random.split(jax.random.fold_in(jax.random.fold_in(base, b), seg), 3)
            a = units[jax.random.randint(k_a, (), 0, units.shape[0])]
            c = jax.random.randint(k_c, (), 0, self.vocab_size).astype(jnp.uint32)
            return a, c, jax.random.bernoulli(k_l, self.learned_prob)

        rows_bt = jnp.broadcast_to(jnp.arange(segment_ids_bt.shape[0])[:, None], segment_ids_bt.shape)
        return jax.vmap(jax.vmap(one))(rows_bt, segment_ids_bt)

    def _segments(self, shape: tuple[int, int], segment_ids_bt: jax.Array | None) -> jax.Array:
        return jnp.zeros(shape, jnp.int32) if segment_ids_bt is None else segment_ids_bt.astype(jnp.int32)

    def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
        b, t = tokens_bt.shape
        a_bt, c_bt, learned_bt = self.labels(self._segments((b, t), segment_ids_bt))
        rows_bt = relabel_ids(tokens_bt, a_bt, c_bt, self.vocab_size)
        x_btd = jnp.take_along_axis(self.draw(b), rows_bt[:, :, None], axis=1)
        if self.learned_prob > 0:
            learned_btd = jnp.take(self.table_vd, tokens_bt, axis=0).astype(jnp.float32)
            x_btd = jnp.where(learned_bt[:, :, None], learned_btd, x_btd)
        return x_btd.astype(self.dtype)

    def attend(self, h_btd: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
        b, t, _ = h_btd.shape
        a_bt, c_bt, learned_bt = self.labels(self._segments((b, t), segment_ids_bt))
        h = h_btd.astype(self.dtype)
        row_logits_btv = jnp.einsum(
            "btd,bvd->btv", h, self.draw(b).astype(self.dtype), preferred_element_type=jnp.float32
        )
        cols_btv = relabel_ids(
            jnp.arange(self.vocab_size)[None, None, :], a_bt[..., None], c_bt[..., None], self.vocab_size
        )
        logits_btv = jnp.take_along_axis(row_logits_btv, cols_btv, axis=-1)
        if self.learned_prob > 0:
            learned_btv = jnp.einsum(
                "btd,vd->btv", h, self.table_vd.astype(self.dtype), preferred_element_type=jnp.float32
            )
            logits_btv = jnp.where(learned_bt[:, :, None], learned_btv, logits_btv)
        return logits_btv
