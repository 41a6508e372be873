"""Sharding tests for rocket.parallel + Trainer on simulated multi-device / multi-process CPU.

JAX runs in child processes (tests/_parallel_worker.py): the device count is fixed by XLA_FLAGS
before jax is imported, and this pytest process already has a 1-device CPU backend.

  * the same 3 train steps on a 1-device mesh, data=4 x fsdp=2 and data=2 x fsdp=2 x tensor=2
    give the same metrics, eval loss and parameters; FSDP really shards params, Adam moments
    and the batch;
  * logical_to_shardings replicates dimensions its mesh axes don't divide;
  * two processes on localhost (jax.distributed, gloo CPU collectives, 2 devices each) train
    together on their halves of the batch and match the single-process 4-device run;
  * end to end: two processes run `train()` (FSDP over the 4 global devices), and a second
    2-process job resumed from an earlier checkpoint continues the same losses, eval and sample;
    resuming it with 1 process fails with a clear CheckpointError.

Tolerances: losses and metrics to rtol 1e-5. Parameters after Adam steps are compared with an
absolute tolerance of 1e-4 (= 0.1 x lr) and at most 0.1% of elements off by more than 1e-5:
sharding changes the float32 summation order of gradients, and Adam's normalised update
m / (sqrt(v) + eps) amplifies that for the few elements whose gradient is ~0 and changes sign
(measured: 1-3 elements of ~60k, max 1.6e-5). The Adam moments themselves agree to ~2e-8.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import fast_compile_flags

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = REPO_ROOT / "tests" / "_parallel_worker.py"
TIMEOUT_S = 240
TRAIN_TIMEOUT_S = 300
METRIC_RTOL = 1e-5
PARAM_ATOL, PARAM_FRAC_OVER_1E5 = 1e-4, 1e-3
SHARDED_RUNS = ("dp4_fsdp2", "dp2_fsdp2_tp2", "multihost_ref")


def _child_env(n_devices: int, out_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "ROCKET_DISTRIBUTED"))
    }
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={n_devices}")
    env["XLA_FLAGS"] = fast_compile_flags(" ".join(flags))  # a few steps each: compile-bound
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["ROCKET_PARALLEL_OUT"] = str(out_dir)
    env.update(extra)
    return env


def _start(mode: str, env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    out = log.with_suffix(".out")
    with open(out, "wb") as so, open(log, "wb") as se:  # files, not pipes: nothing can block on a full pipe
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), mode, *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=so,
            stderr=se,
            start_new_session=True,
        )
    return proc, out


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the worker and anything it started
        except ProcessLookupError:
            pass
        proc.wait()


def _run_all(procs: list[tuple[subprocess.Popen, Path]], logs: list[Path], timeout: float) -> list[dict]:
    """Waits for all children (killing all on timeout, or the rest when one fails); returns their RESULTs."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p, _ in procs):
            failed = [p for p, _ in procs if p.poll() not in (None, 0)]
            if failed:  # the others would wait forever on a dead peer
                deadline = min(deadline, time.monotonic() + 10)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p, _ in procs:
            _kill(p)
    results, failures = [], []
    for i, ((p, out), log) in enumerate(zip(procs, logs)):
        text = out.read_text()
        lines = [l for l in text.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            why = (
                "killed (timed out, or a peer failed)"
                if p.returncode == -signal.SIGKILL
                else f"exited with {p.returncode}"
            )
            failures.append(
                f"worker {i} {p.args[2]!r} {why}\nstdout:\n{text[-2000:]}\nstderr:\n{log.read_text()[-5000:]}"
            )
        else:
            results.append(json.loads(lines[-1][len("RESULT ") :]))
    if failures:
        pytest.fail(f"timeout {timeout:.0f}s; " + "\n\n".join(failures), pytrace=False)
    return results


def _free_port() -> int:
    try:
        import portpicker

        return portpicker.pick_unused_port()
    except ImportError:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


@pytest.fixture(scope="module")
def children(request, tmp_path_factory):
    """Starts the 8-device child and (if its test is selected) the 2-process job side by side.

    On 2 cores this nearly halves the cold-cache wall time: XLA's CPU compiles are mostly
    single-threaded. Yields {name: ([(proc, stdout)], [stderr logs], out dir, start time)}.
    """
    started = {}
    out = tmp_path_factory.mktemp("parallel")
    t0 = time.monotonic()
    log = out / "sharded.log"
    started["sharded"] = ([_start("sharded", _child_env(8, out), log)], [log], out, t0)
    if any("multihost" in item.name for item in request.session.items):
        port = _free_port()
        mh_out = tmp_path_factory.mktemp("parallel_multihost")
        procs, logs = [], []
        for pid in range(2):
            env = _child_env(
                2,
                mh_out,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(pid),
            )
            logs.append(mh_out / f"multihost_p{pid}.log")
            procs.append(_start("multihost", env, logs[-1]))
        started["multihost"] = (procs, logs, mh_out, t0)
    yield started
    for procs, *_ in started.values():
        for p, _ in procs:
            _kill(p)


@pytest.fixture(scope="module")
def sharded(children) -> tuple[dict, Path]:
    """The 8-device child's results (and its output folder with multihost_ref.npz)."""
    procs, logs, out, t0 = children["sharded"]
    (result,) = _run_all(procs, logs, TIMEOUT_S - (time.monotonic() - t0))
    result["wall_s"] = time.monotonic() - t0
    return result, out


def _assert_metrics_close(ref: list[dict], got: list[dict], what: str) -> None:
    assert len(ref) == len(got), what
    for i, (r, g) in enumerate(zip(ref, got)):
        assert r.keys() == g.keys(), what
        for k in r:
            np.testing.assert_allclose(g[k], r[k], rtol=METRIC_RTOL, err_msg=f"{what}: entry {i} {k!r}")


def _assert_params_close(cmp: dict, what: str) -> None:
    assert cmp["max_abs_diff"] < PARAM_ATOL, f"{what}: {cmp}"
    assert cmp["n_over_1e-5"] <= PARAM_FRAC_OVER_1E5 * cmp["n"], f"{what}: {cmp}"


@pytest.mark.parametrize("run", SHARDED_RUNS)
def test_sharded_training_matches_one_device(sharded, run):
    result, _ = sharded
    ref, got = result["runs"]["1dev"], result["runs"][run]
    assert got["step"] == ref["step"] == 3
    assert got["init_params"]["max_abs_diff"] == 0.0, got["init_params"]  # same seed -> same init, any mesh
    _assert_metrics_close(ref["metrics"], got["metrics"], run)  # 3 train steps, then the eval
    assert ref["metrics"][0]["tokens"] < 8 * 32  # the batch has padding with weight 0
    assert ref["metrics"][2]["loss"] < ref["metrics"][0]["loss"]
    _assert_params_close(got["params"], f"{run} params")
    assert got["opt_state"]["max_abs_diff"] < 1e-6, got["opt_state"]


def test_fsdp_shards_params_moments_and_batch(sharded):
    s = sharded[0]["runs"]["dp4_fsdp2"]["sharding"]
    assert "fsdp" in s["embed_spec"] and s["embed_shape"] == [258, 64]
    assert s["embed_n_devices"] == 8 and s["embed_shard_shapes"] == [[258, 32]]  # half per device
    assert len(s["embed_moments"]) == 2  # Adam mu and nu
    for m in s["embed_moments"].values():
        assert "fsdp" in m["spec"] and m["shard_shapes"] == [[258, 32]], m
    assert s["count_replicated"] and s["count_device_sets"] == [8]  # not stuck on device 0
    for name, spec in s["param_specs"].items():
        if "scale" not in name:  # every matrix has an "embed" dim -> sharded on fsdp
            assert "fsdp" in spec, (name, spec)
    assert s["batch_spec"] == "P(('data', 'fsdp'),)" and s["batch_n_devices"] == 8
    assert s["batch_shard_shapes"] == [[1, 32]]  # 8 rows over data x fsdp = 8
    assert s["abstract_state_shardings_match"]


def test_tensor_parallel_shards_vocab_and_heads(sharded):
    s = sharded[0]["runs"]["dp2_fsdp2_tp2"]["sharding"]
    assert s["embed_spec"] == "P('tensor', 'fsdp')" and s["embed_shard_shapes"] == [[129, 32]]
    assert s["param_specs"]["['layers_0']['attn']['wq']"] == "P('fsdp', 'tensor', None)"
    assert s["param_specs"]["['layers_0']['mlp']['w_down']"] == "P('tensor', 'fsdp')"
    assert s["batch_shard_shapes"] == [[2, 32]]  # 8 rows over data x fsdp = 4, replicated on tensor
    assert s["abstract_state_shardings_match"]


def test_logical_to_shardings_replicates_indivisible_dims(sharded):
    rules = sharded[0]["rules"]  # mesh data=1, fsdp=2, tensor=4
    assert rules["emb256"] == "P('tensor', 'fsdp')"
    assert rules["emb258"] == "P(None, 'fsdp')"  # 258 % 4 != 0: vocab replicated, embed still sharded
    assert rules["odd_embed"] == "P(None, None)"
    assert rules["wq"] == "P('fsdp', 'tensor', None)"
    assert rules["pattention_k"] == "P('tensor', 'fsdp')"  # TokenFormer parameter tokens: tensor-parallel
    assert rules["scale"] == "P(None,)" and rules["count"] == "P()"
    assert rules["batch_error"].startswith("ConfigError") and "data.batch_size" in rules["batch_error"]


def test_resolve_mesh_shape():  # pure Python: runs in this process
    from rocket.config import ConfigError, ParallelConfig
    from rocket.parallel import resolve_mesh_shape

    assert resolve_mesh_shape(ParallelConfig(), 8) == (8, 1, 1)
    assert resolve_mesh_shape(ParallelConfig(data=-1, fsdp=2), 8) == (4, 2, 1)
    assert resolve_mesh_shape(ParallelConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
    assert resolve_mesh_shape(ParallelConfig(data=1, fsdp=1, tensor=1), 1) == (1, 1, 1)
    with pytest.raises(ConfigError, match="cannot be split"):
        resolve_mesh_shape(ParallelConfig(data=-1, fsdp=3), 8)
    with pytest.raises(ConfigError, match="but there are 8 devices"):
        resolve_mesh_shape(ParallelConfig(data=2, fsdp=2, tensor=1), 8)


def test_multihost_two_processes_match_single_process(children, sharded):
    ref_result, ref_dir = sharded
    procs, logs, out, t0 = children["multihost"]
    r0, r1 = _run_all(procs, logs, TIMEOUT_S - (time.monotonic() - t0))
    for pid, r in enumerate((r0, r1)):
        assert r["process_index"] == pid and r["process_count"] == 2
        assert r["local_devices"] == 2 and r["global_devices"] == 4
        assert r["held_rows"] == [[4 * pid, 4 * pid + 4]], r[
            "held_rows"
        ]  # process i's rows land at i*B_local
        assert r["collectives"] == "gloo"
    ref = ref_result["runs"]["multihost_ref"]
    assert r0["mesh"] == ref["mesh"]
    assert r0["metrics"] == r1["metrics"]  # both processes see the same global step
    _assert_metrics_close(ref["metrics"], r0["metrics"], "2 processes vs 1 process")
    want = np.load(ref_dir / "multihost_ref.npz")
    for pid in range(2):
        got = np.load(out / f"multihost_p{pid}.npz")
        assert sorted(got.files) == sorted(want.files)
        diffs = {k: np.abs(got[k].astype(np.float64) - want[k]) for k in want.files}
        cmp = {
            "max_abs_diff": max(float(d.max()) for d in diffs.values()),
            "n_over_1e-5": int(sum((d > 1e-5).sum() for d in diffs.values())),
            "n": int(sum(d.size for d in diffs.values())),
        }
        _assert_params_close(cmp, f"process {pid} params vs 1-process run")


def _launch(tag: str, cfg: dict, out: Path, n_proc: int, devices_per_proc: int) -> tuple[list, list[Path]]:
    """Starts `train(cfg)` in n_proc worker processes (a jax.distributed job when n_proc > 1)."""
    port = _free_port()
    procs, logs = [], []
    for pid in range(n_proc):
        dist = (
            dict(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(n_proc),
                JAX_PROCESS_ID=str(pid),
            )
            if n_proc > 1
            else {}
        )
        logs.append(out / f"{tag}_p{pid}.log")
        procs.append(_start("train", _child_env(devices_per_proc, out, **dist), logs[-1], json.dumps(cfg)))
    return procs, logs


def _prune_checkpoints(workdir: Path, keep: int) -> None:
    ckpts = workdir / "checkpoints"
    for d in ckpts.iterdir():
        if d.name.isdigit() and int(d.name) > keep:
            shutil.rmtree(d)
    assert sorted(d.name for d in ckpts.iterdir() if d.name.isdigit()) == [str(keep)]


def test_two_process_training_resumes_exactly(tmp_path):
    """2 processes train 6 steps (checkpoints at 2, 4, 6); the same job resumed from step 2's
    checkpoint reproduces steps 3..6, the eval loss and the sample; 1 process can't resume it."""
    from rocket.data import build_data
    from tests.helpers import TINY
    from tests.test_train import _corpus, _train_losses

    t0 = time.monotonic()
    data = dict(
        seq_len=32, batch_size=8, val_fraction=0.25, eval_batches=2, cache_dir=str(tmp_path / "cache")
    )
    data["corpus"] = _corpus(tmp_path)
    # Prepare the corpus and token cache once here, so the processes only read it.
    build_data(
        data["corpus"], "byte", seq_len=32, batch_size=4, val_fraction=0.25, cache_dir=data["cache_dir"]
    )
    workdir = tmp_path / "run"
    cfg = {
        "model": {**TINY, "max_seq_len": 32},
        "data": data,
        "optim": {"lr": 3e-3, "warmup_steps": 4},
        "parallel": {"data": -1, "fsdp": 2, "tensor": 1},
        "train": {
            "steps": 6,
            "workdir": str(workdir),
            "log_every": 1,
            "eval_every": 3,
            "ckpt_every": 2,
            "keep_checkpoints": 5,
            "sample_tokens": 8,
            "progress": False,
        },
    }
    out = tmp_path / "logs"
    out.mkdir()

    # Phase A: the uninterrupted 2-process run.
    a0, a1 = _run_all(*_launch("A", cfg, out, 2, 2), TRAIN_TIMEOUT_S)
    assert (
        a0["step"] == a1["step"] == 6 and a0["eval_loss"] == a1["eval_loss"] and a0["sample"] == a1["sample"]
    )
    assert sorted(d.name for d in (workdir / "checkpoints").iterdir() if d.name.isdigit()) == ["2", "4", "6"]
    ref_dir, one_proc_dir = tmp_path / "ref", tmp_path / "one_proc"
    shutil.copytree(workdir, ref_dir)
    shutil.copytree(workdir, one_proc_dir)
    ref_losses, ref_result = _train_losses(str(ref_dir)), json.loads((ref_dir / "result.json").read_text())
    assert sorted(ref_losses) == list(range(1, 7))
    t_a = time.monotonic() - t0

    # Phase B: the same job in the same workdir, after losing the checkpoints of steps 4 and 6.
    _prune_checkpoints(workdir, 2)
    (workdir / "logs" / "metrics.jsonl").unlink()
    (workdir / "result.json").unlink()
    b0, b1 = _run_all(*_launch("B", cfg, out, 2, 2), TRAIN_TIMEOUT_S)
    stdout0 = (out / "B_p0.out").read_text()
    assert re.search(r"resumed from \S+ at step 2\b", stdout0), stdout0[-2000:]
    assert "config differs" not in stdout0, stdout0[-2000:]
    losses = _train_losses(str(workdir))
    assert sorted(losses) == [3, 4, 5, 6], losses  # only the resumed steps were re-run
    np.testing.assert_allclose(
        [losses[s] for s in range(3, 7)],
        [ref_losses[s] for s in range(3, 7)],
        rtol=1e-6,
        err_msg="train losses 3..6",
    )
    result = json.loads((workdir / "result.json").read_text())
    assert result["step"] == b0["step"] == b1["step"] == 6
    np.testing.assert_allclose(result["eval_loss"], ref_result["eval_loss"], rtol=1e-6)
    assert result["sample"] == ref_result["sample"] and result["sample"].startswith("def ")
    t_b = time.monotonic() - t0 - t_a

    # A different process count can't map the per-process data positions: a one-line error.
    _prune_checkpoints(one_proc_dir, 2)
    one = {**cfg, "train": {**cfg["train"], "workdir": str(one_proc_dir)}}
    procs, logs = _launch("one_proc", one, out, 1, 4)
    ((proc, stdout),) = procs
    try:
        proc.wait(timeout=TRAIN_TIMEOUT_S)
    finally:
        _kill(proc)
    err = logs[0].read_text()
    assert proc.returncode == 2, (
        f"exit {proc.returncode}\nstdout:\n{stdout.read_text()[-2000:]}\nstderr:\n{err[-3000:]}"
    )
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "written by 2 processes, this run has 1" in lines[0], err[-3000:]
    print(
        f"\nphase A {t_a:.1f}s, phase B {t_b:.1f}s, 1-process resume {time.monotonic() - t0 - t_a - t_b:.1f}s"
    )
