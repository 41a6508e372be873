"""Training from a Hugging Face checkpoint: `--config.model.init_from=hf:PATH`.

`hf_experiment(cfg)` replaces the model's architecture with the checkpoint's config.json (vocabulary,
widths, depth, heads, RoPE, norms and the family options of `model.arch`), keeping the run's own
numerics and execution choices (`dtype`, `param_dtype`, `remat`, `attention.impl`) and resolving a
hub id to its local download, so the config saved with every checkpoint describes the model that
was trained. The data is tokenized with the checkpoint's tokenizer.json (`tokenizer_name`), and a
fresh run starts from its weights (`initial_params`, placed on the run's mesh); a resumed run
restores its own checkpoint as usual. Every training transform applies unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from rocket.config import ConfigError, ExperimentConfig
from rocket.interop.hf import load_hf, read_json, resolve
from rocket.interop.hf_config import InteropError, model_config_from_hf

PREFIX = "hf:"


def hf_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with `model` read from `model.init_from`'s config.json (module docstring)."""
    mc = cfg.model
    if not mc.init_from:
        return cfg
    if mc.scan_layers:
        raise ConfigError(
            "model.scan_layers", "is not supported with model.init_from (per-layer checkpoints)"
        )
    try:
        directory = os.path.abspath(resolve(mc.init_from[len(PREFIX) :]))
        config_file = os.path.join(directory, "config.json")
        hf = model_config_from_hf(read_json(config_file), config_file, dtype=mc.param_dtype)
    except InteropError as e:
        raise ConfigError("model.init_from", str(e)) from None
    model = dataclasses.replace(
        hf, dtype=mc.dtype, remat=mc.remat, attention=mc.attention, init_from=PREFIX + directory
    )
    return dataclasses.replace(cfg, model=model)


def tokenizer_name(cfg: ExperimentConfig) -> str:
    """The `rocket.data.get_tokenizer` name of the run: the checkpoint's tokenizer.json with
    `init_from` (after `hf_experiment`), else `data.tokenizer`."""
    return cfg.model.init_from or cfg.data.tokenizer


def initial_params(cfg: ExperimentConfig, mesh: jax.sharding.Mesh) -> Any:
    """The checkpoint's params, placed on `mesh` with rocket's sharding rules."""
    try:
        return load_hf(cfg.model.init_from[len(PREFIX) :], mesh=mesh, dtype=cfg.model.param_dtype)[1]
    except InteropError as e:
        raise ConfigError("model.init_from", str(e)) from None
