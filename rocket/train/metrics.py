"""Training metrics: peak FLOP/s table, MFU, bits/byte, writers, step timer.

`MetricWriter` writes TensorBoard event files (tensorboardX) and a
``metrics.jsonl`` (one JSON object per `write_scalars` call, appended across
restarts) so that notebooks can read metrics without TensorBoard.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

PEAK_FLOPS_ENV = "ROCKET_PEAK_FLOPS"

# Dense (no sparsity) peak FLOP/s per device, by compute dtype.
# None: not published / not meaningful (e.g. f32 matmuls on TPU).
PEAK_FLOPS: dict[str, dict[str, float | None]] = {
    "H100": {"bf16": 989e12, "tf32": 494.5e12, "f32": 67e12},
    "H200": {"bf16": 989e12, "tf32": 494.5e12, "f32": 67e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "f32": 19.5e12},
    "TPU v4": {"bf16": 275e12, "tf32": None, "f32": None},
    "TPU v5e": {"bf16": 197e12, "tf32": None, "f32": None},
    "TPU v5p": {"bf16": 459e12, "tf32": None, "f32": None},
    "TPU v6e": {"bf16": 918e12, "tf32": None, "f32": None},
    "cpu": {"bf16": None, "tf32": None, "f32": None},
}

# (substring of device.device_kind, lower-cased) -> PEAK_FLOPS key.
# Order matters: more specific names first ("tpu v5 lite" before "tpu v5").
_KIND_PATTERNS: tuple[tuple[str, str], ...] = (
    ("h200", "H200"),
    ("h100", "H100"),
    ("a100", "A100"),
    ("tpu v4", "TPU v4"),
    ("tpu v5 lite", "TPU v5e"),
    ("tpu v5e", "TPU v5e"),
    ("tpu v5p", "TPU v5p"),
    ("tpu v5", "TPU v5p"),
    ("tpu v6 lite", "TPU v6e"),
    ("tpu v6e", "TPU v6e"),
)

_DTYPE_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "f16": "bf16",
    "fp16": "bf16",
    "float16": "bf16",
    "half": "bf16",
    "tf32": "tf32",
    "tensorfloat32": "tf32",
    "f32": "f32",
    "fp32": "f32",
    "float32": "f32",
    "float": "f32",
}


def _canonical_dtype(dtype: Any) -> str:
    """Maps 'bfloat16' / jnp.bfloat16 / 'fp32' / 'tf32' ... to a table key."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    key = _DTYPE_ALIASES.get(name.strip().lower())
    if key is None:
        raise ValueError(f"Unknown compute dtype {dtype!r}; expected one of {sorted(_DTYPE_ALIASES)}.")
    return key


def device_family(device_kind: str) -> str | None:
    """The PEAK_FLOPS key for a `device_kind` string, or None if unknown."""
    kind = device_kind.lower()
    for pattern, family in _KIND_PATTERNS:
        if pattern in kind:
            return family
    return "cpu" if "cpu" in kind else None


def _env_peak() -> float | None:
    """The ROCKET_PEAK_FLOPS override (FLOP/s per device), if set."""
    raw = os.environ.get(PEAK_FLOPS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{PEAK_FLOPS_ENV}={raw!r} is not a number (expected FLOP/s per device, e.g. 1.5e12)."
        ) from None
    if not value > 0:
        raise ValueError(f"{PEAK_FLOPS_ENV}={raw!r} must be positive.")
    return value


def peak_flops(device: Any, dtype: Any) -> float | None:
    """Dense peak FLOP/s of one `device` computing in `dtype`, or None.

    Matches substrings of ``device.device_kind`` (e.g. "NVIDIA H100 80GB
    HBM3", "TPU v5 lite"). ``ROCKET_PEAK_FLOPS`` (a float, per device)
    overrides the table for every device, e.g. to get an MFU on CPU.
    Note: on A100/H100, JAX's default matmul precision runs f32 inputs in
    TF32, so pass "tf32" (not "float32") for f32 training with default
    precision.
    """
    override = _env_peak()
    if override is not None:
        return override
    family = device_family(str(getattr(device, "device_kind", "")))
    if family is None:
        return None
    return PEAK_FLOPS[family][_canonical_dtype(dtype)]


def matmul_dtype(compute_dtype: str) -> str:
    """The dtype the matmuls of a `compute_dtype` model really run in, for the peak-FLOPs lookup.

    float32 under JAX's default matmul precision runs as TF32 on NVIDIA GPUs (and as bf16 passes on
    TPUs), so its peak is the TF32 one; with `jax_default_matmul_precision="float32"` (or
    "highest") it is true f32.
    """
    if compute_dtype not in ("float32", "f32"):
        return compute_dtype
    precision = str(jax.config.jax_default_matmul_precision or "default").lower()
    if precision in ("float32", "highest"):
        return "f32"
    return "bf16" if jax.default_backend() == "tpu" else "tf32"


def mfu(
    flops_per_token: float, tokens_per_sec: float, peak_per_device: float | None, n_devices: int
) -> float | None:
    """Model FLOPs utilisation: achieved / (peak x devices); None if unknown."""
    if peak_per_device is None or peak_per_device <= 0 or n_devices <= 0:
        return None
    return flops_per_token * tokens_per_sec / (peak_per_device * n_devices)


def bits_per_byte(sum_loss_nats: float, sum_bytes: float) -> float:
    """Bits per UTF-8 byte: total loss in nats / ln 2 / total target bytes.

    Exact (not an estimate from an average bytes/token ratio) because the data
    pipeline counts the bytes of every target token, so `sum_bytes` covers
    exactly the tokens whose losses are summed in `sum_loss_nats`.
    """
    if sum_bytes <= 0:
        raise ValueError(f"sum_bytes must be positive, got {sum_bytes}.")
    return float(sum_loss_nats) / math.log(2) / float(sum_bytes)


def _to_float(name: str, value: Any) -> float:
    """Converts a python/numpy/jax scalar (or size-1 array) to float."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"Metric {name!r} is not a scalar (shape {arr.shape}).")
    return float(arr.reshape(()))


def _jsonable(obj: Any) -> Any:
    """json.dumps `default=` hook: ConfigDicts, numpy scalars, else str()."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (np.generic, np.ndarray)) and np.asarray(obj).size == 1:
        return np.asarray(obj).item()
    return str(obj)


class MetricWriter:
    """Writes scalars/text to TensorBoard and ``<logdir>/metrics.jsonl``.

    Args:
      logdir: output directory (created).
      enabled: False makes every method a no-op (use on non-zero processes).
    """

    JSONL = "metrics.jsonl"
    TEXT_JSONL = "text.jsonl"
    CONFIG = "config.json"

    def __init__(self, logdir: str, *, enabled: bool = True) -> None:
        self.logdir = os.fspath(logdir)
        self.enabled = enabled
        self._tb: Any = None
        self._jsonl: Any = None
        if enabled:
            from tensorboardX import SummaryWriter  # heavy import, lazily

            os.makedirs(self.logdir, exist_ok=True)
            # Unique, sortable suffix: a restart within the same second must
            # not overwrite the previous run's event file (same default name).
            self._tb = SummaryWriter(self.logdir, filename_suffix=f".{time.time_ns():020d}")
            # Append: a resumed run continues the same file.
            self._jsonl = open(os.path.join(self.logdir, self.JSONL), "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any], split: str = "train") -> None:
        """Logs `scalars` at `step` under tags ``<split>/<name>``."""
        if not self.enabled:
            return
        values = {k: _to_float(k, v) for k, v in scalars.items()}
        for name, value in values.items():
            self._tb.add_scalar(f"{split}/{name}", value, int(step))
        record = {"step": int(step), "split": split, **values}
        self._jsonl.write(json.dumps(record) + "\n")

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Logs `text` to TensorBoard and ``text.jsonl``."""
        if not self.enabled:
            return
        self._tb.add_text(tag, text, int(step))
        with open(os.path.join(self.logdir, self.TEXT_JSONL), "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), "tag": tag, "text": text}) + "\n")

    def write_hparams(self, hparams: Mapping[str, Any] | Any) -> None:
        """Dumps the config to ``<logdir>/config.json`` (overwritten)."""
        if not self.enabled:
            return
        if hasattr(hparams, "to_dict"):
            hparams = hparams.to_dict()
        text = json.dumps(hparams, indent=2, sort_keys=True, default=_jsonable)
        path = os.path.join(self.logdir, self.CONFIG)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(path + ".tmp", path)
        self._tb.add_text("config", f"```\n{text}\n```", 0)

    def flush(self) -> None:
        """Flushes both outputs to disk."""
        if not self.enabled:
            return
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        """Flushes and closes (idempotent)."""
        if not self.enabled or self._tb is None:
            return
        self.flush()
        self._jsonl.close()
        self._tb.close()
        self._tb = self._jsonl = None
        self.enabled = False

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StepTimer:
    """Wall time per step and tokens/s, averaged over the last `window` laps.

    The first lap after construction (the step that compiles) is never
    averaged in. Call `start()` before the first step, and again after any
    pause you don't want counted (eval, checkpointing). With JAX's async
    dispatch, call `lap` after something that blocks (e.g. fetching the loss)
    or the times measure dispatch, not compute.
    """

    def __init__(self, window: int = 20) -> None:
        self._laps: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=max(1, window))
        self._last: float | None = None
        self._seen_first = False

    def start(self) -> None:
        """(Re)starts the clock."""
        self._last = time.perf_counter()

    def lap(self, n_tokens: int, n_steps: int = 1) -> dict[str, float]:
        """Ends a lap of `n_steps` steps that processed `n_tokens` tokens."""
        now = time.perf_counter()
        if self._last is None:
            raise RuntimeError("StepTimer.lap() called before start().")
        dt, self._last = now - self._last, now
        if not self._seen_first:  # compile step: report it, don't average it
            self._seen_first = True
            return self._rates(dt, n_tokens, n_steps)
        self._laps.append((dt, n_tokens, n_steps))
        return self._rates(*(sum(x) for x in zip(*self._laps)))

    @staticmethod
    def _rates(dt: float, tokens: float, steps: float) -> dict[str, float]:
        """Converts totals into the per-step / per-second numbers."""
        dt = max(dt, 1e-12)
        return {"step_time_s": dt / max(steps, 1), "tokens_per_sec": tokens / dt}
