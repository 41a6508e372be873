"""Entry points around Hugging Face checkpoints: training from one (`model.init_from=hf:PATH`),
decoding with one as target and another as draft (`rocket.interop.decoding`, `generate --hf`), and
exporting a training run (`python -m rocket.export`)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rocket.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from rocket.data import ByteTokenizer, HFTokenizer
from rocket.interop import InteropError, load_hf, save_hf
from rocket.interop.decoding import load_hf_steps
from rocket.interop.lm_eval import RocketLM
from rocket.interop.training import hf_experiment, tokenizer_name
from rocket.train.checkpoint import Checkpointer
from rocket.train.loop import Trainer, _restore_or_init
from rocket.train.restore import restore_run
from tests.helpers import save_tiny_run, tiny_model
from tests.test_hf_import import fixture, logits_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_init_from_builds_the_checkpoints_model_and_starts_from_its_weights(tmp_path):
    path, _ = fixture("qwen3")
    cfg = ExperimentConfig(
        model=ModelConfig(init_from="hf:" + path, remat="full"),
        data=DataConfig(seq_len=16, batch_size=2),
        train=TrainConfig(workdir=str(tmp_path), steps=1),
    )
    run_cfg = hf_experiment(cfg)
    want_cfg, want, _ = load_hf(path)
    assert run_cfg.model == dataclasses.replace(
        want_cfg, remat="full", init_from="hf:" + os.path.abspath(path)
    )  # the checkpoint's architecture, the run's execution choices
    assert (
        isinstance(jax.tree.leaves(want)[0], jax.Array) and tokenizer_name(run_cfg) == run_cfg.model.init_from
    )
    trainer = Trainer.build(run_cfg)
    state = _restore_or_init(run_cfg, trainer, Checkpointer(str(tmp_path / "ckpt")), None, lambda *a: None)
    jax.tree.map(np.testing.assert_array_equal, state.params, want)
    bad = dataclasses.replace(cfg, model=ModelConfig(init_from="hf:" + str(tmp_path / "none")))
    with pytest.raises(
        ConfigError, match=r"^config field 'model.init_from': .*none: no such model directory$"
    ):
        hf_experiment(bad)
    with pytest.raises(ConfigError, match="init_from.*must be .. or .hf:PATH."):
        ModelConfig(init_from=path)  # no "hf:" prefix


def test_a_draft_with_another_vocabulary_is_refused(tmp_path):
    model, variables = tiny_model()
    save_hf(model.cfg, variables["params"], ByteTokenizer(), str(tmp_path / "byte"))
    target, draft, tok = load_hf_steps(fixture("llama")[0], fixture("smollm")[0])
    assert draft is not None and isinstance(tok, HFTokenizer)
    with pytest.raises(InteropError, match="speculative decoding needs identical vocabularies"):
        load_hf_steps(fixture("llama")[0], str(tmp_path / "byte"))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "rocket.generate",
            f"--hf={fixture('llama')[0]}",
            f"--hf_draft={tmp_path / 'byte'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
    assert res.stderr.startswith(f"error: {tmp_path / 'byte'}: the draft's vocabulary (258 tokens")


def test_export_cli_writes_a_directory_load_hf_reads_with_the_runs_logits(tmp_path):
    workdir = tmp_path / "run"
    save_tiny_run(workdir)
    cmd = [sys.executable, "-m", "rocket.export", f"--checkpoint={workdir}", f"--out={tmp_path / 'hf'}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    run = restore_run(str(workdir))
    hf_cfg, params, tok = load_hf(str(tmp_path / "hf"))
    ids = ByteTokenizer().encode("def f(x):")[None]
    want = run.model.apply({"params": run.params}, ids, np.broadcast_to(np.arange(ids.shape[1]), ids.shape))[
        0
    ]
    np.testing.assert_array_equal(logits_of(hf_cfg, params, ids), want)
    request = type("Request", (), {"args": ("def f(", "x):")})()  # lm-eval on the run and on its export
    from_run = RocketLM.from_args(checkpoint=str(workdir), batch_size=1).loglikelihood([request])
    assert from_run == RocketLM.from_args(pretrained=str(tmp_path / "hf"), batch_size=1).loglikelihood(
        [request]
    )
    bad = cmd[:3] + [f"--checkpoint={tmp_path / 'nothing'}", cmd[-1]]
    res = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (
        res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    )
