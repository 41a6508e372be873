"""Config validation: every bad value raises ConfigError naming its field."""

import pytest

from rocket.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    from_config_dict,
    to_config_dict,
)
from rocket.parallel import resolve_mesh_shape


def test_round_trip_through_ml_collections():
    cfg = ExperimentConfig(model=ModelConfig(d_model=96, n_heads=3, n_kv_heads=1))
    assert from_config_dict(to_config_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "values, field",
    [
        ({"model": {"d_modle": 64}}, "model.d_modle"),
        ({"optimizer": {}}, "optimizer"),
        ({"model": {"d_model": 100, "n_heads": 3}}, "model.d_model"),
        ({"model": {"n_heads": 4, "n_kv_heads": 3}}, "model.n_kv_heads"),
        ({"model": {"max_seq_len": 64}, "data": {"seq_len": 128}}, "data.seq_len"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
        ({"data": {"val_fraction": 0.0}}, "data.val_fraction"),
        ({"optim": {"min_lr_ratio": -0.1}}, "optim.min_lr_ratio"),
        ({"optim": {"decay_fraction": 0.0}}, "optim.decay_fraction"),
        ({"train": {"sample_top_p": 0.0}}, "train.sample_top_p"),
        ({"model": {"remat": "sometimes"}}, "model.remat"),
        ({"model": {"dtype": "float16"}}, "model.dtype"),
        ({"data": {"tokenizer": "wordpiece"}}, "data.tokenizer"),
        ({"parallel": {"data": -1, "fsdp": -1}}, "parallel.data"),
        ({"data": {"batch_size": 6}, "train": {"microbatches": 4}}, "train.microbatches"),
        ({"model": {"d_model": "abc"}}, "model.d_model"),
        ({"model": {"n_layers": 2.5}}, "model.n_layers"),
        ({"train": {"progress": 1}}, "train.progress"),
        ({"train": {"seed": -1}}, "train.seed"),
        ({"data": {"spm_vocab_size": 100}}, "data.spm_vocab_size"),
        ({"model": 3}, "model"),
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        from_config_dict(values)


def test_odd_head_dim_is_rejected_for_rope():
    with pytest.raises(ConfigError, match="head_dim"):
        ModelConfig(d_model=60, n_heads=4, n_kv_heads=2)  # head_dim 15


def test_defaults_are_valid_and_derived_sizes():
    cfg = ModelConfig(d_model=256, n_heads=4)
    assert cfg.resolved_head_dim == 64
    assert cfg.resolved_d_ff == 704  # 8/3 * 256 = 682.7, rounded up to a multiple of 64
    assert DataConfig().tokenizer == "byte" and OptimConfig().name == "adamw"


def test_mesh_shape_resolution():
    assert resolve_mesh_shape(ParallelConfig(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    assert resolve_mesh_shape(ParallelConfig(data=2, fsdp=2, tensor=2), 8) == (2, 2, 2)
    with pytest.raises(ConfigError, match="parallel"):
        resolve_mesh_shape(ParallelConfig(data=3, fsdp=1, tensor=1), 8)
    with pytest.raises(ConfigError, match="parallel"):
        resolve_mesh_shape(ParallelConfig(data=-1, fsdp=3, tensor=1), 8)
