"""Device meshes, logical-axis sharding rules, batch sharding and multi-host start-up.

rocket shards with GSPMD: parameters and activations carry *logical* axis names (set in the
layers with `nn.with_logical_partitioning` / `nn.with_logical_constraint`), and one table,
`DEFAULT_RULES`, maps them onto the mesh axes (data, fsdp, tensor):

  data    pure data parallelism: the batch is split, parameters are replicated;
  fsdp    the batch is split *and* parameters / optimizer state are sharded along "embed"
          (ZeRO-3: XLA all-gathers weights before use and reduce-scatters gradients);
  tensor  Megatron-style tensor parallelism over heads, MLP width, TokenFormer parameter tokens
          and vocabulary.

So DP / FSDP / TP is a config change (`--config.parallel.fsdp=4`). A logical axis whose size is
not divisible by its mesh axes is replicated instead (e.g. a 258-token vocabulary on tensor=4).

The mesh uses `AxisType.Auto` on every axis (classic GSPMD, what linen's logical constraints
expect); `jax.make_mesh`'s default Explicit axes turn those constraints into assertions.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rocket.config import ConfigError, ParallelConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("param_tokens", "tensor"),  # TokenFormer's Pattention: parameter tokens split like MLP width
    ("norm", None),
    ("layers", None),
    # activations
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)


def resolve_mesh_shape(pcfg: ParallelConfig, n_devices: int) -> tuple[int, int, int]:
    """Fills the one -1 axis with the remaining devices and checks the product."""
    sizes = [pcfg.data, pcfg.fsdp, pcfg.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if n_devices % known:
            raise ConfigError(
                "parallel",
                f"{n_devices} devices cannot be split with "
                f"data={pcfg.data}, fsdp={pcfg.fsdp}, tensor={pcfg.tensor}",
            )
        sizes[sizes.index(-1)] = n_devices // known
    if int(np.prod(sizes)) != n_devices:
        raise ConfigError(
            "parallel", f"data*fsdp*tensor = {int(np.prod(sizes))} but there are {n_devices} devices"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(pcfg: ParallelConfig = ParallelConfig(), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types over `devices` (default: all devices)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(pcfg, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def _mesh_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return int(np.prod([mesh.shape[a] for a in axes]))


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Replicates the dims of `spec` whose size is not divisible by their mesh axes."""
    dims = tuple(spec) + (None,) * (len(shape) - len(spec))
    return P(*(ax if n % _mesh_size(mesh, ax) == 0 else None for ax, n in zip(dims, shape)))


def logical_to_shardings(
    abstract_boxed: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> Any:
    """NamedShardings for the *unboxed* version of a tree whose leaves may be `nn.Partitioned`.

    `abstract_boxed` is typically `jax.eval_shape(init_fn, ...)`: parameters and the optimizer's
    parameter-shaped moments carry logical names; everything else (step counters, RNG) is replicated.
    """
    logical_specs = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    shapes = nn.meta.unbox(abstract_boxed)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, _fit_spec(spec, x.shape, mesh)),
        mesh_specs,
        shapes,
        is_leaf=lambda s: isinstance(s, P),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[batch, ...] arrays split over (data, fsdp), replicated over tensor."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the batch into global arrays sharded on the batch axes.

    Single process: the local batch is the global batch. Multi-host: every process passes its own
    rows (process i holds rows [i * B_local, (i + 1) * B_local)).
    """
    sharding = batch_sharding(mesh)
    shards = _mesh_size(mesh, BATCH_AXES)
    for k, v in local_batch.items():
        rows = np.shape(v)[0] * jax.process_count() if np.ndim(v) else 0
        if not np.ndim(v) or rows % shards:
            raise ConfigError(
                "data.batch_size",
                f"batch entry {k!r} of shape {np.shape(v)} "
                f"({jax.process_count()} process(es)) has {rows} global rows, which the mesh's "
                f"data*fsdp = {shards} batch shards do not divide",
            )
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize` when launched as one process of a multi-process job.

    Triggered by the standard settings: JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID (the same names jax reads), or a cluster jax auto-detects (Cloud TPU, SLURM,
    Open MPI) when ROCKET_DISTRIBUTED=1. Returns whether it initialised. On CPU it selects the gloo
    collectives so processes can all-reduce over localhost.
    """
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not addr and os.environ.get("ROCKET_DISTRIBUTED") != "1":
        return False
    if jax.distributed.is_initialized():
        return True
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") and not os.environ.get(
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION"
    ):  # respect an explicit "mpi"
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if addr:
        try:
            kwargs = dict(
                coordinator_address=addr,
                num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                process_id=int(os.environ["JAX_PROCESS_ID"]),
            )
        except KeyError as e:
            raise ConfigError(
                "parallel",
                f"JAX_COORDINATOR_ADDRESS is set but {e.args[0]} is not; set JAX_NUM_PROCESSES and "
                "JAX_PROCESS_ID too",
            ) from None
    jax.distributed.initialize(**kwargs)
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def allgather_json(obj: Any) -> list[Any]:
    """Every process's JSON-serialisable `obj`, in process order (a collective: all must call it).

    Used to checkpoint per-host state (each host's data-iterator position) in one file written by
    the primary process, so the checkpoint stays a single atomic orbax commit.
    """
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)  # [processes, max_size]
    return [json.loads(bytes(row[: int(n)]).decode()) for row, n in zip(rows, sizes.reshape(-1))]
