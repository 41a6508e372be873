"""The tokenizer.json kind (`rocket.data.HFTokenizer`): exact bytes per token, and the exact
byte-level probabilities (`ByteLM`, Phan et al., arXiv 2410.09303) on a real byte-level BPE."""

from __future__ import annotations

import numpy as np

from rocket.data import HFTokenizer, get_tokenizer
from rocket.decode.tools.byte_probs import ByteLM, rocket_next_token_logprobs
from rocket.interop import load_hf
from rocket.models import Transformer
from tests.test_hf_import import fixture

TEXT = "The quick brown fox é ü — 雪 def main(argv):\n    return sorted(argv)"


def test_bytes_per_token_are_exact():
    tok = get_tokenizer("hf:" + fixture("qwen2")[0])
    assert isinstance(tok, HFTokenizer) and tok.name == "hf"
    ids = tok.encode(TEXT)
    assert tok.decode_bytes(ids) == TEXT.encode() and tok.decode(ids) == TEXT
    assert int(tok.token_num_bytes[ids].sum()) == len(TEXT.encode())  # bits/byte is exact
    assert tok.token_num_bytes[0] == tok.token_num_bytes[1] == 0  # specials count no bytes
    assert (tok.token_num_bytes[2:258] == 1).all() and tok.token_num_bytes[258:].min() >= 2  # bytes, merges


def test_byte_lm_on_a_byte_level_bpe():
    """P(first byte = b) is the mass of the canonical single tokens starting with b (the lemma's
    i = n term; the empty prefix has no other split), and P(. | x) is a distribution."""
    cfg, params, tok = load_hf(fixture("llama")[0])
    lm = rocket_next_token_logprobs(Transformer(cfg), {"params": params}, tok.bos_id, bucket=16, batch=8)
    byte_lm = ByteLM(tok, lm)
    row = np.exp(lm([()])[0])
    want = np.zeros(256)
    for t in range(tok.vocab_size):
        piece = tok.decode_bytes([t])
        if piece and tuple(tok.encode(piece)) == (t,):
            want[piece[0]] += row[t]
    np.testing.assert_allclose(byte_lm.next_byte_probs(b""), want / want.sum(), rtol=1e-9, atol=1e-12)
    probs = byte_lm.next_byte_probs(b"def ma")
    assert np.isclose(probs.sum(), 1.0) and probs.min() >= 0
