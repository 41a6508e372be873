"""`python -m rocket.train --config experiments/configs/quickstart.py [--config.x.y=value ...]`.

Trains (or resumes) the experiment described by an ml_collections config file whose
`get_config()` returns the sections model / data / optim / parallel / train / loss (see
`rocket.config`); `--config.<dotted.path>=<value>` overrides any field (`rocket.config.cli`).
Any bad config, data or checkpoint prints one line `error: ...` and exits with code 2.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from rocket.config.cli import split_args


def main(config_path: str | None, overrides: list[tuple[str, str]]) -> None:
    if not flags.FLAGS["verbosity"].present:  # absl's INFO chatter (XLA, tfds, orbax) only on request
        logging.set_verbosity(logging.WARNING)
    from rocket.config import ConfigError
    from rocket.config.cli import load_experiment
    from rocket.data import DataError
    from rocket.train.checkpoint import CheckpointError
    from rocket.train.loop import train
    from rocket.utils import enable_compilation_cache

    try:
        cfg = load_experiment(config_path, overrides)
        enable_compilation_cache()
        train(cfg)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(argv: list[str]) -> None:
    """Parses --config and its overrides (rocket's loader) and absl's own flags (--verbosity, ...);
    anything else is an error line and exit code 2."""
    from rocket.config import ConfigError

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
