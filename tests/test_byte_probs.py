"""Exact byte-level probabilities: brute-force enumeration, string-distribution reproduction, model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rocket.data.tokenizers import ByteTokenizer
from rocket.decode.tools.byte_probs import (
    ByteLM,
    ensemble_next_byte_probs,
    rocket_next_token_logprobs,
    sample_bytes,
)
from tests.decode_toys import chi_square_pvalue, critical_value, noncentrality
from tests.helpers import tiny_model


class ToyBPE:
    """A hand-made BPE over the alphabet {a, b, c}: pad=0, bos=1, then the pieces below.

    Merges in priority order: a+b -> ab, b+c -> bc, c+a -> ca, ab+c -> abc. Encoding applies the
    lowest-ranked adjacent merge until none applies (standard BPE)."""

    name = "toy-bpe"
    pad_id, bos_id = 0, 1
    pieces = [b"", b"", b"a", b"b", b"c", b"ab", b"bc", b"ca", b"abc"]
    merges = [(b"a", b"b"), (b"b", b"c"), (b"c", b"a"), (b"ab", b"c")]
    vocab_size = len(pieces)
    token_num_bytes = np.array([len(p) for p in pieces], np.int32)

    def encode(self, text: bytes) -> np.ndarray:
        parts = [bytes([c]) for c in bytes(text)]
        if any(p not in self.pieces for p in parts):
            return np.zeros((0,), np.int32)  # not encodable: no round trip
        while True:
            ranks = [self.merges.index(m) if m in self.merges else 99 for m in zip(parts, parts[1:])]
            if not ranks or min(ranks) == 99:
                break
            j = int(np.argmin(ranks))
            parts[j : j + 2] = [parts[j] + parts[j + 1]]
        return np.array([self.pieces.index(p) for p in parts], np.int32)

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.pieces[int(i)] for i in ids)


def table_lm(masked_tok: ToyBPE | None = None):
    """A lookup-table token LM: random logits per context (specials never emitted). With
    `masked_tok`, continuations that make the sequence non-canonical get probability 0 (the ideal
    model of canonical tokenizations)."""

    def logprobs(ctx: tuple[int, ...]) -> np.ndarray:
        logits = np.random.default_rng([7, len(ctx), *ctx]).normal(size=ToyBPE.vocab_size) * 1.5
        logits[:2] = -np.inf
        if masked_tok is not None:
            for t in range(2, ToyBPE.vocab_size):
                seq = (*ctx, t)
                if tuple(masked_tok.encode(masked_tok.decode_bytes(seq))) != seq:
                    logits[t] = -np.inf
        return logits - np.logaddexp.reduce(logits)

    return lambda contexts: np.stack([logprobs(tuple(c)) for c in contexts])


def brute_force_next_byte(tok: ToyBPE, lm, x: bytes) -> np.ndarray:
    """P(b | x) by enumerating every valid token sequence that covers x b (at most len(x)+1 tokens)."""
    canonical = lambda t: tuple(tok.encode(tok.decode_bytes(t))) == tuple(t)
    mass = np.zeros(256)
    for k in range(1, len(x) + 2):
        for t in itertools.product(range(2, tok.vocab_size), repeat=k):
            head, full = tok.decode_bytes(t[:-1]), tok.decode_bytes(t)
            if len(head) > len(x) or not x.startswith(head) or len(full) <= len(x) or not full.startswith(x):
                continue
            if canonical(t) and canonical(t[:-1]):
                rows = lm([t[:j] for j in range(k)])
                mass[full[len(x)]] += np.exp(sum(rows[j, t[j]] for j in range(k)))
    return mass / mass.sum()


@pytest.mark.parametrize("x", [b"", b"a", b"ab", b"abc", b"ca", b"bca", b"cab"])
def test_next_byte_distribution_equals_brute_force_enumeration(x):
    tok, lm = ToyBPE(), table_lm()
    got = ByteLM(tok, lm).next_byte_probs(x)
    np.testing.assert_allclose(got, brute_force_next_byte(tok, lm, x), atol=1e-12)
    assert np.isclose(got.sum(), 1.0)


def _token_string_law(tok: ToyBPE, lm, m: int) -> dict[bytes, float]:
    """Law of the first m bytes of the token model's samples (exact, by expanding token sequences)."""
    law: dict[bytes, float] = {}
    frontier = [((), 0.0)]
    while frontier:
        seq, logp = frontier.pop()
        text = tok.decode_bytes(seq)
        if len(text) >= m:
            law[text[:m]] = law.get(text[:m], 0.0) + np.exp(logp)
            continue
        row = lm([seq])[0]
        frontier += [((*seq, t), logp + row[t]) for t in range(tok.vocab_size) if row[t] > -np.inf]
    return law


def _naive_next_byte(tok: ToyBPE, lm, x: bytes) -> np.ndarray:
    """The biased baseline: tokenize x, take the first byte of the next token."""
    row = np.exp(lm([tuple(tok.encode(x))])[0])
    probs = np.zeros(256)
    for t in range(2, tok.vocab_size):
        probs[tok.pieces[t][0]] += row[t]
    return probs / probs.sum()


def test_byte_sampling_reproduces_the_token_models_string_distribution():
    tok, m, n = ToyBPE(), 3, 20_000
    lm = table_lm(masked_tok=tok)  # a model of canonical tokenizations: the lemma is then exact
    law = _token_string_law(tok, lm, m)
    strings = sorted(law)
    probs = np.array([law[s] for s in strings])
    assert np.isclose(probs.sum(), 1.0)
    byte_lm = ByteLM(tok, lm)
    exact = np.array([np.exp(byte_lm.prefix_logprob(s)) for s in strings])
    np.testing.assert_allclose(exact, probs, atol=1e-12)  # chain rule of next-byte probs == P(prefix)

    rng = np.random.default_rng(0)
    draws = [sample_bytes([byte_lm], b"", m, rng) for _ in range(n)]
    outcomes = np.array([strings.index(d) for d in draws])[:, None]  # [N, 1] cell of each draw
    pval, stat, df = chi_square_pvalue(outcomes, probs)
    assert pval > 1e-4, (stat, df)

    # Power check: the tokenize-the-prefix sampler (tokenization bias) must be rejected.
    naive = {s: np.prod([_naive_next_byte(tok, lm, s[:j])[s[j]] for j in range(m)]) for s in strings}
    naive_probs = np.array([naive[s] for s in strings])
    assert noncentrality(probs, naive_probs, n) > 10 * critical_value(df, 1e-4)
    naive_draws = rng.choice(len(strings), size=n, p=naive_probs / naive_probs.sum())
    assert chi_square_pvalue(naive_draws[:, None], probs)[0] < 1e-4


def test_rocket_model_byte_level_with_a_byte_tokenizer_is_the_token_model():
    """With the byte tokenizer every cover is one token: P(b | x) = p(token b | enc(x)). Also checks
    the byte-level ensemble of two models is the mixture."""
    tok = ByteTokenizer()
    model, params = tiny_model()
    lm = rocket_next_token_logprobs(model, params, tok.bos_id, bucket=16, batch=4)
    byte_lm = ByteLM(tok, lm)
    x = b"def f("
    probs = byte_lm.next_byte_probs(x)
    row = np.exp(lm([tuple(tok.encode(x))])[0])
    np.testing.assert_allclose(probs, row[2:] / row[2:].sum(), rtol=1e-5)
    other = ByteLM(ToyBPE(), table_lm())
    mix = ensemble_next_byte_probs([byte_lm, other], b"ab", [0.25, 0.75])
    np.testing.assert_allclose(
        mix, 0.25 * byte_lm.next_byte_probs(b"ab") + 0.75 * other.next_byte_probs(b"ab"), atol=1e-12
    )
    with pytest.raises(ValueError, match="weights"):
        ensemble_next_byte_probs([byte_lm], x, [0.5])
