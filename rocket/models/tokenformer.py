"""TokenFormer incremental scaling: grow the parameter tokens of a trained model, exactly.

Wang et al., arXiv 2410.23168, section 3.6; official code `megatron/checkpointing.py`
(`custom_load_fn_incremental`) and the JAX `zoom_dim` setting. A model with
`projection.kind="pattention"` keeps its capacity in parameter tokens (`rocket.layers.pattention`).
`grow` appends new parameter tokens to every Pattention with *zero keys* and pins the scale constant
tau = sqrt(n_scale) to the pre-growth value, so the grown model computes *exactly* the same function:
a zero key scores A = 0, gelu(0) = 0, and it adds nothing to the L2 norm over tokens, so the new
tokens get weight 0 whatever their values. The new *values* are drawn from the layer's value init
(N(0, (2 / (L sqrt(d_in)))^2)), not zero: with zero keys AND zero values every gradient of the new
tokens vanishes (dL/dV_new = Θ_new g = 0 and dL/dK_new ∝ V_new = 0), a fixed point that training
never leaves. With random values the zero keys get the gradient gelu'(0) tau / ||A|| (g V_new^T) x
and the new tokens start learning. Growth is refused for `projection.norm="softmax"`, where a zero
score still gets weight exp(0) / sum > 0.

Continuing training with the standard trainer (growing the optimizer state and a run's checkpoint):
`rocket.train.grow` (`grow_train_state`, `grow_checkpoint`). This module is model-level only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from rocket.config import ModelConfig

_TOKEN_LEAVES = ("keys", "values")
_FFN_MODULE = "mlp"  # the FFN Pattention's module name (rocket.models.kinds.make_mlp)


def grown_config(
    cfg: ModelConfig, new_num_param_tokens: int, new_num_param_tokens_ffn: int | None = None
) -> ModelConfig:
    """The config of the grown model: more tokens, scale constants pinned to the old values.

    The FFN grows in proportion (n_ffn * new / n) unless `new_num_param_tokens_ffn` is given.
    """
    if cfg.projection.kind != "pattention":
        raise ValueError(
            f"grow needs a TokenFormer model (projection.kind='pattention'), got {cfg.projection.kind!r}"
        )
    if cfg.projection.norm == "softmax":
        raise ValueError(
            "growth is not function-preserving under projection.norm='softmax' (exp(0) = 1 gives new zero "
            "keys weight); use 'l2_norm_gelu' or 'gelu_l2_norm'"
        )
    n, n_ffn = cfg.resolved_n_param_tokens, cfg.resolved_n_param_tokens_ffn
    if new_num_param_tokens_ffn is None:
        if (n_ffn * new_num_param_tokens) % n:
            raise ValueError(
                f"projection.param_tokens_ffn={n_ffn} does not grow in proportion to {n} -> {new_num_param_tokens}; "
                "pass new_num_param_tokens_ffn"
            )
        new_num_param_tokens_ffn = n_ffn * new_num_param_tokens // n
    for name, old, new in (
        ("projection.param_tokens", n, new_num_param_tokens),
        ("projection.param_tokens_ffn", n_ffn, new_num_param_tokens_ffn),
    ):
        if new < old:
            raise ValueError(f"growth to fewer tokens: {name} {old} -> {new} (growth only appends tokens)")
    projection = dataclasses.replace(
        cfg.projection,
        param_tokens=new_num_param_tokens,
        param_tokens_ffn=new_num_param_tokens_ffn,
        scale_tokens=cfg.projection.scale_tokens or n,
        scale_tokens_ffn=cfg.projection.scale_tokens_ffn or n_ffn,
    )
    return dataclasses.replace(cfg, projection=projection)


def _append_tokens(x: Any, new_n: int, fill: jax.Array | None) -> Any:
    """Appends rows on the parameter-token axis (-2) of an array (or a boxed nn.Partitioned one):
    zeros, or `fill` (broadcast over leading layer axes) -> [..., new_n, d]."""
    if isinstance(x, nn.meta.AxisMetadata):
        return x.replace_boxed(_append_tokens(x.unbox(), new_n, fill))
    n_new = new_n - x.shape[-2]
    if n_new < 0:
        raise ValueError(f"growth to fewer tokens: {x.shape[-2]} -> {new_n}")
    shape = x.shape[:-2] + (n_new, x.shape[-1])
    rows = jnp.zeros(shape, x.dtype) if fill is None else fill.astype(x.dtype)
    return jnp.concatenate([x, rows], axis=-2)


def grow(
    params: Any,
    cfg: ModelConfig,
    new_num_param_tokens: int,
    new_num_param_tokens_ffn: int | None = None,
    *,
    key: jax.Array | None = None,
) -> tuple[Any, ModelConfig]:
    """Grows every Pattention of `params` (a model's param tree, with or without the {"params": ...}
    wrapper) to the new token counts -> (params, cfg) computing exactly the same function.

    New keys are zero; new values are drawn from the value init with `key` (default: a fixed key).
    """
    new_cfg = grown_config(cfg, new_num_param_tokens, new_num_param_tokens_ffn)
    key = jax.random.key(0) if key is None else key
    flat = traverse_util.flatten_dict(params)
    if not any(path[-1] in _TOKEN_LEAVES for path in flat):
        raise ValueError("no Pattention parameters ('keys' / 'values') found in params")
    grown = {}
    for i, (path, leaf) in enumerate(sorted(flat.items())):
        if path[-1] not in _TOKEN_LEAVES:
            grown[path] = leaf
            continue
        is_ffn = len(path) >= 2 and path[-2] == _FFN_MODULE
        new_n = new_cfg.resolved_n_param_tokens_ffn if is_ffn else new_cfg.resolved_n_param_tokens
        fill = None
        if path[-1] == "values":
            keys_leaf = nn.meta.unbox(flat[path[:-1] + ("keys",)])
            value = nn.meta.unbox(leaf)
            std = 2.0 / (cfg.n_layers * keys_leaf.shape[-1] ** 0.5)  # Pattention's value init
            shape = value.shape[:-2] + (new_n - value.shape[-2], value.shape[-1])
            fill = std * jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)
        grown[path] = _append_tokens(leaf, new_n, fill)
    return traverse_util.unflatten_dict(grown), new_cfg
