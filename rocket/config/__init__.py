"""Typed, validated configuration for rocket: one file per section.

Experiments are written as `ml_collections.ConfigDict` files (`experiments/configs/*.py`, each with
a `get_config()`), overridden from the command line with `--config.model.mod.capacity=0.25`
(`rocket.config.cli`) and turned into frozen dataclasses here. Every section validates itself on
construction and names the offending dotted field in its error, so a typo or an inconsistent value
fails before anything is compiled.

Sections: `model` (`ModelConfig`, with the feature sections `attention`, `projection`,
`embedding`, `mod`, `router`, `mor`, `arch`), `data`, `optim`, `parallel`, `train`, `loss`, gathered in
`ExperimentConfig`. The choices a field allows are declared once, next to the field (`choice`);
the open ones are registries a user project extends (`ATTENTION_KINDS`, `PROJECTION_KINDS`,
`USER_TRANSFORMS`; `docs/extending.md`).
"""

from rocket.config.arch import ArchConfig
from rocket.config.base import ConfigError, Registry, Section, choices_of
from rocket.config.data import DataConfig
from rocket.config.depth import ModConfig, MoRConfig, RouterConfig, prd_capacities
from rocket.config.experiment import ExperimentConfig
from rocket.config.kinds import (
    ATTENTION_KINDS,
    PROJECTION_KINDS,
    AttentionConfig,
    EmbeddingConfig,
    ProjectionConfig,
)
from rocket.config.loss import USER_TRANSFORMS, LossConfig, parse_aux_scales
from rocket.config.model import ModelConfig
from rocket.config.optim import OptimConfig
from rocket.config.parallel import ParallelConfig
from rocket.config.serialize import (
    from_config_dict,
    from_dict,
    override,
    saved_config,
    to_config_dict,
    to_dict,
)
from rocket.config.train import TrainConfig

__all__ = [
    "ConfigError",
    "Registry",
    "Section",
    "choices_of",
    "ModelConfig",
    "AttentionConfig",
    "ProjectionConfig",
    "EmbeddingConfig",
    "ModConfig",
    "RouterConfig",
    "MoRConfig",
    "ArchConfig",
    "DataConfig",
    "OptimConfig",
    "LossConfig",
    "ParallelConfig",
    "TrainConfig",
    "ExperimentConfig",
    "ATTENTION_KINDS",
    "PROJECTION_KINDS",
    "USER_TRANSFORMS",
    "prd_capacities",
    "parse_aux_scales",
    "from_dict",
    "to_dict",
    "from_config_dict",
    "to_config_dict",
    "override",
    "saved_config",
]
