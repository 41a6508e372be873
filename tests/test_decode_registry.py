"""The method registry: a user-defined method run by name, registry errors and exports (the layering
of rocket.decode is checked with every other package in tests/test_layering.py)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rocket.decode
import rocket.decode.methods
from rocket.decode import (
    METHODS,
    Ctx,
    Method,
    ModelStep,
    RoundOut,
    Stats,
    commit_block,
    generate,
    last_prompt_token,
    prefill,
    register_method,
    resolve_method,
)
from tests.helpers import tiny_model


@dataclasses.dataclass(frozen=True)
class ShiftedGreedy(Method):
    """A user's method written against the protocol: greedy AR emitting (argmax + shift) mod V."""

    shift: int = 0
    emit_width: ClassVar[int] = 1
    block_width: ClassVar[int] = 1

    def init(self, ctx: Ctx, prompt_bp: jax.Array, prompt_len_b: jax.Array, key: jax.Array, carry: Any):
        del key, carry
        cache = ctx.target.new_cache(prompt_bp.shape[0], ctx.max_len)
        _, cache = prefill(ctx.target, cache, prompt_bp, prompt_len_b)
        return cache, last_prompt_token(prompt_bp, prompt_len_b), prompt_len_b - 1

    def round(self, ctx: Ctx, state: Any, key: jax.Array, active_b: jax.Array) -> RoundOut:
        cache, pending_b, pos_b = state
        out = ctx.target(pending_b[:, None], pos_b[:, None], cache)
        tok_b = (jnp.argmax(out.logits[:, 0], -1) + self.shift) % ctx.target.vocab_size
        tok_b = tok_b.astype(jnp.int32)
        step_b = active_b.astype(jnp.int32)
        b = tok_b.shape[0]
        new = (commit_block(cache, out.new_kv, step_b), tok_b, pos_b + step_b)
        return RoundOut(new, tok_b[:, None], jnp.ones((b,), jnp.int32), Stats.per_round(b, 1, 0, 0, 0))

    def carry(self, state: Any) -> None:
        return None


@pytest.fixture
def registry():
    saved = dict(METHODS)
    yield METHODS
    METHODS.clear()
    METHODS.update(saved)


@pytest.fixture(scope="module")
def target() -> ModelStep:
    model, params = tiny_model(d_model=32, n_layers=1, max_seq_len=32)
    return ModelStep(model, params)


def _generate(target: ModelStep, method: Any) -> np.ndarray:
    prompt = jnp.array([[5, 9, 5, 9, 2], [7, 3, 8, 0, 0]], jnp.int32)
    out = generate(target, prompt, jnp.array([5, 3]), jax.random.key(0), max_new_tokens=6, method=method)
    return np.asarray(out.tokens)


def test_a_registered_user_method_runs_by_name_and_equals_greedy_ar(registry, target):
    register_method("my_greedy", ShiftedGreedy())
    assert isinstance(resolve_method("my_greedy"), ShiftedGreedy)
    mine = _generate(target, "my_greedy")
    np.testing.assert_array_equal(mine, _generate(target, "ar"))
    # overwriting a name is seen by the next call (the name is resolved before jit's cache)
    register_method("my_greedy", ShiftedGreedy(shift=1), overwrite=True)
    shifted = _generate(target, "my_greedy")
    np.testing.assert_array_equal(shifted[:, 0], (mine[:, 0] + 1) % target.vocab_size)


def test_register_method_rejects_duplicates_and_non_methods(registry):
    builtin = set(registry)
    register_method("my_greedy", ShiftedGreedy())
    with pytest.raises(ValueError, match="already registered"):
        register_method("my_greedy", ShiftedGreedy(shift=2))
    with pytest.raises(ValueError, match="already registered"):
        register_method("ar", ShiftedGreedy())
    assert registry["my_greedy"] == ShiftedGreedy()
    with pytest.raises(TypeError, match="not a decoding method"):
        register_method("cls", ShiftedGreedy)  # the class, not an instance
    with pytest.raises(TypeError, match="not a decoding method"):
        register_method("half", object())

    class Unhashable(ShiftedGreedy):
        __hash__ = None

    with pytest.raises(TypeError, match="hashable"):
        register_method("unhashable", Unhashable())
    assert set(registry) == builtin | {"my_greedy"}


def test_unknown_method_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown decoding method 'nope'") as info:
        resolve_method("nope")
    assert all(repr(name) in str(info.value) for name in METHODS)


def test_every_registered_method_is_exported():
    for name in METHODS:
        cls = type(resolve_method(name))
        assert cls.__name__ in rocket.decode.__all__, name
        assert getattr(rocket.decode, cls.__name__) is cls


def test_every_method_class_is_exported():
    found = set()
    for info in pkgutil.iter_modules(rocket.decode.methods.__path__):
        module = importlib.import_module(f"rocket.decode.methods.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and Method in obj.__mro__:
                if not name.startswith("_"):
                    found.add(name)
                    assert name in rocket.decode.__all__ and getattr(rocket.decode, name) is obj
    expected = {"Autoregressive", "Speculative", "DySpec", "TokenRecycling", "ContrastiveSearch"}
    assert found >= expected | {"MomentumDecoding", "StreamingAR", "AWRSDecode"}
    assert set(rocket.decode.__all__) <= set(vars(rocket.decode))
