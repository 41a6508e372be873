"""Load and save Hugging Face checkpoints: `load_hf(path) -> (ModelConfig, params, tokenizer)`, `save_hf`.

A model directory holds `config.json` (`rocket.interop.hf_config`), `model.safetensors` or sharded
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` (`rocket.interop.hf_weights`)
and `tokenizer.json` (`rocket.data.HFTokenizer`). A `path` that is not a directory but looks like a
hub id (`org/name`) is downloaded with `huggingface_hub` when it is installed and online. Every
problem (a missing file, a corrupt safetensors file, a shape mismatch, an unsupported model_type or
option, a tokenizer larger than the vocabulary) is one `InteropError` line naming the file or field.

    cfg, params, tok = load_hf("tests/fixtures/hf/qwen2")
    logits, aux = Transformer(cfg).apply({"params": params}, tokens, positions)
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket import parallel
from rocket.config import ModelConfig
from rocket.data import DataError, HFTokenizer, Tokenizer
from rocket.data.tokenizers import tokenizer_json
from rocket.interop.hf_config import InteropError, hf_config_from_model, model_config_from_hf
from rocket.interop.hf_weights import get_path, place, read_tensors, set_path, tensor_table, write_tensors
from rocket.models import Transformer


def resolve(path: str) -> str:
    """A local model directory for `path`: itself, or a hub id downloaded (config, safetensors and
    tokenizer files only) when `huggingface_hub` is installed and the hub is reachable."""
    if os.path.isdir(path):
        return path
    if path.count("/") != 1 or path.startswith((".", "/")):
        raise InteropError(f"{path}: no such model directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InteropError(
            f"{path}: not a local directory, and huggingface_hub is not installed to download it "
            "(pip install huggingface_hub)"
        ) from None
    try:
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors"])
    except Exception as e:  # offline, unknown repo, gated model: the hub client's many error types
        raise InteropError(
            f"{path}: cannot download from the Hugging Face hub (offline, or no such repo: {type(e).__name__})"
        ) from None


def read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise InteropError(f"{path}: missing")
    try:
        with open(path) as fh:
            return json.load(fh)
    except ValueError as e:
        raise InteropError(f"{path}: not valid JSON ({e})") from None


def param_shardings(cfg: ModelConfig, mesh: jax.sharding.Mesh) -> Any:
    """NamedShardings of the params of `Transformer(cfg)` under rocket's logical axis rules
    (`rocket.parallel.DEFAULT_RULES`), as the trainer places them."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    with nn.logical_axis_rules(parallel.DEFAULT_RULES):
        boxed = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.key(0), tokens, tokens))["params"]
        return parallel.logical_to_shardings(boxed, mesh)


def load_hf(
    path: str, *, mesh: jax.sharding.Mesh | None = None, dtype: str = "float32"
) -> tuple[ModelConfig, Any, HFTokenizer]:
    """The `ModelConfig`, params and tokenizer of a Hugging Face model directory (or hub id).

    `dtype` ("float32" or "bfloat16") is the params' storage and the compute dtype. With `mesh`
    every tensor goes straight to its shards under rocket's logical sharding rules, each device's
    block read from the file as the slice that holds it (without a mesh: one whole tensor at a time).
    """
    directory = resolve(path)
    config_file = os.path.join(directory, "config.json")
    hf = read_json(config_file)
    cfg = model_config_from_hf(hf, config_file, dtype=dtype)
    shardings = param_shardings(cfg, mesh) if mesh is not None else None
    params: dict[str, Any] = {}
    for spec, read in read_tensors(cfg, directory, dtype):
        sharding = None if shardings is None else get_path(shardings, spec.path)
        set_path(params, spec.path, place(spec.shape, read, sharding))
    eos = hf.get("eos_token_id")
    ids = dict(bos_id=hf.get("bos_token_id"), eos_id=eos[0] if isinstance(eos, list) else eos)
    tokenizer_file = os.path.join(directory, "tokenizer.json")
    try:
        tokenizer = HFTokenizer.load(tokenizer_file, **ids)
    except DataError as e:
        raise InteropError(f"{tokenizer_file}: {e}" if tokenizer_file not in str(e) else str(e)) from None
    if tokenizer.vocab_size > cfg.vocab_size:
        raise InteropError(
            f"{tokenizer_file}: {tokenizer.vocab_size} tokens, more than config.json's vocab_size={cfg.vocab_size}"
        )
    return cfg, params, tokenizer


def save_hf(cfg: ModelConfig, params: Any, tokenizer: Tokenizer | None, path: str) -> None:
    """Writes a directory `transformers.AutoModelForCausalLM.from_pretrained` loads and `load_hf`
    reads back bit-identically: config.json (the family `cfg`'s options name; a plain rocket dense
    model is a Llama), model.safetensors, and tokenizer.json + tokenizer_config.json (an
    `HFTokenizer` as loaded, or rocket's byte tokenizer as a byte-level BPE without merges)."""
    bos = None if tokenizer is None else tokenizer.bos_id
    eos = getattr(tokenizer, "eos_id", None)
    hf = hf_config_from_model(cfg, bos_id=bos, eos_id=eos)  # refuses what HF cannot express, first
    try:
        data = None if tokenizer is None else tokenizer_json(tokenizer)
    except DataError as e:
        raise InteropError(f"tokenizer: {e}") from None
    params = nn.meta.unbox(params)
    expected = {spec.path for spec in tensor_table(cfg)}
    found = {tuple(k.key for k in kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    if found != expected:
        raise InteropError(
            f"params: tree does not match the model config (extra/missing: {found ^ expected})"
        )
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(hf, fh, indent=2)
    write_tensors(cfg, params, path)
    if data is not None:
        with open(os.path.join(path, "tokenizer.json"), "wb") as fh:
            fh.write(data)
        written = HFTokenizer(data)
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update(
            {k: written.piece(i) for k, i in (("bos_token", bos), ("eos_token", eos)) if i is not None}
        )
        with open(os.path.join(path, "tokenizer_config.json"), "w") as fh:
            json.dump(config, fh, indent=2)
