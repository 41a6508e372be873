"""`python -m rocket.train --config experiments/configs/quickstart.py [--config.x.y=value ...]`.

Trains (or resumes) the experiment described by an ml_collections config file whose
`get_config()` returns the sections model / data / optim / parallel / train / loss (see
`rocket.config`); `--config.<dotted.path>=<value>` overrides any field (`rocket.config.cli`).
`--resume_config=saved` takes the config saved with the latest checkpoint of the run's workdir
(`--config.train.workdir`, or the `--config` file's) instead of the file, overrides still applied;
`--print_config` prints the resolved, validated config as JSON and exits.
Any bad config, data or checkpoint prints one line `error: ...` and exits with code 2.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import flags, logging

from rocket.config.cli import split_args

_RESUME_CONFIG = flags.DEFINE_enum(
    "resume_config", "current", ["current", "saved"], "saved: resume with the checkpoint's saved config."
)
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.")


def resolve_config(config_path: str | None, overrides: list[tuple[str, str]]) -> Any:
    """The run's ExperimentConfig: the file's, or the checkpoint's with --resume_config=saved."""
    from rocket.config.cli import load_config_file, load_experiment
    from rocket.train.resume import saved_run_config

    if _RESUME_CONFIG.value != "saved":
        return load_experiment(config_path, overrides)
    workdir = dict(overrides).get("train.workdir")
    if workdir is None and config_path is not None:
        workdir = load_config_file(config_path).get("train", {}).get("workdir")
    if workdir is None:
        from rocket.config import ConfigError

        raise ConfigError(
            "train.workdir", "--resume_config=saved needs the run: pass --config.train.workdir=DIR"
        )
    return load_experiment(None, overrides, base=saved_run_config(workdir))


def main(config_path: str | None, overrides: list[tuple[str, str]]) -> None:
    if not flags.FLAGS["verbosity"].present:  # absl's INFO chatter (XLA, orbax) only on request
        logging.set_verbosity(logging.WARNING)
    from rocket.config import ConfigError, to_dict
    from rocket.data import DataError
    from rocket.train.checkpoint import CheckpointError
    from rocket.utils import enable_compilation_cache

    try:
        cfg = resolve_config(config_path, overrides)
        if _PRINT_CONFIG.value:
            print(json.dumps(to_dict(cfg), indent=2))
            return
        from rocket.train.loop import train

        enable_compilation_cache()
        train(cfg)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(argv: list[str]) -> None:
    """Parses --config and its overrides (rocket's loader) and absl's own flags (--verbosity, ...);
    anything else is an error line and exit code 2."""
    from rocket.config import ConfigError

    if "--help" in argv or "-h" in argv:
        print(__doc__.strip() + "\n\nflags:\n" + flags.FLAGS.main_module_help())
        return
    try:
        config_path, overrides, rest = split_args(argv[1:])
        extra = flags.FLAGS([argv[0], *rest])[1:]
        if extra:
            raise ConfigError("", f"unexpected arguments: {extra}")
    except (ConfigError, flags.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main(config_path, overrides)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run(sys.argv)
