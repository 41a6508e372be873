"""lm-evaluation-harness end to end (runs only where lm_eval is installed, e.g. `pip install -e ".[eval]"`):
the `rocket` model on the tiny local tasks committed in tests/fixtures/lm_eval (a JSONL file and two
task YAMLs: multiple choice by loglikelihood, generate_until), offline. The harness's logged
loglikelihoods equal rocket's own scoring through the adapter, and its generations are the
adapter's."""

from __future__ import annotations

import dataclasses
import os

import pytest

lm_eval = pytest.importorskip("lm_eval")

from rocket.interop.lm_eval import RocketLM, register  # noqa: E402
from tests.test_hf_import import fixture  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Request:
    args: tuple


def test_tiny_local_tasks_through_lm_eval(monkeypatch):
    monkeypatch.chdir(ROOT)  # the task YAMLs name their JSONL relative to the repository
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    register()
    results = lm_eval.simple_evaluate(
        model="rocket",
        model_args=f"pretrained={fixture('llama')[0]}",
        tasks=["rocket_tiny_mc", "rocket_tiny_gen"],
        task_manager=TaskManager(include_path=os.path.join(ROOT, "tests", "fixtures", "lm_eval")),
        batch_size=4,
        log_samples=True,
    )
    own = RocketLM.from_args(pretrained=fixture("llama")[0], batch_size=4)
    mc = results["samples"]["rocket_tiny_mc"]
    assert len(mc) == 4 and 0 <= results["results"]["rocket_tiny_mc"]["acc,none"] <= 1
    for sample in mc:
        requests = [Request(tuple(args)) for args in sample["arguments"]]
        harness = [tuple(r[0]) for r in sample["resps"]]
        assert [ll for ll, _ in harness] == pytest.approx(
            [ll for ll, _ in own.loglikelihood(requests)], abs=1e-6
        )
    gen = results["samples"]["rocket_tiny_gen"]
    requests = [Request(tuple(s["arguments"][0])) for s in gen]
    assert [s["resps"][0][0] for s in gen] == own.generate_until(requests)
