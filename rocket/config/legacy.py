"""Config names before the model's feature sections were nested, and their new paths.

Checkpoints written with the flat names restore (`upgrade` rewrites their saved config); a config
file or command-line override that still uses a flat name fails with one line naming the new path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# old model.<name> -> new path below model
MODEL_RENAMES: dict[str, str] = {
    "attention": "attention.kind",
    "softplus_power": "attention.softplus_power",
    "attention_impl": "attention.impl",
    "projection": "projection.kind",
    "n_param_tokens": "projection.param_tokens",
    "n_param_tokens_ffn": "projection.param_tokens_ffn",
    "pattention_norm": "projection.norm",
    "pattention_scale_tokens": "projection.scale_tokens",
    "pattention_scale_tokens_ffn": "projection.scale_tokens_ffn",
    "embedding": "embedding.kind",
    "lexinvariant_learned_prob": "embedding.learned_prob",
    "block_pattern": "mod.pattern",
    "mod_capacity": "mod.capacity",
    "mod_schedule": "mod.schedule",
    "mod_prd_max": "mod.prd_max",
    "mod_prd_min": "mod.prd_min",
    "mod_gate": "mod.gate",
    "mod_gate_alpha": "mod.gate_alpha",
    "mod_string": "mod.string",
    "mod_aux_coef": "mod.aux_coef",
    "router_causal": "router.causal",
    "router_predictor_hidden": "router.predictor_hidden",
    "mor_sharing": "mor.sharing",
    "mor_recursions": "mor.recursions",
    "mor_router": "mor.router",
    "mor_alpha": "mor.alpha",
    "mor_temp": "mor.temp",
    "mor_token_gate": "mor.token_gate",
    "mor_aux_coef": "mor.aux_coef",
    "mor_z_loss_coef": "mor.z_loss_coef",
    "mor_balance_coef": "mor.balance_coef",
    "mor_kv": "mor.kv",
}


def renamed(is_model: bool, key: str, value: Any) -> str | None:
    """The new path (below `model`) of `key` if it is a flat model name from before the nesting (a
    `model.attention` that holds a string, not a section, is the old flat field), else None."""
    if not is_model or key not in MODEL_RENAMES or isinstance(value, Mapping):
        return None
    return MODEL_RENAMES[key]


def upgrade(values: Mapping[str, Any]) -> dict[str, Any]:
    """A saved experiment config (a nested dict) with flat model names moved to their sections."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}
    model = out.get("model")
    if not isinstance(model, dict):
        return out
    flat = {k: model.pop(k) for k in list(model) if renamed(True, k, model[k]) is not None}
    for key, value in flat.items():
        section, field = MODEL_RENAMES[key].split(".")
        model.setdefault(section, {})[field] = value
    return out
