"""Sharded import: `load_hf(path, mesh=...)` on 8 simulated CPU devices (a child process, since the
device count is fixed by XLA_FLAGS before jax starts) places every tensor straight onto its shards
and gives the reference logits.

data=2 x fsdp=2 x tensor=2: the embedding is split over (tensor, fsdp) [vocab, embed], q/k/v over
fsdp x tensor, the MLP over fsdp x tensor; norms are replicated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.test_hf_import import fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_default_matmul_precision", "float32")
from rocket.config import ParallelConfig
from rocket.interop import load_hf
from rocket.models import Transformer
from rocket.parallel import make_mesh
mesh = make_mesh(ParallelConfig(data=2, fsdp=2, tensor=2))
cfg, params, _ = load_hf(sys.argv[1], mesh=mesh)
ids = jnp.asarray(np.load(sys.argv[1] + "/reference.npz")["input_ids"])
pos = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
with jax.set_mesh(mesh):
    logits = jax.jit(lambda p: Transformer(cfg).apply({"params": p}, ids, pos)[0])(params)
np.save(sys.argv[2], np.asarray(logits))
layer = params["layers_0"]
shard = lambda x: list(x.addressable_shards[0].data.shape)
print("RESULT " + json.dumps({
    "devices": len(jax.devices()),
    "embed": [list(params["embed"]["embedding"].shape), shard(params["embed"]["embedding"])],
    "wq": [list(layer["attn"]["wq"].shape), shard(layer["attn"]["wq"])],
    "w_up": [list(layer["mlp"]["w_up"].shape), shard(layer["mlp"]["w_up"])],
    "norm": [list(layer["attn_norm"]["scale"].shape), shard(layer["attn_norm"]["scale"])],
}))
"""


def test_sharded_import_on_8_devices_gives_the_reference_logits(tmp_path):
    path, ref = fixture("qwen3")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = " ".join(
        [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        + ["--xla_force_host_platform_device_count=8"]
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "logits.npy"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, path, str(out)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["devices"] == 8
    np.testing.assert_allclose(np.load(out), ref["logits"], atol=1e-4, rtol=0)
    assert result["embed"] == [[288, 32], [144, 16]]  # vocab over tensor, embed over fsdp
    assert result["wq"] == [[32, 4, 16], [16, 2, 16]]  # embed over fsdp, heads over tensor
    assert result["w_up"] == [[32, 48], [16, 24]]  # embed over fsdp, mlp over tensor
    assert result["norm"] == [[32], [32]]  # replicated
