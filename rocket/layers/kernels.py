"""Dispatch from rocket's layers to fused kernels (`impl="pallas"`); `impl="xla"` is the reference.

IMPLS: "xla" (plain jnp, every backend), "pallas" (fused kernels; on CPU they run in the Pallas
interpreter, slow, for tests), "auto" (pallas on GPU and TPU, xla on CPU).

What "pallas" runs for attention (`pallas_attention`), given rocket's boolean mask [B, T, S]:
  * softmax on GPU with bf16/fp16 inputs: cuDNN flash attention through
    `jax.nn.dot_product_attention(..., implementation="cudnn")` (maintained, faster than ours),
    falling back to our kernel when cuDNN rejects the call at trace time (logged);
  * everything else (softmax in f32 or on TPU, softplus LSSA / LSSAR): rocket's own flash kernel
    `pallas_kernels.flash_attention.attention`. When the caller knows the mask is exactly
    causal AND same-segment (`causal_segment_ids_bt`: training without a cache or a user mask),
    the kernel gets causal + segment ids and no dense mask: no mask bytes, and the key tiles above
    the diagonal are skipped (~half the FLOPs). Otherwise the dense mask is streamed as int8 tiles
    (exact for any mask: cache visibility, MoD/MoR routing, token trees; B*T*S bytes, no skipping).
A row with nothing visible gives a finite result (a uniform average for softmax, 0 for softplus);
the kernels may average over a different set of masked keys than the jnp reference there.
Multi-device: the kernels are not yet wrapped in `shard_map`; under a sharded (GSPMD) jit XLA
cannot partition a Pallas custom call and gathers its operands (correct, slow).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from rocket.config.kinds import ATTENTION_IMPLS as IMPLS
from rocket.layers.cache import LayerCache

# the attention kinds the fused kernels implement (pallas_kernels.flash_attention's KINDS, imported
# lazily with the kernels; tests/test_layering.py checks they match); other kinds run their jnp function
FUSED_ATTENTION_KINDS = ("softmax", "softplus")
_log = logging.getLogger(__name__)


def resolve_impl(impl: str) -> str:
    """'xla' or 'pallas' for the current default backend (raises on an unknown impl)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel impl {impl!r}; available: {IMPLS}")
    if impl == "auto":
        return "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"
    return impl


def pallas_attention(
    q_bthd: jax.Array,
    k_bskd: jax.Array,
    v_bskd: jax.Array,
    mask_bts: jax.Array,
    *,
    kind: str = "softmax",
    power: float | None = None,
    causal_segment_ids_bt: jax.Array | None = None,
) -> jax.Array:
    """Masked GQA attention of `kind` ("softmax" | "softplus") through cuDNN or the Pallas kernel.

    `causal_segment_ids_bt` (int [B, T], T == S), when given, promises mask_bts == causal AND
    (ids[t] == ids[s]); our kernel then uses causal tile skipping instead of the dense mask."""
    from pallas_kernels.flash_attention import attention

    use_cudnn = (
        kind == "softmax" and jax.default_backend() == "gpu" and q_bthd.dtype in (jnp.bfloat16, jnp.float16)
    )
    if use_cudnn:
        try:  # cuDNN rejects some shapes / versions at trace time: then our kernel runs instead
            return jax.nn.dot_product_attention(
                q_bthd, k_bskd, v_bskd, mask=mask_bts[:, None], implementation="cudnn"
            )
        except (NotImplementedError, ValueError, RuntimeError) as err:
            _log.warning("cuDNN attention unavailable (%s); using the Pallas flash kernel", err)
    if causal_segment_ids_bt is not None:
        return attention(
            q_bthd, k_bskd, v_bskd, kind=kind, power=power, segment_ids=causal_segment_ids_bt, causal=True
        )
    return attention(q_bthd, k_bskd, v_bskd, kind=kind, power=power, mask=mask_bts)


def pallas_pattention(
    x: jax.Array, k_p: jax.Array, v_p: jax.Array, *, tau: float, norm: str = "l2_norm_gelu"
) -> jax.Array:
    """Fused Pattention (TokenFormer) through the Pallas kernel; see pallas_kernels.pattention."""
    from pallas_kernels.pattention import pattention

    return pattention(x, k_p, v_p, tau=tau, norm=norm)


def pallas_cached_attention(
    q_bthd: jax.Array,
    cache: LayerCache,
    k_bthd: jax.Array,
    v_bthd: jax.Array,
    block_mask_btt: jax.Array,
    positions_bt: jax.Array,
    *,
    kind: str = "softmax",
    power: float | None = None,
) -> jax.Array:
    """The decode / verify step: the block attends to the committed cache (slots s < length with
    slot_pos < the query's position, i.e. `LayerCache.visible`) and to itself under `block_mask`,
    through the split-K kernel `pallas_kernels.verify_attention` (reads the cache once, no concat)."""
    from pallas_kernels.verify_attention import verify_attention

    return verify_attention(
        q_bthd,
        cache.k,
        cache.v,
        cache.length,
        k_bthd,
        v_bthd,
        block_mask_btt,
        kind=kind,
        power=power,
        slot_pos=cache.slot_pos,
        q_pos=positions_bt,
    )
