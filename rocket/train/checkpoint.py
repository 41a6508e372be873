"""Checkpointing: a thin, failure-friendly layer over `orbax.checkpoint`.

Layout: ``<directory>/<step>/{state,data,meta}``, written by one
`orbax.checkpoint.CheckpointManager` with async saving and ``max_to_keep``.

* ``state``: any pytree of arrays (a ``flax.struct.dataclass`` / optax
  namedtuple tree holding params, opt_state, an int32 step and the RNG as raw
  ``uint32`` key data), written with ``StandardSave``.
* ``data``: the data-pipeline state (JSON), omitted when ``None``.
* ``meta``: free-form JSON (config, git hash, ...), omitted when ``None``.

A training run keeps its checkpoints in ``run_checkpoint_dir(workdir)``. Readers that need only
part of a step (`rocket.train.restore.restore_run`) use `read_meta` and `restore_fields`, which
read just the ``meta`` item or the named fields of ``state`` (nothing else is loaded).

Save interval: every ``save()`` call writes a checkpoint when
``step % save_interval_steps == 0`` (default interval 1, i.e. the caller decides)
or ``force=True`` (use it for the final step / on preemption). Steps that
already exist, or that are older than the latest saved step, are skipped and
``save`` returns False.

Atomicity: orbax writes into ``<step>.orbax-checkpoint-tmp-*`` and renames it
on commit, so a process killed mid-save never leaves a step that
``latest_step()`` returns; leftovers are removed when the next `Checkpointer`
opens the directory (tested with SIGKILL in tests/test_checkpoint.py).

Corrupt latest step (files deleted/truncated after commit): ``restore(None,
...)`` falls back to the newest step that restores cleanly, logs a warning and
renames each unreadable newer step to ``<step>.corrupt`` (orbax ignores such
names), so that training resumes and later saves of those step numbers work.
If no step is readable (or an explicit ``step`` fails), a `CheckpointError`
names the path and what to do. Nothing is ever deleted by this fallback.

Logging: orbax logs every save/restore at INFO through absl. On import this
module drops orbax's INFO/DEBUG records (WARNING and above still show) with a
filter on the ``absl`` logger; set ``ROCKET_ORBAX_VERBOSE=1`` to keep them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

_log = logging.getLogger(__name__)

_STATE, _DATA, _META = "state", "data", "meta"
_CORRUPT_SUFFIX = ".corrupt"
_HINT = "delete it, or point --config.train.workdir elsewhere"


class CheckpointError(RuntimeError):
    """A checkpoint directory or step cannot be used; the message says why."""


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------
class _QuietOrbax(logging.Filter):
    """Drops records below WARNING that come from orbax source files."""

    _marker = os.sep + "orbax" + os.sep

    def filter(self, record: logging.LogRecord) -> bool:
        """Keeps a record unless it is orbax chatter below WARNING."""
        if record.levelno >= logging.WARNING:
            return True
        return self._marker not in (record.pathname or "")


def _install_log_filter() -> None:
    """Attaches `_QuietOrbax` to the absl logger once (idempotent)."""
    if os.environ.get("ROCKET_ORBAX_VERBOSE", "") not in ("", "0"):
        return
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _QuietOrbax) for f in absl_logger.filters):
        absl_logger.addFilter(_QuietOrbax())


_install_log_filter()


# --------------------------------------------------------------------------
# Directory checks
# --------------------------------------------------------------------------
def run_checkpoint_dir(workdir: str) -> str:
    """Where a training run (`rocket.train.loop.train`) keeps its checkpoints."""
    return os.path.join(workdir, "checkpoints")


def _is_remote(path: str) -> bool:
    """True for URLs such as gs://bucket/dir (no local checks possible)."""
    return "://" in path


def _check_local_directory(path: str, read_only: bool) -> None:
    """Raises CheckpointError unless `path` is (or can become) a usable dir."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(
            f"Checkpoint directory {path!r} exists but is a file, not a directory: {_HINT}."
        )
    if not os.path.isdir(path):
        if read_only:
            raise CheckpointError(f"Checkpoint directory {path!r} does not exist.")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise CheckpointError(
                f"Cannot create checkpoint directory {path!r} ({e.strerror or e}): "
                "point --config.train.workdir at a writable location."
            ) from e
    mode = os.R_OK | os.X_OK | (0 if read_only else os.W_OK)
    if not os.access(path, mode):
        need = "readable" if read_only else "readable and writable"
        raise CheckpointError(
            f"Checkpoint directory {path!r} is not {need} by this user: fix "
            "its permissions, or point --config.train.workdir elsewhere."
        )


def _abstract_leaf(x: Any) -> Any:
    """Turns a concrete array leaf into a ShapeDtypeStruct (keeps sharding)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    if isinstance(x, (np.ndarray, np.generic)):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
    return x


def _short(e: BaseException, limit: int = 400) -> str:
    """One-line, length-limited description of an exception."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


# --------------------------------------------------------------------------
# Checkpointer
# --------------------------------------------------------------------------
class Checkpointer:
    """Saves/restores (state, data_state, meta) per step under `directory`.

    Args:
      directory: checkpoint root (local path or a URL orbax understands).
      keep: how many most recent steps to keep (older ones are deleted).
      async_save: write in a background thread; `save` returns at once.
      save_interval_steps: `save` only writes when step % interval == 0
        (unless forced). The default 1 leaves the schedule to the caller.
      read_only: open an existing directory for restoring only.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep: int = 3,
        async_save: bool = True,
        save_interval_steps: int = 1,
        read_only: bool = False,
    ) -> None:
        self.directory = os.fspath(directory)
        if not _is_remote(self.directory):
            self.directory = os.path.abspath(self.directory)
            _check_local_directory(self.directory, read_only)
        self.restored_step: int | None = None
        self._interval = max(1, int(save_interval_steps))
        self._read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except Exception as e:  # noqa: BLE001 - orbax raises many types
            raise CheckpointError(
                f"Cannot open checkpoint directory {self.directory!r}: "
                f"{_short(e)}. Fix it, or point --config.train.workdir "
                "elsewhere."
            ) from e

    # -- queries -----------------------------------------------------------
    def latest_step(self) -> int | None:
        """Newest step saved (committed, or in flight from this process)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All steps known to the manager, ascending."""
        return sorted(self._manager.all_steps())

    def step_path(self, step: int) -> str:
        """Directory holding checkpoint `step`."""
        return os.path.join(self.directory, str(step))

    # -- save --------------------------------------------------------------
    def save(
        self,
        step: int,
        state: PyTree,
        *,
        data_state: dict | None,
        meta: dict | None = None,
        force: bool = False,
    ) -> bool:
        """Starts saving checkpoint `step`; returns whether a save started.

        With async saving the write continues in the background; call `wait()`
        to block until it is committed. Raises CheckpointError on I/O errors
        (including those of a previous async save).
        """
        step = int(step)
        if not force and step % self._interval != 0:
            return False
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            _log.warning("Not saving step %d: %s already holds step %d.", step, self.directory, latest)
            return False
        items = {_STATE: ocp.args.StandardSave(state)}
        if data_state is not None:
            items[_DATA] = ocp.args.JsonSave(data_state)
        if meta is not None:
            items[_META] = ocp.args.JsonSave(meta)
        try:
            return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=True))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"Saving checkpoint step {step} to {self.step_path(step)!r} "
                f"failed: {_short(e)}. Check free space and permissions, or "
                "point --config.train.workdir elsewhere."
            ) from e

    # -- restore -----------------------------------------------------------
    def restore(self, step: int | None, abstract_state: PyTree) -> tuple[PyTree, dict | None, dict | None]:
        """Restores (state, data_state, meta) of `step` (None: the latest).

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (optionally with
        `sharding=`, which places the restored arrays on that mesh) or of
        arrays. With step=None an unreadable latest step is skipped and moved
        aside (see module docstring); `self.restored_step` tells which step
        was restored. data_state/meta are None if they were not saved.
        """
        abstract = jax.tree.map(_abstract_leaf, abstract_state)
        checked = self.check_step(step)
        if step is not None:
            return self._restore_or_raise(checked, abstract)
        return self._restore_newest_readable(self.all_steps(), abstract)

    def check_step(self, step: int | None) -> int:
        """`step` (None: the latest) after checking it exists; raises CheckpointError if not."""
        self.wait()
        self._manager.reload()  # the directory may have changed under us
        steps = self.all_steps()
        if step is None and not steps:
            raise CheckpointError(f"No checkpoint found in {self.directory!r}.")
        if step is not None and int(step) not in steps:
            raise CheckpointError(
                f"No checkpoint step {step} in {self.directory!r}; available steps: {steps or 'none'}."
            )
        return steps[-1] if step is None else int(step)

    def read_meta(self, step: int) -> dict | None:
        """The ``meta`` JSON saved with `step` (None if none was); reads nothing else."""
        if not (epath.Path(self.step_path(step)) / _META).exists():
            return None
        args = ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
        try:
            return self._manager.restore(step, args=args)[_META]
        except Exception as e:  # noqa: BLE001
            raise self._unreadable_error(step, e) from e

    def restore_fields(self, step: int, abstract: dict[str, PyTree]) -> dict[str, PyTree]:
        """Restores only the top-level fields of the saved ``state`` named in `abstract`, e.g.
        ``{"params": ...}`` (orbax partial restore: the other fields, such as the optimizer state,
        are never read). Leaves as in `restore`; returns a dict with the keys of `abstract`."""
        item = jax.tree.map(_abstract_leaf, abstract)
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        args = ocp.args.PyTreeRestore(item, restore_args=restore_args, partial_restore=True)
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**{_STATE: args}))[_STATE]
        except Exception as e:  # noqa: BLE001
            raise self._unreadable_error(step, e) from e

    def _restore_step(self, step: int, abstract: PyTree) -> tuple[PyTree, dict | None, dict | None]:
        """Restores one step; orbax exceptions propagate."""
        path = self.step_path(step)
        items = {_STATE: ocp.args.StandardRestore(abstract)}
        for name in (_DATA, _META):
            if (epath.Path(path) / name).exists():
                items[name] = ocp.args.JsonRestore()
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        self.restored_step = step
        return out[_STATE], out.get(_DATA), out.get(_META)

    def _restore_or_raise(self, step: int, abstract: PyTree) -> tuple[PyTree, dict | None, dict | None]:
        """Restores `step`, turning any failure into one CheckpointError."""
        try:
            return self._restore_step(step, abstract)
        except Exception as e:  # noqa: BLE001
            raise self._unreadable_error(step, e) from e

    def _unreadable_error(self, step: int, e: BaseException) -> CheckpointError:
        """The error for a step that cannot be restored."""
        return CheckpointError(
            f"Checkpoint step {step} at {self.step_path(step)!r} cannot be "
            f"restored: {_short(e)}. Either it is corrupt/incomplete (files "
            f"deleted or truncated) -- {_HINT} -- or the model/optimizer "
            "config differs from the one that wrote it (restore with the "
            "same config)."
        )

    def _restore_newest_readable(
        self, steps: list[int], abstract: PyTree
    ) -> tuple[PyTree, dict | None, dict | None]:
        """Tries steps newest-first; moves unreadable newer steps aside."""
        failures: list[tuple[int, BaseException]] = []
        for step in reversed(steps):
            try:
                result = self._restore_step(step, abstract)
            except Exception as e:  # noqa: BLE001
                _log.warning(
                    "Checkpoint step %d at %s is unreadable: %s", step, self.step_path(step), _short(e)
                )
                failures.append((step, e))
                continue
            for bad, _ in failures:
                self._quarantine(bad)
            return result
        latest, err = failures[0]
        raise self._unreadable_error(latest, err) from err

    def _quarantine(self, step: int) -> None:
        """Renames an unreadable step to `<step>.corrupt` so orbax ignores it."""
        if self._read_only:
            _log.warning(
                "Checkpoint step %d at %s is corrupt/unreadable; restored an older step.",
                step,
                self.step_path(step),
            )
            return
        src = epath.Path(self.step_path(step))
        dst = src.parent / (src.name + _CORRUPT_SUFFIX)
        if jax.process_index() == 0:
            n = 1
            while dst.exists():
                n += 1
                dst = src.parent / f"{src.name}{_CORRUPT_SUFFIX}{n}"
            src.rename(dst)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"rocket_quarantine_{step}")
        _log.warning(
            "Checkpoint step %d is corrupt/unreadable; resumed from an older "
            "step and moved it to %s (delete it when no longer needed).",
            step,
            dst,
        )
        self._manager.reload()

    # -- lifecycle ---------------------------------------------------------
    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"An async checkpoint save to {self.directory!r} failed: "
                f"{_short(e)}. Check free space and permissions, or point "
                "--config.train.workdir elsewhere."
            ) from e

    def close(self) -> None:
        """Waits for pending saves and releases orbax resources."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
