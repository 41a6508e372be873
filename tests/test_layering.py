"""The package layering stays true: every import points down (docs/architecture.md, "Layers").

Each module gets the level of the longest entry of `LEVELS` that prefixes its dotted name. A module
may import from its own level or a lower one, never from a higher one; a package's
`__init__.py` may also re-export its own subpackages. Imports inside functions count too (a lazy
import is still a dependency). Also: no source file in `rocket/` or `pallas_kernels/` passes 400
lines, and the closed choices that implementing modules key tables by match their config
declaration.
"""

from __future__ import annotations

import pathlib

import pytest

from tests._imports import imports

ROOT = pathlib.Path(__file__).resolve().parents[1]

# bottom (0) to top; the longest matching prefix decides
LEVELS: dict[str, int] = {
    "pallas_kernels": 0,
    "rocket.config": 1,
    "rocket.utils": 1,
    "rocket.data": 2,
    "rocket.parallel": 2,
    "rocket.layers": 3,
    "rocket.routing": 4,
    "rocket.models": 5,
    "rocket.decode": 6,  # the engine room
    "rocket.decode.tools": 6,
    "rocket.decode.methods": 7,
    "rocket.decode.generate": 8,
    "rocket.interop": 8,  # Hugging Face checkpoints in and out
    "rocket.train": 9,
    "rocket.generate": 10,
    "rocket.export": 10,
    "rocket.interop.lm_eval": 10,  # the lm-evaluation-harness adapter (reads rocket.train's runs)
    "rocket.plot": 10,
    "experiments.lib": 11,
    "experiments": 12,
}


def entry_of(module: str) -> str | None:
    """The LEVELS entry governing `module` (longest dotted prefix), or None for outside modules."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LEVELS:
            return key
    return None


def module_name(path: pathlib.Path, root: pathlib.Path) -> tuple[str, bool]:
    """(dotted module name, is a package __init__) of a source file below `root`."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    is_init = parts[-1] == "__init__"
    if is_init:
        parts = parts[:-1]
    return ".".join(parts), is_init


def imported_modules(source: str, module: str, is_init: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in `source`; `from pkg import sub` counts `pkg.sub` only
    when it is a subpackage with a level of its own (otherwise `sub` is an attribute of `pkg`)."""
    out = []
    for line, target, names in imports(source, module if is_init else module.rpartition(".")[0]):
        out.append((line, target))
        out += [(line, name) for name in names if entry_of(name) != entry_of(target)]
    return out


def upward_imports(root: pathlib.Path, packages: tuple[str, ...]) -> list[str]:
    """'file:line: module (level) imports target (level)' for every import that points up."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module, is_init = module_name(path, root)
            own = entry_of(module)
            if own is None:
                continue
            for line, target in imported_modules(path.read_text(), module, is_init):
                dep = entry_of(target)
                if dep is None or LEVELS[dep] <= LEVELS[own]:
                    continue
                if is_init and target.startswith(module + "."):
                    continue  # a package facade re-exporting its own subpackages
                found.append(
                    f"{path.relative_to(root)}:{line}: {module} ({LEVELS[own]}) imports {target} ({LEVELS[dep]})"
                )
    return found


def test_every_import_points_down():
    assert upward_imports(ROOT, ("rocket", "pallas_kernels", "experiments")) == []


def test_a_planted_upward_import_is_caught(tmp_path):
    (tmp_path / "rocket" / "layers").mkdir(parents=True)
    (tmp_path / "rocket" / "layers" / "bad.py").write_text(
        "import jax\nfrom rocket.config import ModelConfig\n\n\ndef f():\n    from rocket.train.loop import train\n"
    )
    (tmp_path / "rocket" / "models").mkdir()
    (tmp_path / "rocket" / "models" / "__init__.py").write_text("from rocket.models.sub import X\n")
    (tmp_path / "rocket" / "decode").mkdir()
    (tmp_path / "rocket" / "decode" / "engine.py").write_text("from .methods import ar\n")
    found = upward_imports(tmp_path, ("rocket",))
    assert found == [
        "rocket/decode/engine.py:1: rocket.decode.engine (6) imports rocket.decode.methods (7)",
        "rocket/layers/bad.py:6: rocket.layers.bad (3) imports rocket.train.loop (9)",
    ]


def test_pallas_kernels_stand_alone():
    """The kernels package imports nothing from rocket (it is usable, and testable, on its own)."""
    for path in (ROOT / "pallas_kernels").rglob("*.py"):
        module, is_init = module_name(path, ROOT)
        assert not [
            t for _, t in imported_modules(path.read_text(), module, is_init) if t.startswith("rocket")
        ]


@pytest.mark.parametrize("package", ["rocket", "pallas_kernels"])
def test_no_source_file_passes_400_lines(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_implementation_tables_match_their_config_choices():
    from rocket.config import ATTENTION_KINDS, PROJECTION_KINDS, LossConfig, ModelConfig, choices_of
    from rocket.models import transformer
    from rocket.train import reweighting

    assert {"none", *transformer._REMAT_POLICIES} == set(choices_of(ModelConfig, "remat"))
    assert {"none", *reweighting.STRATEGIES} == set(choices_of(LossConfig, "reweight"))
    from rocket.config import ArchConfig
    from rocket.layers import mlp

    assert set(mlp.ACTIVATIONS) == set(choices_of(ArchConfig, "mlp_activation"))
    from pallas_kernels.flash_attention.reference import KINDS
    from rocket.layers.kernels import FUSED_ATTENTION_KINDS

    assert FUSED_ATTENTION_KINDS == KINDS
    for registry in (ATTENTION_KINDS, PROJECTION_KINDS):  # every built-in name has an implementation
        for name in registry.builtins:
            assert registry.get(name) is not None
