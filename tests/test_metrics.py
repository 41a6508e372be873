"""Tests for rocket.train.metrics."""

from __future__ import annotations

import glob
import json
import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.train import metrics as m


@dataclass
class FakeDevice:
    """Anything with a `device_kind` works for peak_flops."""

    device_kind: str


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(m.PEAK_FLOPS_ENV, raising=False)


# ------------------------------------------------------------ arithmetic
def test_bits_per_byte_uniform_is_8() -> None:
    n_bytes = 1000  # byte-level model, uniform over 256 values
    assert m.bits_per_byte(n_bytes * math.log(256), n_bytes) == pytest.approx(8.0, abs=1e-12)
    # Tokens of several bytes: same total loss spread over 4x the bytes.
    assert m.bits_per_byte(n_bytes * math.log(256), 4 * n_bytes) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        m.bits_per_byte(1.0, 0)


def test_mfu_arithmetic() -> None:
    # 6 * 1e9 FLOPs/token, 1e4 tok/s = 6e13 FLOP/s over 2 x 1e14 peak -> 0.3
    assert m.mfu(6e9, 1e4, 1e14, 2) == pytest.approx(0.3)
    assert m.mfu(6e9, 1e4, None, 2) is None
    assert m.mfu(6e9, 1e4, 1e14, 0) is None


# ------------------------------------------------------------ peak table
@pytest.mark.parametrize(
    "kind,dtype,expected",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.5e12),
        ("NVIDIA H100 80GB HBM3", "float32", 67e12),
        ("NVIDIA H200", "bf16", 989e12),
        ("NVIDIA A100-SXM4-80GB", jnp.bfloat16, 312e12),
        ("NVIDIA A100-SXM4-40GB", "tf32", 156e12),
        ("NVIDIA A100-SXM4-40GB", np.float32, 19.5e12),
        ("TPU v4", "bfloat16", 275e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5e", "bf16", 197e12),
        ("TPU v5p", "bfloat16", 459e12),
        ("TPU v5", "bfloat16", 459e12),
        ("TPU v6 lite", "bfloat16", 918e12),
        ("TPU v4", "float32", None),
        ("cpu", "float32", None),
        ("Some Future Chip", "bfloat16", None),
    ],
)
def test_peak_lookup(kind: str, dtype: object, expected: float | None) -> None:
    assert m.peak_flops(FakeDevice(kind), dtype) == expected


def test_real_cpu_device_is_unknown() -> None:
    assert m.peak_flops(jax.devices()[0], "float32") is None


def test_unknown_dtype_raises() -> None:
    with pytest.raises(ValueError, match="Unknown compute dtype"):
        m.peak_flops(FakeDevice("NVIDIA H100"), "int8")


def test_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(m.PEAK_FLOPS_ENV, "1.5e12")
    assert m.peak_flops(jax.devices()[0], "float32") == 1.5e12
    assert m.peak_flops(FakeDevice("NVIDIA H100"), "bf16") == 1.5e12
    monkeypatch.setenv(m.PEAK_FLOPS_ENV, "fast")
    with pytest.raises(ValueError, match=m.PEAK_FLOPS_ENV):
        m.peak_flops(jax.devices()[0], "float32")


# ------------------------------------------------------------ event files
def _read_records(path: str) -> Iterator[bytes]:
    """TFRecord framing: u64 length, u32 crc, payload, u32 crc."""
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length)
            f.read(4)
            yield payload


def read_events(logdir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[str]]]:
    """Scalars {tag: [(step, value)]} and texts {tag: [text]} from all files."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    texts: dict[str, list[str]] = {}
    for path in sorted(glob.glob(str(logdir / "events.out.tfevents.*"))):
        for rec in _read_records(path):
            event = event_pb2.Event.FromString(rec)
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
                elif v.HasField("tensor") and v.tensor.string_val:
                    texts.setdefault(v.tag, []).append(v.tensor.string_val[0].decode())
    return scalars, texts


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metric_writer_round_trip(tmp_path: Path) -> None:
    with m.MetricWriter(str(tmp_path)) as w:
        w.write_scalars(1, {"loss": jnp.float32(2.5), "lr": np.float64(1e-3), "tokens": 128})
        w.write_scalars(2, {"loss": jnp.array([2.0])})
        w.write_scalars(2, {"bpb": 1.25}, split="eval")
        w.write_text(2, "sample", "hello world")
        w.write_hparams({"model": {"d": 64}, "lr": np.float32(0.5)})
        w.flush()
        with pytest.raises(ValueError, match="not a scalar"):
            w.write_scalars(3, {"bad": np.zeros(3)})
    rows = _read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [
        {"step": 1, "split": "train", "loss": 2.5, "lr": 1e-3, "tokens": 128.0},
        {"step": 2, "split": "train", "loss": 2.0},
        {"step": 2, "split": "eval", "bpb": 1.25},
    ]
    assert json.loads((tmp_path / "config.json").read_text()) == {"model": {"d": 64}, "lr": 0.5}
    assert _read_jsonl(tmp_path / "text.jsonl")[0]["text"] == "hello world"
    scalars, texts = read_events(tmp_path)
    assert scalars["train/loss"] == [(1, 2.5), (2, 2.0)]
    assert scalars["eval/bpb"] == [(2, 1.25)]
    assert scalars["train/lr"][0][1] == pytest.approx(1e-3)
    assert texts["sample/text_summary"] == ["hello world"]


def test_metric_writer_appends_on_resume(tmp_path: Path) -> None:
    for step in (1, 2):
        w = m.MetricWriter(str(tmp_path))
        w.write_scalars(step, {"loss": float(step)})
        w.close()
        w.close()  # idempotent
    assert [r["step"] for r in _read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    scalars, _ = read_events(tmp_path)
    assert scalars["train/loss"] == [(1, 1.0), (2, 2.0)]


def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    w = m.MetricWriter(str(logdir), enabled=False)
    w.write_scalars(1, {"loss": 1.0})
    w.write_text(1, "t", "x")
    w.write_hparams({"a": 1})
    w.flush()
    w.close()
    assert not logdir.exists()


# ------------------------------------------------------------ timer
def test_step_timer_excludes_compile_step() -> None:
    timer = m.StepTimer(window=3)
    with pytest.raises(RuntimeError):
        timer.lap(1)
    timer.start()
    time.sleep(0.5)  # "compile"
    first = timer.lap(100)
    assert first["step_time_s"] >= 0.5
    for _ in range(2):
        time.sleep(0.02)
        out = timer.lap(100)
    # Averaging the compile lap in would give >= (0.5 + 2 * 0.02) / 3 = 0.18.
    assert 0.015 < out["step_time_s"] < 0.12
    assert out["tokens_per_sec"] == pytest.approx(100 / out["step_time_s"])
    timer.start()  # pause (eval) not counted
    time.sleep(0.01)
    out = timer.lap(400, n_steps=2)
    assert out["step_time_s"] < 0.12
