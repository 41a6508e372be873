"""The train step's loss composition: batch transforms, token-weight transforms, aux-loss scales.

  batch  <- batch_fn_k(key_k, batch, step)              for each batch transform (MEAP), before
                                                          the forward pass, on the whole batch
  w_bt   =  batch["weights"] * prod_i weight_fn_i(nats_bt, ctx)      (stop-gradient; sample
                                                          reweighting, ssToken token selection)
  objective = sum(nats_bt * w_bt) / sum(batch["weights"]) + sum_k scale_k * aux_loss_k

Every weight function returns mean-1 weights over its valid units, so the objective keeps the
plain loss's learning-rate scale; with no transforms it *is* the plain loss. The logged `loss` and
`bits_per_byte` stay the unweighted ones (comparable across runs); `transform/*` metrics carry the
weighted objective and the weight statistics.

Extension: a user project registers a builder `(LossConfig, ModelConfig) -> LossTransforms` under
a name with `register_transform` and enables it with `loss.transforms="name"`; its batch and weight
functions run after rocket's own (`docs/extending.md`, "A new training transform").

Microbatching: weight functions see one microbatch at a time. Sample reweighting normalises
(min/max of the losses, the softmax and its mean 1) over the samples of each microbatch, which is
the paper's per-batch definition only when `microbatches == 1`; with accumulation each microbatch
acts as one of the paper's batches (the accumulated gradient is the token-weighted average of
those). Across data-parallel devices the (micro)batch is global: jit's min/max/softmax see every
device's rows. ssToken ranks within each sample, so it does not depend on microbatching.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rocket.config import USER_TRANSFORMS, LossConfig, ModelConfig
from rocket.train.early_exit import ExtraLossFn, early_exit_loss_fn
from rocket.train.reweighting import sample_weights, sstoken_keep

Batch = dict[str, jax.Array]


class LossContext(NamedTuple):
    """What a weight function may read besides the per-token loss."""

    step: jax.Array  # int32 [] the optimizer step being taken
    batch: Batch  # the (transformed) microbatch
    aux: dict[str, Any]  # the model's aux (with "intermediates" when attention is captured)
    history_nats_bt: jax.Array | None  # f32 [B, T] loss of the EMA history model, if kept


BatchFn = Callable[[jax.Array, Batch, jax.Array], Batch]  # (key, batch, step) -> batch
WeightFn = Callable[[jax.Array, LossContext], tuple[jax.Array, dict[str, jax.Array]]]


def meap_mask_inputs(key: jax.Array, batch: Batch, *, rate: float, mask_id: int) -> Batch:
    """MEAP (Zhuang et al., ICML 2025, arXiv 2502.07490; scitix/MEAP `meap_1b*.py`).

    n = max(1, floor(T * rate)) positions drawn without replacement from [0, T - 1), shared by
    every row (as the official code), have their *input* replaced by `mask_id` where the row has a
    real token (segment id > 0). Targets, positions, segments and weights are untouched: the
    model still predicts every original next token. rate = 0 returns the batch unchanged.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"MEAP rate must be in [0, 1), got {rate}")
    t = batch["inputs"].shape[1]
    if rate == 0.0 or t < 2:
        return batch
    n = max(1, int(t * rate))
    pos_n = jax.random.choice(key, t - 1, (n,), replace=False)
    hit_t = jnp.zeros((t,), bool).at[pos_n].set(True)
    hit_bt = hit_t[None, :] & (batch["segment_ids"] > 0)
    return {
        **batch,
        "inputs": jnp.where(hit_bt, jnp.asarray(mask_id, batch["inputs"].dtype), batch["inputs"]),
    }


def sample_ids(batch: Batch, unit: str) -> jax.Array:
    """int32 [B, T]: the sample each token belongs to: its row ("row") or its packed segment
    ("segment", row-major ids b * (T + 1) + segment)."""
    b, t = batch["segment_ids"].shape
    rows_bt = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32)[:, None], (b, t))
    if unit == "row":
        return rows_bt
    if unit == "segment":
        return rows_bt * (t + 1) + batch["segment_ids"].astype(jnp.int32)
    raise ValueError(f"unknown sample unit {unit!r}; valid: 'row', 'segment'")


def reweight_fn(*, strategy: str, temperature: float, delta: float, warmup_steps: int, unit: str) -> WeightFn:
    """Token weights from `sample_weights` over the microbatch's samples (their mean token loss);
    exactly 1 before `warmup_steps`. Logs the weights' max, min and effective sample fraction
    (sum w)^2 / (N sum w^2)."""

    def fn(nats_bt: jax.Array, ctx: LossContext) -> tuple[jax.Array, dict[str, jax.Array]]:
        batch = ctx.batch
        ids_bt = sample_ids(batch, unit)
        num = ids_bt.shape[0] * (ids_bt.shape[1] + 1 if unit == "segment" else 1)
        tok_w = batch["weights"].astype(jnp.float32)
        nats = jax.ops.segment_sum((jax.lax.stop_gradient(nats_bt) * tok_w).ravel(), ids_bt.ravel(), num)
        count = jax.ops.segment_sum(tok_w.ravel(), ids_bt.ravel(), num)
        valid = count > 0
        w_n = sample_weights(
            nats / jnp.maximum(count, 1.0), valid, strategy=strategy, temperature=temperature, delta=delta
        )
        w_n = jnp.where(ctx.step < warmup_steps, valid.astype(jnp.float32), w_n)
        n = jnp.maximum(jnp.sum(valid), 1)
        metrics = {
            "reweight/w_max": jnp.max(w_n),
            "reweight/w_min": jnp.min(jnp.where(valid, w_n, jnp.inf)),
            "reweight/ess_fraction": jnp.square(jnp.sum(w_n)) / (n * jnp.maximum(jnp.sum(w_n**2), 1e-12)),
        }
        return w_n[ids_bt], metrics

    return fn


def last_layer_attention(intermediates: Mapping[str, Any]) -> jax.Array:
    """f32 [B, T, S]: the head-mean attention probabilities of the last layer, from the
    "attn_probs" sown by `rocket.layers.Attention` (per layer `layers_<i>`, or stacked [L, ...]
    under `scan_layers`)."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        keys = [getattr(k, "key", None) for k in path]
        if "attn_probs" not in keys:
            continue
        layer = max(
            (int(m.group(1)) for k in keys if (m := re.fullmatch(r"layers_(\d+)", str(k)))), default=-1
        )
        found.append((layer, leaf[-1] if leaf.ndim == 5 else leaf))  # scanned: [L, B, H, T, S]
    if not found:
        raise ValueError("no attention probabilities were sown: the model must sow 'attn_probs'")
    probs_bhts = max(found, key=lambda x: x[0])[1]
    return jnp.mean(probs_bhts.astype(jnp.float32), axis=1)


def sstoken_fn(*, keep: float, gamma: float, warmup_steps: int) -> WeightFn:
    """ssToken weights: the batch's `weights > 0` targets are the response; the optional batch key
    "prompt_mask" (bool [B, T], on input positions) marks the prompt the attention score reads.
    gamma is 0 (attention only) before `warmup_steps`, as in the official code."""

    def fn(nats_bt: jax.Array, ctx: LossContext) -> tuple[jax.Array, dict[str, jax.Array]]:
        if ctx.history_nats_bt is None:
            raise ValueError("ssToken needs the EMA history model's loss (LossTransforms.ema_decay)")
        attn = None
        g: jax.Array | float = gamma
        if gamma < 1.0 or warmup_steps > 0:
            if "prompt_mask" not in ctx.batch:
                raise ValueError("ssToken with token_gamma < 1 (or a warmup) needs batch['prompt_mask']")
            probs_bts = last_layer_attention(ctx.aux["intermediates"])
            attn = jnp.einsum("bts,bs->bt", probs_bts, ctx.batch["prompt_mask"].astype(jnp.float32))
            g = jnp.where(ctx.step < warmup_steps, 0.0, gamma)
        response = ctx.batch["weights"] > 0
        w_bt = sstoken_keep(
            nats_bt, ctx.history_nats_bt, attn, response, ctx.batch["segment_ids"], keep=keep, gamma=g
        )
        kept = jnp.sum(w_bt > 0) / jnp.maximum(jnp.sum(response), 1)
        return w_bt, {"sstoken/kept_fraction": kept}

    return fn


@dataclasses.dataclass(frozen=True)
class LossTransforms:
    """The composition the train step applies (module docstring). Build it from config with
    `from_config`, or directly from functions for research code."""

    batch_fns: tuple[BatchFn, ...] = ()
    weight_fns: tuple[WeightFn, ...] = ()
    aux_scales: tuple[tuple[str, float], ...] = ()  # (aux loss name, extra scale)
    ema_decay: float | None = None  # keep an EMA "history" copy of the params in TrainState
    capture_attention: bool = False  # run the model with attention probabilities sown
    # (name, scale, fn): scale * fn(params, batch, step, key) joins the objective (early-exit loss)
    extra_losses: tuple[tuple[str, float, ExtraLossFn], ...] = ()

    @classmethod
    def from_config(cls, lcfg: LossConfig, mcfg: ModelConfig) -> LossTransforms:
        batch_fns: list[BatchFn] = []
        if lcfg.meap_rate > 0:
            mask_id = mcfg.vocab_size - 1 if lcfg.meap_mask_id < 0 else lcfg.meap_mask_id
            batch_fns.append(
                lambda key, b, step: meap_mask_inputs(key, b, rate=lcfg.meap_rate, mask_id=mask_id)
            )
        weight_fns: list[WeightFn] = []
        if lcfg.reweight != "none":
            weight_fns.append(
                reweight_fn(
                    strategy=lcfg.reweight,
                    temperature=lcfg.reweight_temperature,
                    delta=lcfg.reweight_delta,
                    warmup_steps=lcfg.reweight_warmup_steps,
                    unit=lcfg.reweight_unit,
                )
            )
        sstoken = lcfg.token_select == "sstoken"
        if sstoken:
            weight_fns.append(
                sstoken_fn(keep=lcfg.token_keep, gamma=lcfg.token_gamma, warmup_steps=lcfg.token_warmup_steps)
            )
        extra = ()
        if lcfg.early_exit_scale > 0:
            fn = early_exit_loss_fn(
                mcfg,
                e_scale=lcfg.early_exit_e_scale,
                kind=lcfg.early_exit_curriculum,
                rotation=lcfg.early_exit_rotation,
                p_max=lcfg.layer_dropout,
            )
            extra = (("early_exit", lcfg.early_exit_scale, fn),)
        own = cls(
            extra_losses=extra,
            batch_fns=tuple(batch_fns),
            weight_fns=tuple(weight_fns),
            aux_scales=tuple(lcfg.aux_scale_map.items()),
            ema_decay=lcfg.token_ema_decay if sstoken else None,
            capture_attention=sstoken and (lcfg.token_gamma < 1.0 or lcfg.token_warmup_steps > 0),
        )
        user = [USER_TRANSFORMS.get(name)(lcfg, mcfg) for name in lcfg.transform_names]
        return functools.reduce(LossTransforms.then, user, own)

    def then(self, other: LossTransforms) -> LossTransforms:
        """This composition followed by `other`'s batch and weight functions (aux scales of both;
        one EMA history model at most)."""
        if self.ema_decay is not None and other.ema_decay is not None and self.ema_decay != other.ema_decay:
            raise ValueError(
                f"two transforms keep EMA history models with decays {self.ema_decay}, {other.ema_decay}"
            )
        return LossTransforms(
            batch_fns=self.batch_fns + other.batch_fns,
            weight_fns=self.weight_fns + other.weight_fns,
            aux_scales=self.aux_scales + other.aux_scales,
            ema_decay=self.ema_decay if self.ema_decay is not None else other.ema_decay,
            capture_attention=self.capture_attention or other.capture_attention,
            extra_losses=self.extra_losses + other.extra_losses,
        )

    def transform_batch(self, key: jax.Array, batch: Batch, step: jax.Array) -> Batch:
        for i, fn in enumerate(self.batch_fns):
            batch = fn(jax.random.fold_in(key, i), batch, step)
        return batch

    def token_weights(self, nats_bt: jax.Array, ctx: LossContext) -> tuple[jax.Array, dict[str, jax.Array]]:
        """stop_gradient(batch["weights"] * prod_i w_i) [B, T] and the weight functions' metrics."""
        w_bt = ctx.batch["weights"].astype(jnp.float32)
        metrics: dict[str, jax.Array] = {}
        for fn in self.weight_fns:
            w_i, m_i = fn(jax.lax.stop_gradient(nats_bt), ctx)
            w_bt = w_bt * w_i
            metrics.update(m_i)
        return jax.lax.stop_gradient(w_bt), metrics

    def scale_aux(self, aux_losses: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """The model's aux losses times their configured extra scales (default 1)."""
        scales = dict(self.aux_scales)
        unknown = sorted(set(scales) - set(aux_losses))
        if unknown:
            raise ValueError(
                f"loss.aux_scales names {unknown}, but the model's aux losses are {sorted(aux_losses)}"
            )
        return {name: value * scales.get(name, 1.0) for name, value in aux_losses.items()}


TransformBuilder = Callable[[LossConfig, ModelConfig], LossTransforms]


def register_transform(name: str, builder: TransformBuilder, *, overwrite: bool = False) -> TransformBuilder:
    """Makes `builder` selectable as `loss.transforms="name"` (comma-separated for several)."""
    return USER_TRANSFORMS.register(name, builder, overwrite=overwrite)
