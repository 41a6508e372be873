"""The Colab notebooks (colab/*.ipynb) run top to bottom, headless, with their tiny settings.

Each notebook is executed by nbclient in a fresh `python3` kernel (a child process: it inherits this
process's environment, so the persistent compilation cache set up in conftest.py applies) with the
fast codegen of `tests.helpers.FAST_COMPILE` and `ROCKET_NOTEBOOK_QUICK=1`, its working directory
(where `runs/` goes) in a tmp folder and the corpus cache in another. A failing cell (an exception,
or one of the notebook's own checks, e.g. greedy speculative decoding == greedy AR) raises
`CellExecutionError`; the outputs are then checked for the numbers and pictures each notebook exists
to show.
"""

from __future__ import annotations

import math
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import fast_compile_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = ("quickstart", "decoding", "architectures")


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(COLAB, f"{name}.ipynb"), as_version=4)


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed (streams and text/plain or text/markdown displays)."""
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("display_data", "execute_result"):
            out.append(o.data.get("text/markdown", o.data.get("text/plain", "")))
    return "".join(out)


def _n_images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def _floats(pattern: str, text: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, text)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    """No outputs or execution counts in git, a python3 kernel, and the QUICK switch right after the
    install cell."""
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs committed"
    assert 'find_spec("rocket")' in code[0].source and "REPO_URL" in code[0].source
    assert 'os.environ.get("ROCKET_NOTEBOOK_QUICK") == "1"' in code[1].source


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> str:
    """One corpus/token cache per test process, shared by the notebooks it runs."""
    return str(tmp_path_factory.mktemp("rocket_cache"))


@pytest.fixture
def executed(request, tmp_path, corpus_cache, monkeypatch) -> nbformat.NotebookNode:
    nb = _read(request.param)
    monkeypatch.setenv("ROCKET_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("ROCKET_CACHE_DIR", corpus_cache)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("XLA_FLAGS", fast_compile_flags(os.environ.get("XLA_FLAGS", "")))  # compile-bound
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: figures become PNGs
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    install = _text(nb.cells[[c.cell_type for c in nb.cells].index("code")])
    assert "already installed" in install, f"the install cell did not find the local rocket: {install!r}"
    return nb


def _all_text(nb: nbformat.NotebookNode) -> str:
    return "".join(_text(c) for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("executed", ["quickstart"], indirect=True)
def test_quickstart_trains_mod_and_draws_the_routing(executed):
    text = _all_text(executed)
    (loss,) = _floats(r"validation loss ([-+0-9.naife]+) nats/token", text)
    assert math.isfinite(loss) and 0 < loss < math.log(258) + 1, loss
    assert re.search(r"top-k keeps \d+ of them in each routed layer", text)
    assert _n_images(executed) == 3  # loss curve, routing picture, selection rate by character class


@pytest.mark.parametrize("executed", ["decoding"], indirect=True)
def test_decoding_speculative_and_token_recycling_match_ar(executed):
    text = _all_text(executed)
    assert "reproduce greedy AR decoding exactly" in text  # the notebook's own assert_array_equal passed
    table = re.findall(r"\| greedy \| (ar|speculative|token_recycling) \| ([0-9.]+) \|", text)
    mats = {name: float(mat) for name, mat in table}
    assert set(mats) == {"ar", "speculative", "token_recycling"}, table
    assert mats["ar"] == 1.0 and all(m >= 1.0 for m in mats.values()), mats
    assert _n_images(executed) == 2  # training curves, acceptance bars


@pytest.mark.parametrize("executed", ["architectures"], indirect=True)
def test_architectures_builds_and_trains_every_variant(executed):
    text = _all_text(executed)
    losses = _floats(r": validation loss ([-+0-9.naife]+) \(", text)
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses), losses
    assert text.count("training MFLOPs / token") == 1 and _n_images(executed) == 1
