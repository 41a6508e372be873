"""The dense / Mixture-of-Depths layer stack, looped or scanned over depth (`model.scan_layers`).

Unscanned, XLA compiles every layer of a deep model separately; `nn.scan` compiles one body and
loops it, every parameter stacked on a leading "layers" axis. What is scanned, and where the
stacked parameters live:

  dense   the L blocks: params["layers"], leaves [L, ...] (`rocket.models.transformer`).
  MoD     the smallest period P of `cfg.layer_capacities` (P = 2, a dense + MoD pair, for
          mod.pattern="dense,mod"): a `Period` module holding the P layers "layer_0" ..
          "layer_{P-1}" (a `Block` or a `MoDBlock` each) is scanned R = L // P times:
          params["layers"]["layer_j"], leaves [R, ...], index r holding layer i = r P + j. The
          L - R P trailing layers the period does not cover stay unrolled ("layers_<i>").
  MoR     the m shared blocks within each recursion: params["mor"]["shared"], leaves [m, ...],
          one scan per recursion over the same stacked parameters (`rocket.models.mor`;
          expert-choice recursions run on k_r gathered tokens, so their shapes differ and each
          recursion compiles its own one-block body).

The scanned and unscanned forms compute the same function with the parameters restacked: router
losses and metrics come back under their per-layer names ("mod/layer<i>/..."), K/V and valid masks
per cache layer (tests/test_scan_routed.py). p-MoD's progressive capacities (mod.schedule="prd")
change with every layer and have no period: `ModelConfig` refuses them with scan_layers.

Compile cost: XLA compiles one kernel per distinct fused computation and shape and reuses equal
ones, so a scan removes per-layer copies but not per-shape ones. A dense + MoD period runs the
block at T and at k tokens and so compiles the block's kernels (and the stacking of its residuals
for the backward pass) twice, about 1.9x the scanned dense model's; see `experiments.lib.bench_compile`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from rocket.config import ModelConfig
from rocket.layers.cache import Cache, LayerCache
from rocket.models.mod import MoDBlock

# in_axes of a scanned block's (positions, mask, cache, shared_kv, causal_segment_ids): the cache
# layers and MoR's recursion-0 K/V are per layer, the rest is shared by every layer.
BLOCK_AXES = (nn.broadcast, nn.broadcast, 0, 0, nn.broadcast)


def scan_over_layers(module_cls: type[nn.Module], length: int, in_axes: tuple) -> type[nn.Module]:
    """`module_cls` looped `length` times by `nn.scan`: the first argument is the carry, params
    (and sown intermediates) get a leading axis named "layers" (a sharding rule's logical axis)."""
    return nn.scan(
        module_cls,
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True},
        in_axes=in_axes,
        length=length,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


def layer_range(cache: Cache | None, start: int, stop: int) -> LayerCache | None:
    """Cache layers [start, stop) stacked on a leading axis (a scan's input); None without a cache."""
    return None if cache is None else jax.tree.map(lambda x: x[start:stop], cache.layers())


def mod_period(cfg: ModelConfig) -> tuple[int, int]:
    """(P, R): the period of `cfg.layer_capacities` that is scanned and its repetitions; R P layers
    are scanned, the rest unrolled. (L, 0) when `scan_layers` is off: every layer unrolled."""
    caps = cfg.layer_capacities
    n = len(caps)
    if not cfg.scan_layers:
        return n, 0
    p = next(p for p in range(1, n + 1) if all(caps[i] == caps[i % p] for i in range(n)))
    return p, n // p


def apply_layer(
    cfg: ModelConfig,
    capacity: float | None,
    block_cls: type[nn.Module],
    routing: str,
    name: str,
    h_btd: jax.Array,
    positions_bt: jax.Array,
    mask_btt: jax.Array,
    cache: LayerCache | None,
    valid_bt: jax.Array,
    causal_ids_bt: jax.Array | None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array | None, dict[str, Any] | None]:
    """One layer, built as submodule `name` of the calling compact module: a dense block
    (capacity None) or a `MoDBlock` wrapping it -> (h, (k, v), valid[B, T] | None, extras | None).

    Only dense layers get `causal_ids_bt`: a MoD layer gathers tokens by routing, so its mask is no
    longer causal AND same-segment and keeps the dense mask."""
    if capacity is None:
        h_btd, kv = block_cls(cfg, name=name)(h_btd, positions_bt, mask_btt, cache, None, causal_ids_bt)
        return h_btd, kv, None, None
    mod = MoDBlock(cfg, capacity, block_cls, routing, name=name)
    return mod(h_btd, positions_bt, mask_btt, cache, valid_bt)


class Period(nn.Module):
    """One period of the layer pattern, the body `nn.scan` repeats: (h[B, T, D], ...) ->
    (h, per layer j: ((k, v) or None without a cache, valid[B, T] | None, extras | None))."""

    cfg: ModelConfig
    capacities: tuple[float | None, ...]
    block_cls: type[nn.Module]  # the dense block (rematerialised per the config)
    routing: str = "topk"

    @nn.compact
    def __call__(self, h_btd, positions_bt, mask_btt, caches: LayerCache | None, valid_bt, causal_ids_bt):
        outs = []
        for j, capacity in enumerate(self.capacities):
            cache = None if caches is None else jax.tree.map(lambda x, j=j: x[j], caches)
            h_btd, kv, valid, extras = apply_layer(
                self.cfg,
                capacity,
                self.block_cls,
                self.routing,
                f"layer_{j}",
                h_btd,
                positions_bt,
                mask_btt,
                cache,
                valid_bt,
                causal_ids_bt,
            )
            outs.append((None if caches is None else kv, valid, extras))
        return h_btd, tuple(outs)


def mod_layers(
    cfg: ModelConfig,
    block_cls: type[nn.Module],
    routing: str,
    h_btd: jax.Array,
    positions_bt: jax.Array,
    mask_btt: jax.Array,
    cache: Cache | None,
    valid_bt: jax.Array,
    causal_ids_bt: jax.Array | None,
) -> tuple[jax.Array, list, list[jax.Array | None], list[tuple[str, dict[str, Any]]]]:
    """The dense / MoD body in the calling compact module, scanned over the period `mod_period`
    where `scan_layers` is on -> (h, (k, v) per layer, valid[B, T] | None per layer (None: every
    token), [("mod/layer<i>", extras)] of the MoD layers)."""
    caps = cfg.layer_capacities
    p, reps = mod_period(cfg)
    per_layer: list[tuple[Any, jax.Array | None, dict[str, Any] | None]] = []
    if reps:
        caches = layer_range(cache, 0, reps * p)
        if caches is not None:  # [R P, ...] -> [R, P, ...]: one period's layers per scan step
            caches = jax.tree.map(lambda x: x.reshape((reps, p) + x.shape[1:]), caches)
        stack = scan_over_layers(Period, reps, (nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast))
        h_btd, outs = stack(cfg, caps[:p], block_cls, routing, name="layers")(
            h_btd, positions_bt, mask_btt, caches, valid_bt, causal_ids_bt
        )
        per_layer += [jax.tree.map(lambda x, r=r: x[r], outs[j]) for r in range(reps) for j in range(p)]
    for i in range(reps * p, len(caps)):
        layer_cache = None if cache is None else cache.layer(i)
        h_btd, *out = apply_layer(
            cfg,
            caps[i],
            block_cls,
            routing,
            f"layers_{i}",
            h_btd,
            positions_bt,
            mask_btt,
            layer_cache,
            valid_bt,
            causal_ids_bt,
        )
        per_layer.append(tuple(out))
    kvs = [kv for kv, _, _ in per_layer]
    valids = [valid for _, valid, _ in per_layer]
    extras = [(f"mod/layer{i}", e) for i, (_, _, e) in enumerate(per_layer) if e is not None]
    return h_btd, kvs, valids, extras
