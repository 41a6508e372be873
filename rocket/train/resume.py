"""Resuming a run: how this config differs from the one saved with the checkpoint.

A field that changes the shapes of the training state (parameters, optimizer state) makes the
checkpoint unusable: one `CheckpointError` line names the differing fields. Any other difference
(a learning rate, TokenFormer's pinned scale after growth, ...) is a warning listing the fields.
`saved_run_config(workdir)` is the config of a run's latest checkpoint (`--resume_config=saved`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from rocket.config import ConfigError, ExperimentConfig, saved_config, to_dict
from rocket.config.legacy import upgrade
from rocket.train.checkpoint import Checkpointer, CheckpointError, run_checkpoint_dir


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names (with old -> new values) of config fields that differ between two configs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _shapes(tree: Any) -> tuple[Any, list[tuple[tuple[int, ...], str]]]:
    return jax.tree.structure(tree), [(tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree)]


def checked_changes(
    cfg: ExperimentConfig, ckpt: Checkpointer, abstract_state: Callable[[ExperimentConfig], Any]
) -> list[str]:
    """The fields of `cfg` that differ from the latest checkpoint's saved config. Raises one-line
    CheckpointError when they change the training state's shapes (`abstract_state(config)`: its
    ShapeDtypeStructs)."""
    saved = (ckpt.read_meta(ckpt.check_step(None)) or {}).get("config")
    if saved is None:
        return []
    changes = config_changes(upgrade(saved), to_dict(cfg))
    if not changes:
        return []
    try:
        before = abstract_state(saved_config(saved))
    except (ConfigError, ValueError):  # a config from an older rocket: the restore decides
        return changes
    if _shapes(before) != _shapes(abstract_state(cfg)):
        shaping = [c for c in changes if c.split(".")[0] in ("model", "optim", "loss")] or changes
        raise CheckpointError(
            f"cannot resume {ckpt.directory}: this config changes the shapes of the saved parameters or "
            f"optimizer state ({'; '.join(shaping)}); resume with the saved config "
            "(--resume_config=saved) or start a new --config.train.workdir"
        )
    return changes


def saved_run_config(workdir: str) -> dict[str, Any]:
    """The config (a nested dict) saved with the latest checkpoint of the run in `workdir`."""
    ckpt_dir = run_checkpoint_dir(workdir)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"--resume_config=saved: no checkpoints in {ckpt_dir!r}")
    with Checkpointer(ckpt_dir, read_only=True, async_save=False) as ckpt:
        saved = (ckpt.read_meta(ckpt.check_step(None)) or {}).get("config")
    if saved is None:
        raise CheckpointError(
            f"--resume_config=saved: the latest checkpoint in {ckpt_dir!r} has no saved config"
        )
    return upgrade(saved)
