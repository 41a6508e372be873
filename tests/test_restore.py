"""rocket.train.restore.restore_run (and rocket.train.grow.grow_checkpoint) on a tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rocket.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    override,
)
from rocket.data import ByteTokenizer
from rocket.models import Transformer
from rocket.models.tokenformer import grow
from rocket.parallel import make_mesh
from rocket.train import loop, optim
from rocket.train.checkpoint import Checkpointer, CheckpointError
from rocket.train.grow import grow_checkpoint
from rocket.train.restore import restore_run

MODEL = dict(vocab_size=258, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
TOKENFORMER = dict(projection=dict(kind="pattention", param_tokens=16, param_tokens_ffn=24))


def _corpus(folder: Path) -> str:
    """A small deterministic corpus of Python-like text."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = ["def", "return", "self", "import", "class", "for", "in", "if", "x", "(", ")", ":", "\n    "]
    for i in range(8):
        (folder / f"mod_{i}.py").write_text(" ".join(rng.choice(words, size=300)))
    return str(folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, dict[int, Any]]:
    """A 4-step TokenFormer run by `rocket.train.loop.train` (checkpoints at steps 2 and 4): its
    config and the trainer's params after every step (recorded on the host as the loop runs)."""
    root = tmp_path_factory.mktemp("restore")
    cfg = ExperimentConfig(
        model=override(ModelConfig(**MODEL), TOKENFORMER),
        data=DataConfig(
            corpus=_corpus(root / "corpus"),
            seq_len=32,
            batch_size=2,
            val_fraction=0.25,
            eval_batches=1,
            cache_dir=str(root / "cache"),
        ),
        optim=OptimConfig(lr=3e-3, warmup_steps=1),
        train=TrainConfig(
            steps=4, workdir=str(root / "run"), eval_every=4, ckpt_every=2, sample_tokens=0, progress=False
        ),
    )
    params: dict[int, Any] = {}
    step = loop.Trainer.step

    def recording_step(self: loop.Trainer, state: Any, batch: dict) -> tuple[Any, dict]:
        state, metrics = step(self, state, batch)
        params[int(state.step)] = jax.device_get(state.params)  # before the next step donates it
        return state, metrics

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop.Trainer, "step", recording_step)
        loop.train(cfg)
    return cfg, params


def assert_bitwise_equal(a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_run_returns_the_trainers_params_step_and_config(trained):
    cfg, params = trained
    run = restore_run(cfg.train.workdir)
    assert run.step == 4 and run.config == cfg
    assert_bitwise_equal(run.params, params[4])
    assert isinstance(run.model, Transformer) and run.model.cfg == cfg.model
    assert isinstance(run.tokenizer(), ByteTokenizer)
    # Placed as the trainer places them: the same logical-axis shardings on the same mesh.
    trainer_shardings = loop.Trainer.build(cfg).state_shardings.params
    assert jax.tree.map(lambda x: x.sharding, run.params) == trainer_shardings
    # The checkpoint directory itself works too; an earlier kept step restores its own params.
    early = restore_run(str(Path(cfg.train.workdir) / "checkpoints"), step=2)
    assert early.step == 2
    assert_bitwise_equal(early.params, params[2])


def test_restore_run_builds_no_optimizer_and_reads_only_the_params(trained, monkeypatch):
    cfg, params = trained

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("restore_run must not build an optimizer or a Trainer")

    for module in (optim, loop):
        monkeypatch.setattr(module, "make_optimizer", forbidden)
    monkeypatch.setattr(loop.Trainer, "build", forbidden)
    read: list[str] = []
    deserialize = ocp.type_handlers.ArrayHandler.deserialize

    async def spy(self: Any, infos: Any, args: Any = None) -> Any:
        read.extend(info.name for info in infos)
        return await deserialize(self, infos, args)

    monkeypatch.setattr(ocp.type_handlers.ArrayHandler, "deserialize", spy)
    run = restore_run(cfg.train.workdir)
    assert_bitwise_equal(run.params, params[4])
    assert len(read) == len(jax.tree.leaves(params[4])), read  # the optimizer state stays on disk
    assert all(name.startswith("params.") for name in read), read


def test_restore_run_errors_name_the_path(trained, tmp_path):
    cfg, _ = trained
    missing = tmp_path / "missing"
    empty = tmp_path / "empty"
    empty.mkdir()
    no_config = tmp_path / "no_config"
    with Checkpointer(str(no_config), async_save=False) as ckpt:
        ckpt.save(1, {"params": {"w": np.zeros(2, np.float32)}}, data_state=None)
    cases = [
        (str(missing), None, "does not exist"),
        (str(empty), None, "No checkpoint found"),
        (cfg.train.workdir, 3, "No checkpoint step 3"),
        (str(no_config), None, "has no saved config"),
    ]
    for path, step, message in cases:
        with pytest.raises(CheckpointError, match=message) as e:
            restore_run(path, step)
        assert path in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_grow_checkpoint_restores_as_the_grown_run(trained, tmp_path):
    cfg, params = trained
    dst = str(tmp_path / "grown")
    new_cfg = grow_checkpoint(cfg.train.workdir, cfg, dst, 24)
    assert new_cfg.model.projection.param_tokens == 24 and new_cfg.model.projection.param_tokens_ffn == 36
    run = restore_run(dst)
    assert run.step == 4 and run.config == new_cfg and run.config.train.workdir == dst
    assert_bitwise_equal(run.params, grow(params[4], cfg.model, 24)[0])


LEGACY_RUN = os.path.join(os.path.dirname(__file__), "fixtures", "legacy_flat_config_run")


def test_a_checkpoint_written_before_the_config_nesting_restores_and_computes_the_same_logits():
    """tests/fixtures/legacy_flat_config_run: 2 steps trained by rocket before the model config was
    nested (flat names: block_pattern, mod_capacity, attention="softplus", softplus_power), with the
    logits that version computed (routing="causal") on tokens 0..19."""
    run = restore_run(LEGACY_RUN, mesh=make_mesh(ParallelConfig()))
    model = run.config.model
    assert (model.mod.pattern, model.mod.capacity) == ("dense,mod", 0.5)
    assert (model.attention.kind, model.attention.softplus_power) == ("softplus", 2.0)
    tokens = jnp.arange(20, dtype=jnp.int32)[None]
    logits, _ = run.model.apply({"params": run.params}, tokens, jnp.arange(20)[None], routing="causal")
    reference = np.load(os.path.join(LEGACY_RUN, "reference_logits.npy"))
    np.testing.assert_allclose(np.asarray(logits), reference, rtol=1e-5, atol=1e-5)
