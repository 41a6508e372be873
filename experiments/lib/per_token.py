"""Per-token evaluation of a trained model on the built-in corpus's validation text: the batches,
each real target's nats, top-1 correctness and position, and means over position buckets."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rocket.config import ModelConfig
from rocket.data import build_data
from rocket.models import Transformer
from rocket.train.step import MODEL_RNG_STREAM


def eval_batches(seq_len: int, n_batches: int, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Validation batches of the built-in corpus at length `seq_len`."""
    return build_data(seq_len=seq_len, batch_size=batch_size, eval_batches=n_batches).eval_batches


def per_token(
    model_cfg: ModelConfig,
    params: Any,
    batches: list[dict[str, np.ndarray]],
    *,
    key: jax.Array | None = None,
    cipher: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Flat arrays over the real targets of `batches`: nats, top-1 correctness and position.

    `key` feeds the model's "sample" stream (lexinvariant draws); `cipher` [V] relabels inputs and
    targets (a substitution cipher) before scoring.
    """
    model = Transformer(model_cfg)

    @jax.jit
    def score(params, batch, key):
        rngs = None if key is None else {MODEL_RNG_STREAM: key}
        logits, _ = model.apply(
            {"params": params},
            batch["inputs"],
            batch["positions"],
            segment_ids=batch["segment_ids"],
            rngs=rngs,
        )
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        return nats, jnp.argmax(logits, -1) == batch["targets"]

    out: dict[str, list[np.ndarray]] = {"nats": [], "correct": [], "position": []}
    for i, b in enumerate(batches):
        b = dict(b)
        if cipher is not None:
            b["inputs"], b["targets"] = cipher[b["inputs"]], cipher[b["targets"]]
        nats, correct = score(
            params,
            {k: jnp.asarray(v) for k, v in b.items()},
            None if key is None else jax.random.fold_in(key, i),
        )
        real = b["weights"] > 0
        out["nats"].append(np.asarray(nats)[real])
        out["correct"].append(np.asarray(correct)[real])
        out["position"].append(b["positions"][real])
    return {k: np.concatenate(v) for k, v in out.items()}


def by_bucket(values: np.ndarray, positions: np.ndarray, edges: list[int]) -> list[float]:
    """Mean of `values` over positions in [edges[i], edges[i+1])."""
    return [
        float(values[(positions >= lo) & (positions < hi)].mean())
        if np.any((positions >= lo) & (positions < hi))
        else float("nan")
        for lo, hi in zip(edges[:-1], edges[1:])
    ]
