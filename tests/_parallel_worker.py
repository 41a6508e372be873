"""Child process for tests/test_parallel.py: runs rocket's Trainer on simulated CPU meshes.

Run as `python tests/_parallel_worker.py MODE`; the parent sets XLA_FLAGS (fake device count) and
JAX_PLATFORMS=cpu in the environment, since both must be fixed before jax is imported. Prints one
line `RESULT {json}` on stdout.

  sharded    8 fake devices: the same 3 train steps on a 1-device mesh, data=4 x fsdp=2 and
             data=2 x fsdp=2 x tensor=2 (final params, metrics, sharding facts), the 4-device
             reference for the multihost mode, and logical_to_shardings checks.
  multihost  one process of a jax.distributed job (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
             JAX_PROCESS_ID): trains the same steps on its process-local rows of the global batch.
  train CFG  `rocket.train.loop.train` on the JSON config CFG (one process, or one process of a
             jax.distributed job when the JAX_* variables are set). Like `python -m rocket.train`,
             a ConfigError / DataError / CheckpointError prints `error: ...` and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get("ROCKET_TEST_JAX_CACHE", os.path.expanduser("~/.cache/rocket/jax_test_cache")),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_default_matmul_precision", "float32")

import numpy as np  # noqa: E402

from rocket import parallel  # noqa: E402
from rocket.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,  # noqa: E402
    ParallelConfig,
    TrainConfig,
)

BATCH, SEQ, VOCAB, STEPS = 8, 32, 258, 3
MULTIHOST_MESH = ParallelConfig(data=1, fsdp=2, tensor=2)  # fsdp across the 2 processes, tensor within


def make_cfg(pcfg: ParallelConfig) -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=SEQ),
        data=DataConfig(seq_len=SEQ, batch_size=BATCH),
        optim=OptimConfig(lr=1e-3, warmup_steps=0),
        parallel=pcfg,
        train=TrainConfig(steps=10, seed=0, sample_tokens=0, progress=False),
    )


def make_batches(n: int = STEPS, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Packed [BATCH, SEQ] batches: 2 documents per row, then padding (segment 0, weight 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tokens = rng.integers(2, VOCAB, size=(BATCH, SEQ + 1)).astype(np.int32)
        seg = np.zeros((BATCH, SEQ), np.int32)
        pos = np.zeros((BATCH, SEQ), np.int32)
        for r in range(BATCH):
            a = int(rng.integers(6, 14))  # first document
            b = int(rng.integers(a + 6, SEQ - 2))  # second document ends; the rest is padding
            seg[r, :a], seg[r, a:b] = 1, 2
            pos[r, :a], pos[r, a:b] = np.arange(a), np.arange(b - a)
        real = seg > 0
        out.append(
            {
                "inputs": np.where(real, tokens[:, :-1], 0).astype(np.int32),
                "targets": np.where(real, tokens[:, 1:], 0).astype(np.int32),
                "positions": pos,
                "segment_ids": seg,
                "weights": real.astype(np.float32),
                "num_bytes": real.astype(np.int32),
            }
        )
    return out


def run(pcfg: ParallelConfig, devices, batches, *, local_rows: slice | None = None):
    """Builds, inits (seed 0) and trains STEPS steps.

    Returns (trainer, initial params as numpy, final state, metrics per step)."""
    from rocket.train.loop import Trainer

    trainer = Trainer.build(make_cfg(pcfg), parallel.make_mesh(pcfg, devices=devices))
    state = trainer.init(0)
    init_params = gather(state.params)  # before the steps: train_step donates the state
    local = lambda b: b if local_rows is None else {k: v[local_rows] for k, v in b.items()}
    metrics = []
    for b in batches:
        state, m = trainer.step(state, local(b))
        metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
    metrics.append(trainer.evaluate(state.params, [local(b) for b in batches[:2]]))  # last entry: eval
    return trainer, init_params, state, metrics


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(jax.device_get(x)) for p, x in leaves}


def gather(tree) -> dict[str, np.ndarray]:
    """Per-leaf global numpy values; multi-host arrays (not fully addressable) via process_allgather."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return flat(tree)


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict:
    """Max |ref - got| over all leaves, where, and how many elements differ by more than 1e-5."""
    assert ref.keys() == got.keys(), (sorted(ref), sorted(got))
    diffs = {k: np.abs(ref[k].astype(np.float64) - got[k]) for k in ref}
    maxes = {k: float(d.max()) if d.size else 0.0 for k, d in diffs.items()}
    worst = max(maxes, key=maxes.get)
    return {
        "max_abs_diff": maxes[worst],
        "worst_leaf": worst,
        "n_over_1e-5": int(sum((d > 1e-5).sum() for d in diffs.values())),
        "n": int(sum(d.size for d in diffs.values())),
    }


def save(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` to $ROCKET_PARALLEL_OUT/name.npz (when set) for the parent to compare."""
    if os.environ.get("ROCKET_PARALLEL_OUT"):
        np.savez(os.path.join(os.environ["ROCKET_PARALLEL_OUT"], name + ".npz"), **arrays)


def sharding_facts(trainer, state, batch) -> dict:
    """What is actually sharded: embed table, its Adam moments, the step counter and the batch."""
    facts = {}
    emb = state.params["embed"]["embedding"]
    facts["embed_spec"] = str(emb.sharding.spec)
    facts["embed_shape"] = list(emb.shape)
    facts["embed_shard_shapes"] = sorted({tuple(s.data.shape) for s in emb.addressable_shards})
    facts["embed_n_devices"] = len(emb.sharding.device_set)
    moments = {}
    for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
        ks = jax.tree_util.keystr(path)
        if "embedding" in ks and (".mu" in ks or ".nu" in ks):
            moments[ks] = {
                "spec": str(x.sharding.spec),
                "shard_shapes": sorted({tuple(s.data.shape) for s in x.addressable_shards}),
            }
    facts["embed_moments"] = moments
    counts = [
        x
        for p, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
        if "count" in jax.tree_util.keystr(p)
    ]
    facts["count_device_sets"] = sorted({len(x.sharding.device_set) for x in counts})
    facts["count_replicated"] = all(x.sharding.is_fully_replicated for x in counts)
    facts["param_specs"] = {
        k: str(x.sharding.spec)
        for k, x in (
            (jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]
        )
    }
    abstract = jax.tree.leaves(trainer.abstract_state())
    facts["abstract_state_shardings_match"] = all(
        a.sharding.is_equivalent_to(x.sharding, x.ndim) and a.shape == x.shape
        for a, x in zip(abstract, jax.tree.leaves(state), strict=True)
    )
    gb = parallel.global_batch(batch, trainer.mesh)["inputs"]
    facts["batch_spec"] = str(gb.sharding.spec)
    facts["batch_shard_shapes"] = sorted({tuple(s.data.shape) for s in gb.addressable_shards})
    facts["batch_n_devices"] = len(gb.sharding.device_set)
    return facts


def rules_checks(devices) -> dict:
    """logical_to_shardings on hand-made boxed leaves: divisible dims shard, the rest replicate."""
    import flax.linen as nn

    mesh = parallel.make_mesh(ParallelConfig(data=1, fsdp=2, tensor=4), devices=devices)
    sds = lambda *s: jax.ShapeDtypeStruct(s, np.float32)
    tree = {
        "emb258": nn.Partitioned(sds(258, 64), names=("vocab", "embed")),
        "emb256": nn.Partitioned(sds(256, 64), names=("vocab", "embed")),
        "odd_embed": nn.Partitioned(sds(258, 63), names=("vocab", "embed")),
        "wq": nn.Partitioned(sds(64, 4, 16), names=("embed", "heads", "head_dim")),
        "pattention_k": nn.Partitioned(sds(128, 64), names=("param_tokens", "embed")),
        "scale": nn.Partitioned(
            sds(
                64,
            ),
            names=("norm",),
        ),
        "count": sds(),
    }
    sh = parallel.logical_to_shardings(tree, mesh)
    out = {k: str(v.spec) for k, v in sh.items()}
    try:  # 6 rows cannot be split over data*fsdp = 8
        parallel.global_batch(
            {"inputs": np.zeros((6, SEQ), np.int32)},
            parallel.make_mesh(ParallelConfig(data=4, fsdp=2, tensor=1), devices=devices),
        )
        out["batch_error"] = None
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out["batch_error"] = f"{type(e).__name__}: {e}"
    return out


def mode_sharded() -> dict:
    t0 = time.time()
    devs = jax.devices()
    assert len(devs) == 8, (
        f"expected 8 fake CPU devices, got {len(devs)} (XLA_FLAGS={os.environ.get('XLA_FLAGS')})"
    )
    batches = make_batches()
    out: dict = {"runs": {}}
    _, ref_init, ref_state, ref_metrics = run(ParallelConfig(data=1, fsdp=1, tensor=1), devs[:1], batches)
    ref_params, ref_opt = gather(ref_state.params), gather(ref_state.opt_state)
    out["runs"]["1dev"] = {"metrics": ref_metrics, "step": int(ref_state.step)}
    for name, pcfg, n in (
        ("dp4_fsdp2", ParallelConfig(data=4, fsdp=2, tensor=1), 8),
        ("dp2_fsdp2_tp2", ParallelConfig(data=2, fsdp=2, tensor=2), 8),
        ("multihost_ref", MULTIHOST_MESH, 4),
    ):
        trainer, init, state, metrics = run(pcfg, devs[:n], batches)
        params = gather(state.params)
        r = {
            "metrics": metrics,
            "step": int(state.step),
            "mesh": dict(trainer.mesh.shape),
            "init_params": compare(ref_init, init),
            "params": compare(ref_params, params),
            "opt_state": compare(ref_opt, gather(state.opt_state)),
        }
        if name == "multihost_ref":
            save(name, params)
        else:
            r["sharding"] = sharding_facts(trainer, state, batches[0])
        out["runs"][name] = r
    out["rules"] = rules_checks(devs)
    out["seconds"] = time.time() - t0
    return out


def mode_multihost() -> dict:
    t0 = time.time()
    assert parallel.maybe_initialize_distributed(), "JAX_COORDINATOR_ADDRESS is not set"
    pid, nproc = jax.process_index(), jax.process_count()
    n_local = BATCH // nproc
    rows = slice(pid * n_local, (pid + 1) * n_local)
    batches = make_batches()
    trainer, _, state, metrics = run(MULTIHOST_MESH, jax.devices(), batches, local_rows=rows)
    # global_batch's contract: process i's rows become global rows [i * B_local, (i + 1) * B_local)
    gb = parallel.global_batch({k: v[rows] for k, v in batches[0].items()}, trainer.mesh)["inputs"]
    held = sorted(
        {
            (s.index[0].start or 0, BATCH if s.index[0].stop is None else s.index[0].stop)
            for s in gb.addressable_shards
        }
    )
    params = gather(state.params)
    save(f"multihost_p{pid}", params)
    return {
        "process_index": pid,
        "process_count": nproc,
        "local_devices": jax.local_device_count(),
        "global_devices": jax.device_count(),
        "mesh": dict(trainer.mesh.shape),
        "metrics": metrics,
        "step": int(state.step),
        "held_rows": held,
        "collectives": str(jax.config.jax_cpu_collectives_implementation),
        "seconds": time.time() - t0,
    }


def mode_train() -> dict:
    from rocket.config import ConfigError, from_config_dict
    from rocket.data import DataError
    from rocket.train.checkpoint import CheckpointError
    from rocket.train.loop import train

    t0 = time.time()
    try:
        result = train(from_config_dict(json.loads(sys.argv[2])))
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    return {**result, "process_index": jax.process_index(), "seconds": time.time() - t0}


if __name__ == "__main__":
    mode = sys.argv[1]
    result = {"sharded": mode_sharded, "multihost": mode_multihost, "train": mode_train}[mode]()
    print("RESULT " + json.dumps(result), flush=True)
