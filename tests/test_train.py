"""Training: optimisation works, and a resumed (even SIGKILLed) run continues the same loss curve."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    to_config_dict,
)
from rocket.data import random_batch
from rocket.models import Transformer
from rocket.train.loop import train
from rocket.train.optim import make_optimizer, make_schedule
from rocket.train.step import init_state, make_train_step
from tests.helpers import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(b=4, t=32, seed=0):
    return random_batch(b, t, 60, seed=seed)  # a 58-token alphabet: learnable in a few steps


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(dtype):
    model = Transformer(ModelConfig(**TINY, dtype=dtype))
    tx, _ = make_optimizer(OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant"), total_steps=20)
    state = nn.meta.unbox(init_state(model, tx, jax.random.key(0), 32))
    step = jax.jit(make_train_step(model, tx))
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    losses = []
    for _ in range(15):
        state, m = step(state, batch, jax.random.key(0))
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.6 * losses[0], losses
    assert int(state.step) == 15
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))  # f32 master weights
    np.testing.assert_allclose(m["bits_per_byte"], m["loss"] / np.log(2), rtol=1e-5)  # 1 byte per token here


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "wsd"])
def test_schedules_warm_up_then_reach_their_floor(schedule):
    ocfg = OptimConfig(lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1, decay_fraction=0.5)
    sched = make_schedule(ocfg, 100)
    assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 1.0) < 1e-6
    final = float(sched(100))
    assert abs(final - (1.0 if schedule == "constant" else 0.1)) < 1e-6
    if schedule == "wsd":
        assert abs(float(sched(50)) - 1.0) < 1e-6 and float(sched(80)) < 1.0


def _corpus(tmp_path) -> str:
    """A small deterministic corpus folder under tmp_path (written once, reused by later calls)."""
    folder = tmp_path / "corpus"
    if folder.exists():
        return str(folder)
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = ["def", "return", "self", "import", "class", "for", "in", "if", "x", "y", "(", ")", ":", "\n    "]
    for i in range(24):
        (folder / f"mod_{i}.py").write_text(" ".join(rng.choice(words, size=400)))
    return str(folder)


def _config(tmp_path, workdir: str, steps: int = 24) -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(**{**TINY, "max_seq_len": 32}),
        data=DataConfig(
            corpus=_corpus(tmp_path),
            seq_len=32,
            batch_size=4,
            val_fraction=0.25,
            eval_batches=2,
            cache_dir=str(tmp_path / "cache"),
        ),
        optim=OptimConfig(lr=3e-3, warmup_steps=4),
        train=TrainConfig(
            steps=steps,
            workdir=workdir,
            log_every=1,
            eval_every=8,
            ckpt_every=4,
            sample_tokens=8,
            progress=False,
        ),
    )


def _train_losses(workdir: str) -> dict[int, float]:
    """Per-step train loss; on a resumed run, the last record of each step (the re-executed one)."""
    losses = {}
    with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split", "train") == "train" and "loss" in rec:
                losses[rec["step"]] = rec["loss"]
    return losses


def test_resume_after_sigkill_continues_the_uninterrupted_loss_curve(tmp_path):
    ref_dir, killed_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
    ref = train(_config(tmp_path, ref_dir))
    ref_losses = _train_losses(ref_dir)
    assert sorted(ref_losses) == list(range(1, 25))

    # The same run in a child process, SIGKILLed once its checkpoint of step 8 exists.
    cfg_json = json.dumps(to_config_dict(_config(tmp_path, killed_dir)).to_dict())
    # Steps are slowed down (0.15 s each) so the kill lands mid-run rather than after the end.
    code = (
        "import json, sys, time; from rocket.config import from_config_dict; import rocket.train.loop as L; "
        "step = L.Trainer.step; L.Trainer.step = lambda self, *a: (time.sleep(0.15), step(self, *a))[1]; "
        "L.train(from_config_dict(json.loads(sys.argv[1])))"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen(
        [sys.executable, "-c", code, cfg_json],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt_8 = os.path.join(killed_dir, "checkpoints", "8")
    deadline = time.time() + 240
    while not os.path.isdir(ckpt_8) and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # land somewhere in the middle of later steps / a later save
    killed_early = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert killed_early, "the child finished before it could be killed; the test did not test a kill"
    steps_on_disk = sorted(int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints")) if d.isdigit())
    assert steps_on_disk and steps_on_disk[-1] < 24

    resumed = train(_config(tmp_path, killed_dir))
    losses = _train_losses(killed_dir)
    assert sorted(losses) == list(range(1, 25))
    np.testing.assert_allclose(
        [losses[s] for s in range(1, 25)], [ref_losses[s] for s in range(1, 25)], rtol=1e-6
    )
    np.testing.assert_allclose(resumed["eval_loss"], ref["eval_loss"], rtol=1e-6)
    assert resumed["sample"] == ref["sample"]


def test_cli_reports_config_and_data_errors_in_one_line(tmp_path):
    cfg_file = os.path.join(ROOT, "experiments", "configs", "quickstart.py")
    run = lambda *flags: subprocess.run(
        [sys.executable, "-m", "rocket.train", "--config", cfg_file, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    res = run("--config.model.n_kv_heads=3")
    assert res.returncode == 2 and "n_kv_heads" in res.stderr and "Traceback" not in res.stderr
    res = run("--config.model.head_dim=15")  # an optional (None by default) field is overridable too
    assert res.returncode == 2 and "'model.head_dim'" in res.stderr and "even" in res.stderr
    res = run(f"--config.data.corpus={tmp_path / 'missing'}", f"--config.train.workdir={tmp_path / 'w'}")
    assert res.returncode == 2 and "missing" in res.stderr and "Traceback" not in res.stderr


def test_microbatched_step_equals_the_full_batch_step():
    # SGD, so the update is linear in the gradient (Adam's g / sqrt(g^2) magnifies rounding noise).
    model = Transformer(ModelConfig(**TINY))
    ocfg = OptimConfig(
        name="sgd", lr=1.0, warmup_steps=0, schedule="constant", weight_decay=0.0, grad_clip=0.0
    )
    tx, _ = make_optimizer(ocfg, total_steps=5)
    state = nn.meta.unbox(init_state(model, tx, jax.random.key(0), 32))
    batch = {k: jnp.asarray(v) for k, v in _batch(b=4).items()}
    batch["weights"] = batch["weights"].at[1, 20:].set(0.0)  # uneven real tokens across microbatches
    full_state, full = jax.jit(make_train_step(model, tx))(state, batch, jax.random.key(0))
    micro_state, micro = jax.jit(make_train_step(model, tx, microbatches=2))(state, batch, jax.random.key(0))
    for k in ("loss", "bits_per_byte", "grad_norm", "tokens"):
        np.testing.assert_allclose(micro[k], full[k], rtol=1e-5)
    chex.assert_trees_all_close(micro_state.params, full_state.params, atol=1e-6)


def test_weight_decay_skips_norm_scales_in_both_layer_layouts():
    from rocket.train.optim import _decay_mask

    for scan in (False, True):
        model = Transformer(ModelConfig(**TINY, scan_layers=scan))
        params = nn.meta.unbox(
            model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))
        )
        mask = jax.tree_util.tree_flatten_with_path(_decay_mask(params["params"]))[0]
        decayed = {jax.tree_util.keystr(p) for p, m in mask if m}
        assert decayed and not any("norm" in p for p in decayed), (scan, decayed)
        assert any("embedding" in p for p in decayed) and any("w_down" in p for p in decayed)
