"""Momentum decoding on the shared engine: alpha = 0 is greedy, repeated 5-grams are blocked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rocket.decode import ModelStep, generate
from rocket.decode.methods.momentum import MomentumDecoding, repeat_length
from tests.helpers import tiny_model


def test_repeat_length_is_the_longest_repeated_suffix():
    history = jnp.array([[1, 2, 3, 9, 1, 2, 0, 0], [4, 4, 4, 4, 0, 0, 0, 0]])
    length = jnp.array([6, 4])
    cand = jnp.array([[3, 9, 7], [4, 5, 4]])
    # row 0: "... 1 2" + 3 repeats "1 2 3" (3); + 9 repeats "9" only (1); 7 is new (0).
    # row 1: "4 4 4 4" + 4 repeats the 4-gram "4 4 4 4" at e = 3 (capped at l_max = 5 -> 4).
    np.testing.assert_array_equal(repeat_length(history, length, cand, 5), [[3, 1, 0], [4, 0, 4]])
    np.testing.assert_array_equal(repeat_length(history, length, cand, 2), [[2, 1, 0], [2, 0, 2]])


def test_alpha_zero_is_greedy_and_repeated_5grams_are_blocked():
    model, params = tiny_model()
    target = ModelStep(model, params)
    prompt = jnp.array([[5, 9, 5, 9, 5, 9], [7, 3, 8, 1, 6, 4]])
    plen = jnp.array([6, 6])
    run = lambda method: generate(target, prompt, plen, jax.random.key(0), max_new_tokens=40, method=method)
    greedy = np.asarray(run("ar").tokens)
    np.testing.assert_array_equal(np.asarray(run(MomentumDecoding(alpha=0.0)).tokens), greedy)
    out = np.asarray(run(MomentumDecoding(top_k=16, alpha=0.2)).tokens)
    for row in range(2):
        seq = list(np.asarray(prompt[row])) + list(out[row])
        grams = [tuple(seq[i : i + 5]) for i in range(len(seq) - 4)]
        assert len(set(grams)) == len(grams)  # no 5-gram repeats (the prompt seeds the graph)
    greedy_grams = [tuple(greedy[0][i : i + 5]) for i in range(len(greedy[0]) - 4)]
    assert len(set(greedy_grams)) < len(greedy_grams)  # greedy does loop here: the test has teeth
