"""The line between experiments/lib (shared machinery) and the scripts next to it: a script imports
from rocket, pallas_kernels, experiments.lib, the standard library or third-party packages, never from
another script (`experiments.<script>`); experiments/lib never imports a script. Checked on the
source (AST), without importing anything."""

import pathlib

from tests._imports import imports

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_names(source: str, package: str) -> list[str]:
    """Absolute names of everything `source` (a module of `package`) imports; `from m import n` gives
    "m.n", since n may be a module."""
    return [name for _, module, names in imports(source, package) for name in (names or [module])]


def crossings(source: str, package: str) -> list[str]:
    """The imports of `source` that reach into an experiments script: experiments.<x> with x != lib."""
    return [
        name
        for name in imported_names(source, package)
        if name.startswith("experiments.") and name.split(".")[1] != "lib"
    ]


def violations(root: pathlib.Path) -> dict[str, list[str]]:
    """file -> its crossings, for every script (experiments/*.py, experiments/configs/*.py) and every
    module of experiments/lib under `root`."""
    out = {}
    groups = {"experiments": "*.py", "experiments/configs": "*.py", "experiments/lib": "**/*.py"}
    for folder, pattern in groups.items():
        for path in sorted((root / folder).glob(pattern)):
            package = ".".join(path.parent.relative_to(root).parts)
            bad = crossings(path.read_text(), package)
            if bad:
                out[str(path.relative_to(root))] = bad
    return out


def test_the_checker_flags_imports_of_scripts():
    allowed = """
import os, numpy as np
import experiments.lib.results
from experiments import lib
from experiments.lib.routing import run_family
from rocket.decode import generate
from pallas_kernels.flash_attention import attention
from .routing import Scale
"""
    assert crossings(allowed, "experiments.lib") == []
    planted = """
import experiments.repro_mod
from experiments.bench_decode import measure
from experiments import repro_mor, lib
def f():
    from experiments.common import run
"""
    assert crossings(planted, "experiments") == [
        "experiments.repro_mod",
        "experiments.bench_decode.measure",
        "experiments.repro_mor",
        "experiments.common.run",
    ]
    # relative imports resolve against the module's package
    assert crossings("from .repro_mod import TABLE", "experiments") == ["experiments.repro_mod.TABLE"]
    assert crossings("from .. import bench_decode", "experiments.lib") == ["experiments.bench_decode"]
    assert crossings("from . import routing", "experiments.lib") == []


def test_a_planted_violation_in_a_tree_is_found(tmp_path):
    (tmp_path / "experiments" / "lib").mkdir(parents=True)
    (tmp_path / "experiments" / "repro_a.py").write_text("from experiments.lib.cli import repro_main\n")
    (tmp_path / "experiments" / "repro_b.py").write_text("from experiments.repro_a import TABLE\n")
    (tmp_path / "experiments" / "lib" / "x.py").write_text("from experiments import repro_a\n")
    assert violations(tmp_path) == {
        "experiments/repro_b.py": ["experiments.repro_a.TABLE"],
        "experiments/lib/x.py": ["experiments.repro_a"],
    }


def test_scripts_import_only_the_library_and_the_library_no_script():
    assert (ROOT / "experiments" / "lib" / "__init__.py").exists()
    assert len(list((ROOT / "experiments").glob("repro_*.py"))) >= 7
    assert violations(ROOT) == {}
