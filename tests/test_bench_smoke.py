"""Every bench_* script runs (`--smoke`: tiny sizes), so no benchmark rots unnoticed; plus the laws
of the shared timing helper and bench_device's table renderer.

The scripts run in-process (`main(argv)`), sharing one JAX import. The cheap ones are in the default
tier; those that train models or compile many decoding loops are `slow`."""

import importlib
import itertools

import jax
import pytest

from experiments.lib import bench_timing


def run_script(name: str, argv: list[str], capsys) -> str:
    importlib.import_module(f"experiments.{name}").main(argv)
    return capsys.readouterr().out


def test_interleaved_calls_round_robin_and_keeps_the_minimum(monkeypatch):
    clock = itertools.count()  # every perf_counter() call advances one tick
    monkeypatch.setattr(bench_timing.time, "perf_counter", lambda: next(clock))
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or calls.append("b2")}
    best = bench_timing.interleaved(fns, rounds=3, warmup=1)
    assert calls[:3] == ["a", "b", "b2"] and calls.count("a") == 4  # warm-up + 3 rounds, in turn
    assert best == {"a": 1, "b": 1}


def test_bench_peers_smoke_and_a_bad_checkout(capsys, tmp_path):
    out = run_script("bench_peers", ["--smoke"], capsys)
    assert "rocket/nanodo" in out and "n/a" in out  # no checkout: rocket alone
    with pytest.raises(SystemExit) as e:
        run_script("bench_peers", ["--smoke", "--nanodo", str(tmp_path)], capsys)
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: --nanodo: no nanodo checkout")


def test_bench_train_smoke(capsys):
    assert " smoke " in run_script("bench_train", ["--smoke"], capsys)


def test_bench_kernels_smoke(capsys):
    out = run_script("bench_kernels", ["--smoke"], capsys)
    assert "verify" in out and "pattention" in out


def test_bench_device_render_flattens_rows():
    results = {
        "device": "cpu",
        "backend": "cpu",
        "jax": jax.__version__,
        "smoke": True,
        "kernels": {"verify": [{"s": 64, "ours_s": 0.5, "xla_s": None}], "ceilings": {"hbm_gbs": 1.0}},
        "train": [{"size": "smoke", "mfu": None}],
        "routing": [],
        "decoding": [{"name": "ar", "ms": {"a": 1.25}}],
    }
    md = importlib.import_module("experiments.bench_device").render(results)
    assert "Smoke run" in md and "| s | ours_s | xla_s |" in md and "| 64 | 0.5 | - |" in md
    assert "| name | ms/a |" in md and "| ar | 1.25 |" in md and "## routing" not in md


@pytest.mark.slow
def test_bench_routing_smoke(capsys):
    out = run_script("bench_routing", ["--smoke"], capsys)
    assert "mor" in out and "decode" in out and "mor scan" in out


@pytest.mark.slow
def test_bench_decode_smoke(capsys):
    out = run_script("bench_decode", ["--smoke"], capsys)
    assert "x calls" in out and "(== AR greedy)" in out


@pytest.mark.slow
def test_bench_decode_transforms_smoke(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its models are cached under ./runs
    assert "contrastive" in run_script(
        "bench_decode_transforms", ["--smoke", "--only", "contrastive"], capsys
    )


@pytest.mark.slow
def test_bench_device_smoke(capsys, tmp_path):
    out = run_script("bench_device", ["--smoke", "--out", str(tmp_path)], capsys)
    assert "## decoding" in out and "## routing" in out and "## kernels/attention" in out
    assert len(list(tmp_path.glob("*_smoke.json"))) == 1 and len(list(tmp_path.glob("*_smoke.md"))) == 1
