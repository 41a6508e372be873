"""Exact byte-level probabilities from a tokenized LM (Phan et al., "Exact Byte-Level Probabilities
from Tokenized Language Models for FIM-Tasks and Model Ensembles", arXiv 2410.09303).

A tokenized LM p(t_1 t_2 ...) induces a distribution over byte strings. Conditioning on a byte prefix
by tokenizing it is biased when the prefix ends mid-token ("tokenization bias"). The Byte-Token
Representation Lemma gives the exact probability that the byte stream starts with x = x_{1:n}:

    P(x) = sum over covers t_{1:k} of x of  P(t_{1:k}),   P(t_{1:k}) = prod_i p(t_i | t_{<i}),

where a *cover* is a token sequence with decode(t_{<k}) a proper prefix of x and x a prefix of
decode(t_{1:k}) (its last token reaches or straddles the end of x). A model trained on canonical
tokenizations puts (almost) no mass on other encodings, so covers are restricted to *valid* ones:
t_{<k} = enc(x_{:i}) (the canonical encoding of the prefix it decodes to) and t_{1:k} canonical
(enc(decode(t_{1:k})) == t_{1:k}), the official code's `isvalid` mask. Hence, with L_max the longest
token in bytes, only the split points i in [n + 1 - L_max, n] can carry a cover of x b, and

    P(x b) = sum_i  P(enc(x_{:i})) * sum_{t valid, x_{i:n} b is a prefix of bytes(t)} p(t | enc(x_{:i}))
    P(b | x) = P(x b) / sum_b' P(x b').

The i = n term is the "all tokens starting with b" sum of the paper (the [256, V] first-byte matrix).
The normalization over b' equals P(x) exactly when the token model only emits such encodings (the
law of total probability over covers); for a real model it removes the mass lost to invalid
encodings, as the official code does. Split points where x_{:i} has no canonical encoding (e.g. cut
inside a UTF-8 character for a SentencePiece tokenizer) are skipped, also as in the official code.

Byte-level sampling draws b ~ P(. | x) one byte at a time; ensembles of models with different
vocabularies average their next-byte distributions. LM calls are batched jitted forwards on canonical
contexts, memoised per token prefix; the cover bookkeeping is host-side numpy (float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rocket.data.tokenizers import Tokenizer
from rocket.decode.protocol import DecodableModel, DecodeSpec

Tokens = tuple[int, ...]
# Given contexts (token tuples, no BOS), log p(next token | context) for each: float64 [N, V].
NextTokenLogprobs = Callable[[Sequence[Tokens]], np.ndarray]


class TokenTable:
    """Per-token byte strings as arrays: bytes_vl u8 [V, L_max] (zero padded), length_v i32 [V]."""

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        self.token_bytes = list(token_bytes)
        self.length_v = np.array([len(b) for b in self.token_bytes], np.int32)
        self.max_len = int(self.length_v.max())
        self.bytes_vl = np.zeros((len(self.token_bytes), self.max_len), np.uint8)
        for i, b in enumerate(self.token_bytes):
            self.bytes_vl[i, : len(b)] = np.frombuffer(b, np.uint8)

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> TokenTable:
        return cls([tok.decode_bytes([i]) for i in range(tok.vocab_size)])

    def extending(self, rem: bytes) -> np.ndarray:
        """Ids of tokens whose bytes start with `rem` and continue past it -> i64 [M]."""
        r = len(rem)
        match = self.length_v > r
        if r:
            match &= np.all(self.bytes_vl[:, :r] == np.frombuffer(rem, np.uint8)[None, :], axis=1)
        return np.nonzero(match)[0]


class ByteLM:
    """The byte-level view of a tokenized LM: next-byte distributions and byte-level sampling.

    tokenizer: its `encode(bytes)` is the canonical encoding (a bytes string that does not round trip
      through `decode_bytes`, e.g. broken UTF-8 for SentencePiece, has no canonical encoding).
    next_token_logprobs: the token LM (see `NextTokenLogprobs`; `rocket_next_token_logprobs` adapts a
      rocket model). Results are memoised per context.
    """

    def __init__(self, tokenizer: Tokenizer, next_token_logprobs: NextTokenLogprobs) -> None:
        self.tokenizer = tokenizer
        self.table = TokenTable.from_tokenizer(tokenizer)
        self._lm = next_token_logprobs
        self._rows: dict[Tokens, np.ndarray] = {}  # context -> log p(. | context) [V]
        self._enc: dict[bytes, Tokens | None] = {}
        self._next_byte: dict[bytes, np.ndarray] = {}

    def canonical(self, data: bytes) -> Tokens | None:
        """enc(data), or None when `data` has no encoding that decodes back to it."""
        if data not in self._enc:
            ids = tuple(int(i) for i in self.tokenizer.encode(data))
            self._enc[data] = ids if self.tokenizer.decode_bytes(list(ids)) == data else None
        return self._enc[data]

    def next_logprobs(self, contexts: Sequence[Tokens]) -> list[np.ndarray]:
        """log p(. | context) [V] for each context; every prefix of a context is memoised too."""
        missing = [c for c in dict.fromkeys(contexts) if c not in self._rows]
        if missing:
            wanted = [c[:j] for c in missing for j in range(len(c) + 1)]
            wanted = [c for c in dict.fromkeys(wanted) if c not in self._rows]
            for c, row in zip(wanted, self._lm(wanted)):
                self._rows[c] = np.asarray(row, np.float64)
        return [self._rows[c] for c in contexts]

    def sequence_logprob(self, tokens: Tokens) -> float:
        """log P(t_{1:k}) = sum_j log p(t_j | t_{<j}) (a prefix probability, no EOS)."""
        rows = self.next_logprobs([tokens[:j] for j in range(len(tokens))])
        return float(sum(row[t] for row, t in zip(rows, tokens)))

    def _valid(self, left: Tokens, prefix: bytes, t: int) -> bool:
        return self.canonical(prefix + self.table.token_bytes[t]) == left + (t,)

    def next_byte_mass(self, x: bytes) -> np.ndarray:
        """P(x b) for every byte b (unnormalized, float64 [256]); see the module docstring."""
        n = len(x)
        splits = [(i, self.canonical(x[:i])) for i in range(max(0, n + 1 - self.table.max_len), n + 1)]
        splits = [(i, left) for i, left in splits if left is not None]
        rows = self.next_logprobs([left for _, left in splits])
        mass_b = np.zeros(256, np.float64)
        for (i, left), row in zip(splits, rows):
            cand = [t for t in self.table.extending(x[i:]) if self._valid(left, x[:i], int(t))]
            if not cand:
                continue
            cand = np.asarray(cand)
            p_t = np.exp(self.sequence_logprob(left) + row[cand])
            np.add.at(mass_b, self.table.bytes_vl[cand, n - i], p_t)
        return mass_b

    def next_byte_probs(self, x: bytes) -> np.ndarray:
        """P(b | x) for every byte b: float64 [256], sums to 1 (memoised per prefix)."""
        if x not in self._next_byte:
            mass_b = self.next_byte_mass(x)
            total = mass_b.sum()
            if not total > 0:
                raise ValueError(f"the byte prefix {x!r} has probability 0 under the token model")
            self._next_byte[x] = mass_b / total
        return self._next_byte[x]

    def prefix_logprob(self, x: bytes) -> float:
        """log P(the byte stream starts with x) = sum of log next-byte conditionals (chain rule)."""
        return float(sum(np.log(self.next_byte_probs(x[:j])[x[j]]) for j in range(len(x))))


def sample_bytes(
    byte_lms: Sequence[ByteLM],
    prompt: bytes,
    n_bytes: int,
    rng: np.random.Generator,
    *,
    weights: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> bytes:
    """Samples `n_bytes` bytes after `prompt`, one at a time, from the (ensemble) next-byte law.

    With several models the next-byte distribution is the mixture sum_m w_m P_m(b | x) (the paper's
    byte-level ensemble of models with different tokenizers); temperature rescales log P(b | x).
    """
    x = bytes(prompt)
    for _ in range(n_bytes):
        probs = ensemble_next_byte_probs(byte_lms, x, weights)
        if temperature != 1.0:
            logits = np.log(np.maximum(probs, 1e-300)) / temperature
            probs = np.where(probs > 0, np.exp(logits - logits.max()), 0.0)
            probs /= probs.sum()
        x += bytes([int(rng.choice(256, p=probs))])
    return x[len(prompt) :]


def ensemble_next_byte_probs(
    byte_lms: Sequence[ByteLM], x: bytes, weights: Sequence[float] | None = None
) -> np.ndarray:
    """sum_m w_m P_m(b | x) (weights default to uniform; must be >= 0 and sum to 1) -> [256]."""
    w = np.full(len(byte_lms), 1.0 / len(byte_lms)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(byte_lms),) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"ensemble weights must be {len(byte_lms)} non-negative numbers summing to 1")
    return sum(wm * lm.next_byte_probs(x) for wm, lm in zip(w, byte_lms))


def rocket_next_token_logprobs(
    model: DecodableModel, params: Any, bos_id: int, *, bucket: int = 64, batch: int = 16
) -> NextTokenLogprobs:
    """Adapts a rocket model: the context is fed after BOS, right padded to a multiple of `bucket`
    (few compiles), `batch` contexts per forward; returns log_softmax of the last real position."""
    max_seq_len = DecodeSpec.of(model).max_seq_len

    @jax.jit
    def forward(tokens_bt: jax.Array, last_b: jax.Array) -> jax.Array:
        b, t = tokens_bt.shape
        positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        logits_btv, _ = model.apply(params, tokens_bt, positions_bt, routing="causal")
        last_bv = jnp.take_along_axis(logits_btv, last_b[:, None, None], axis=1)[:, 0]
        return jax.nn.log_softmax(last_bv.astype(jnp.float32), axis=-1)

    def fn(contexts: Sequence[Tokens]) -> np.ndarray:
        out = []
        for s in range(0, len(contexts), batch):
            chunk = contexts[s : s + batch]
            t = bucket * -(-(max(len(c) for c in chunk) + 1) // bucket)
            if t > max_seq_len:
                raise ValueError(f"context of {t - 1} tokens exceeds max_seq_len {max_seq_len}")
            tokens = np.zeros((batch, t), np.int32)
            last = np.zeros((batch,), np.int32)
            for r, c in enumerate(chunk):
                tokens[r, : len(c) + 1] = (bos_id, *c)
                last[r] = len(c)
            out.append(np.asarray(forward(jnp.asarray(tokens), jnp.asarray(last)))[: len(chunk)])
        return np.concatenate(out).astype(np.float64)

    return fn
