"""Hugging Face `config.json` <-> `ModelConfig` for the Llama-style families.

  llama (Llama 1/2/3, SmolLM)  the baseline; Llama-3 RoPE scaling       -> arch.rope_scaling="llama3"
  mistral                      sliding-window attention                 -> arch.sliding_window
  qwen2 (Qwen2 / Qwen2.5)      q/k/v biases                             -> arch.qkv_bias
  qwen3                        q/k RMSNorm, head_dim independent of D   -> arch.qk_norm, head_dim
  gemma                        1 + w norms, sqrt(D) embedding scale,    -> arch.norm_offset, embed_scale,
                               tanh-GeLU GeGLU, head_dim independent       mlp_activation="gelu_tanh"

Anything rocket does not compute exactly (another model_type, a RoPE scaling type other than
"default"/"llama3", output or MLP biases, Qwen's per-layer sliding windows) is refused with one
line naming the field; nothing is approximated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rocket.config import ArchConfig, ModelConfig

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
}
_TIED_BY_DEFAULT = {"gemma"}  # the transformers config classes' defaults for tie_word_embeddings
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh", "gelu")  # gemma: "gelu" runs as the tanh form in HF


class InteropError(ValueError):
    """A model directory, file or field rocket cannot read or write exactly (one line, naming it)."""


def _rope(hf: dict[str, Any], where: str) -> tuple[float, ArchConfig]:
    """(theta, rope fields of ArchConfig) from `rope_parameters` (transformers >= 5) or the older
    `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, ArchConfig()
    if kind != "llama3":
        raise InteropError(
            f"{where}: rope scaling type {kind!r} is not supported (supported: default, llama3)"
        )
    return theta, ArchConfig(
        rope_scaling="llama3",
        rope_factor=float(params["factor"]),
        rope_low_freq_factor=float(params["low_freq_factor"]),
        rope_high_freq_factor=float(params["high_freq_factor"]),
        rope_original_max_len=int(params["original_max_position_embeddings"]),
    )


def _refuse_if(cond: bool, where: str, field: str, why: str) -> None:
    if cond:
        raise InteropError(f"{where}: field {field!r} {why}")


def model_config_from_hf(hf: dict[str, Any], where: str, *, dtype: str = "float32") -> ModelConfig:
    """The `ModelConfig` of a transformers config dict (`where`: the file, for error messages)."""
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise InteropError(
            f"{where}: model_type {family!r} is not supported (supported: {', '.join(FAMILIES)})"
        )
    try:
        theta, arch = _rope(hf, where)
        d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        act = hf.get("hidden_activation") or hf.get("hidden_act", "silu")
        _refuse_if(hf.get("mlp_bias", False), where, "mlp_bias", "is true: MLP biases are not supported")
        _refuse_if(
            hf.get("attention_bias", False),
            where,
            "attention_bias",
            "is true: output-projection biases are not supported",
        )
        _refuse_if(
            family in ("qwen2", "qwen3") and hf.get("use_sliding_window", False),
            where,
            "use_sliding_window",
            "is true: per-layer sliding windows are not supported",
        )
        if family == "gemma":
            _refuse_if(
                act not in _GELU_TANH, where, "hidden_act", f"is {act!r}; gemma needs gelu_pytorch_tanh"
            )
            arch = dataclasses.replace(arch, norm_offset=True, embed_scale=True, mlp_activation="gelu_tanh")
        else:
            _refuse_if(
                act != "silu", where, "hidden_act", f"is {act!r}; only 'silu' is supported for {family}"
            )
        if family == "mistral" and hf.get("sliding_window") is not None:
            arch = dataclasses.replace(arch, sliding_window=int(hf["sliding_window"]))
        if family == "qwen2":
            arch = dataclasses.replace(arch, qkv_bias=True)
        if family == "qwen3":
            arch = dataclasses.replace(arch, qk_norm=True)
        head_dim = hf.get("head_dim")
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]),
            d_model=d,
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=None if head_dim in (None, d // heads) else int(head_dim),
            d_ff=int(hf["intermediate_size"]),
            max_seq_len=int(hf.get("max_position_embeddings", 4096)),
            rope_theta=theta,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", family in _TIED_BY_DEFAULT)),
            dtype=dtype,
            param_dtype=dtype,
            arch=arch,
        )
    except KeyError as e:
        raise InteropError(f"{where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, InteropError):
            raise
        raise InteropError(f"{where}: {e}") from None


def family_of(cfg: ModelConfig) -> str:
    """The transformers model_type that computes exactly what `cfg` computes (InteropError if none)."""
    arch = cfg.arch
    unsupported = [
        ("mod.pattern", set(cfg.mod.kinds) != {"dense"}),
        ("mor.sharing", cfg.mor.enabled),
        ("projection.kind", cfg.projection.kind != "dense"),
        ("attention.kind", cfg.attention.kind != "softmax"),
        ("embedding.kind", cfg.embedding.kind != "learned"),
    ]
    for field, bad in unsupported:
        if bad:
            raise InteropError(f"model.{field}: not expressible as a Hugging Face checkpoint")
    gemma = (arch.norm_offset, arch.embed_scale, arch.mlp_activation == "gelu_tanh")
    families = {
        "gemma": all(gemma),
        "qwen3": arch.qk_norm,
        "qwen2": arch.qkv_bias,
        "mistral": arch.sliding_window is not None,
    }
    chosen = [f for f, on in families.items() if on]
    if len(chosen) > 1 or (any(gemma) and not all(gemma)) or (arch.rope_scaling != "none" and chosen):
        raise InteropError(f"model.arch: {arch} mixes options of several families; no single HF family")
    return chosen[0] if chosen else "llama"


def hf_config_from_model(cfg: ModelConfig, *, bos_id: int | None, eos_id: int | None) -> dict[str, Any]:
    """A transformers config dict for `cfg` (legacy `rope_theta` / `rope_scaling` keys, which every
    transformers version reads)."""
    family = family_of(cfg)
    arch = cfg.arch
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[family]],
        "model_type": family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.resolved_d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.resolved_head_dim,
        "hidden_act": "gelu_pytorch_tanh" if family == "gemma" else "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": cfg.param_dtype,
    }
    if arch.rope is not None:
        factor, low, high, original = arch.rope
        hf["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        }
    if family == "mistral":
        hf["sliding_window"] = arch.sliding_window
    if family == "llama":
        hf["mlp_bias"] = False
    return hf
