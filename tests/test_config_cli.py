"""Loading an experiment from the command line: every failure is one `error: ...` line and exit 2.

In-process through `rocket.config.cli` (fast), and through `python -m rocket.train` for the exit code
and the absence of a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from rocket.config import ConfigError
from rocket.config.cli import load_experiment, split_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "experiments", "configs", "quickstart.py")


@pytest.fixture
def files(tmp_path):
    paths = {
        "not_python": "x = (\n",
        "raises": "def get_config():\n    raise RuntimeError('boom')\n",
        "no_get_config": "y = 1\n",
        "wrong_type": "def get_config():\n    return 3\n",
        "flat_names": "def get_config():\n    return {'model': {'block_pattern': 'mod'}}\n",
    }
    for name, text in paths.items():
        (tmp_path / f"{name}.py").write_text(text)
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe\x00bad")
    return tmp_path


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing", "no config file at"),
        ("not_python", r"is not valid Python: '\(' was never closed \(line 1\)"),
        ("binary", "cannot read config file"),
        ("raises", r"get_config\(\) of .* failed: RuntimeError: boom"),
        ("no_get_config", r"defines no get_config\(\) function"),
        ("wrong_type", "returned int, not a ConfigDict"),
        ("flat_names", "'model.block_pattern': was renamed to 'model.mod.pattern'"),
    ],
)
def test_a_bad_config_file_names_the_problem(files, name, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(str(files / f"{name}.py"))
    assert re.search(message, str(err.value)), str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        (("model.d_modle", "3"), "'model.d_modle': unknown key; valid keys of 'model' are"),
        (("modle.d_model", "3"), "'modle': unknown key; valid keys of 'config' are"),
        (("model.mod_capacity", "0.3"), "'model.mod_capacity': was renamed to 'model.mod.capacity'"),
        (("model.attention", "softplus"), "'model.attention': was renamed to 'model.attention.kind'"),
        (("model.mod", "3"), "'model.mod': is a section; override one of its fields"),
        (("model.n_layers.x", "3"), "'model.n_layers': is a value, not a section"),
        (("model.n_layers", "abc"), "'model.n_layers': expected int, got 'abc'"),
        (("model.mod.capacity", "3"), r"'model.mod.capacity': must be in \(0, 1\], got 3.0"),
        (("model.attention.kind", "nope"), "'model.attention.kind': must be one of"),
    ],
)
def test_a_bad_override_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(QUICKSTART, [override])


def test_overrides_are_typed_by_their_field():
    cfg = load_experiment(
        QUICKSTART,
        [
            ("model.mod.pattern", "dense,mod"),
            ("model.mod.capacity", "0.25"),
            ("model.head_dim", "16"),
            ("model.attention.softplus_power", "None"),
            ("train.progress", "false"),
            ("model.n_layers", "6"),
        ],
    )
    assert cfg.model.layer_capacities == (None, 0.25) * 3
    assert (cfg.model.head_dim, cfg.train.progress, cfg.model.n_layers) == (16, False, 6)


def test_split_args_separates_config_arguments():
    path, overrides, rest = split_args(
        ["--config", "f.py", "--config.a.b=1", "--config.c", "2", "--verbosity=1"]
    )
    assert (path, overrides, rest) == ("f.py", [("a.b", "1"), ("c", "2")], ["--verbosity=1"])
    with pytest.raises(ConfigError, match="--config.c is missing its value"):
        split_args(["--config.c"])
    with pytest.raises(ConfigError, match="--config is required"):
        load_experiment(None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "nope.py"], "error: no config file at 'nope.py'"),
        (["--config", QUICKSTART, "--config.model.mod_capacity=0.3"], "was renamed to 'model.mod.capacity'"),
        (["--config", QUICKSTART, "--bogus"], "error: Unknown command line flag 'bogus'"),
        (["--config", QUICKSTART, "stray"], "error: unexpected arguments: ['stray']"),
    ],
)
def test_the_cli_prints_one_line_and_exits_2(args, message):
    res = subprocess.run(
        [sys.executable, "-m", "rocket.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_experiment_configs_load_from_any_directory_and_are_packaged(tmp_path):
    """`python -m rocket.train --config <abs path> --print_config` from another directory works for
    every experiment config (rocket + experiments importable as installed packages), and every
    package the configs import is stdlib, installed, or shipped by pyproject's package list."""
    import ast
    import json
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[1]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = {pattern.rstrip("*") for pattern in include["include"]}
    configs = sorted((root / "experiments" / "configs").glob("*.py"))
    for path in configs:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for top in {n.split(".")[0] for n in names if n}:
                    assert top in shipped or top in sys.stdlib_module_names or top in {"ml_collections"}, (
                        path,
                        top,
                    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)}  # as `pip install -e .` would
    for path in (
        root / "experiments" / "configs" / "mod_c125.py",
        root / "experiments" / "configs" / "quickstart.py",
    ):
        res = subprocess.run(
            [sys.executable, "-m", "rocket.train", "--config", str(path), "--print_config"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert res.returncode == 0, res.stderr[-1500:]
        assert set(json.loads(res.stdout)) == {"model", "data", "optim", "parallel", "train", "loss"}


def test_errors_name_full_dotted_paths_and_spm_vocab_mismatch_names_both(tmp_path):
    from rocket.config import DataConfig, ExperimentConfig, LossConfig, ModConfig, ModelConfig, override

    with pytest.raises(ConfigError, match=r"^config field 'model\.n_kv_heads': n_heads=4"):
        ModelConfig(n_heads=4, n_kv_heads=3)  # a bare section still names its place
    with pytest.raises(ConfigError, match=r"^config field 'model\.mod\.capacity'"):
        ModConfig(capacity=2.0)
    with pytest.raises(ConfigError, match=r"^config field 'model\.mod\.capacity'"):
        override(ModelConfig(), {"mod.capacity": 2.0})
    # A config file that builds the dataclasses itself: the error names the full path too.
    cfg_file = tmp_path / "c.py"
    cfg_file.write_text(
        "from rocket.config import ModelConfig\ndef get_config():\n    return ModelConfig(n_kv_heads=3)\n"
    )
    with pytest.raises(ConfigError, match=r"config field 'model\.n_kv_heads'"):
        load_experiment(str(cfg_file))
    spm = DataConfig(tokenizer="sentencepiece", spm_vocab_size=4096)
    with pytest.raises(ConfigError, match=r"model\.vocab_size=8192 disagrees with data\.spm_vocab_size=4096"):
        ExperimentConfig(model=ModelConfig(vocab_size=8192), data=spm)
    ExperimentConfig(model=ModelConfig(vocab_size=4096), data=spm)
    ExperimentConfig(
        model=ModelConfig(vocab_size=4097), data=spm, loss=LossConfig(meap_rate=0.15)
    )  # + [MASK]
