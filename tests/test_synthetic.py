"""Synthetic tasks: the weighted targets are exactly the answers the prompts determine."""

import re

import numpy as np
import pytest

from rocket.data import ByteTokenizer, synthetic

TOK = ByteTokenizer()


def _text(batch, row):
    ids = np.concatenate([batch["inputs"][row], batch["targets"][row, -1:]])
    return TOK.decode_bytes(ids).decode()


def _answer(batch, row):
    return TOK.decode_bytes(batch["targets"][row][batch["weights"][row] > 0]).decode()


def _check_format(batch, t):
    for key in ("inputs", "targets", "positions", "segment_ids", "weights", "num_bytes"):
        assert batch[key].shape[1] == t, key
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])


def test_associative_recall_answers_the_queried_key():
    batch = synthetic.associative_recall(8, n_pairs=6, seed=1)
    _check_format(batch, 4 * 6 + 2)
    for row in range(8):
        text = _text(batch, row)
        pairs = dict(p.split(":") for p in text.split("?")[0].split(","))
        query = text.split("?")[1][0]
        assert len(pairs) == 6 and _answer(batch, row) == pairs[query]


def test_passkey_hides_the_key_and_asks_for_it_at_the_end():
    batch = synthetic.passkey(4, 200, seed=2)
    _check_format(batch, 200)
    depths = set()
    for row in range(4):
        text = _text(batch, row)
        key = _answer(batch, row)
        assert re.fullmatch(r"\d{5}", key) and text.endswith("The pass key is " + key)
        depths.add(text.index("The pass key is " + key + ". Remember"))
    assert len(depths) > 1  # the needle moves
    with pytest.raises(ValueError, match="too short"):
        synthetic.passkey(1, 40)


def test_copy_task_and_oracle_accuracy():
    batch = synthetic.copy_task(3, 5, seed=3)
    _check_format(batch, 10)
    for row in range(3):
        x, y = _text(batch, row).split("|")
        assert x == y == _answer(batch, row)
    oracle = np.eye(258)[batch["targets"]]
    assert synthetic.answer_accuracy(oracle, batch) == 1.0
    wrong = np.eye(258)[(batch["targets"] + 1) % 258]
    assert synthetic.answer_accuracy(wrong, batch) == 0.0


def test_substitution_cipher_is_a_per_row_letter_bijection():
    plain = synthetic.associative_recall(4, n_pairs=10, seed=4)
    enc, perm = synthetic.substitution_cipher(plain, seed=5)
    assert sorted(perm[0]) == list(range(26)) and not np.array_equal(perm[0], perm[1])
    for row in range(4):
        p, c = _text(plain, row), _text(enc, row)
        inverse = {chr(97 + int(perm[row, i])): chr(97 + i) for i in range(26)}
        assert "".join(inverse.get(ch, ch) for ch in c) == p
        assert [ch.isalpha() for ch in c] == [ch.isalpha() for ch in p]
    np.testing.assert_array_equal(enc["inputs"][:, 1:], enc["targets"][:, :-1])


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="n_pairs"):
        synthetic.associative_recall(2, n_pairs=27)
    with pytest.raises(ValueError, match="length"):
        synthetic.copy_task(2, 0)
