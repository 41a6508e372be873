"""`python -m rocket.train --config experiments/configs/quickstart.py [--config.x.y=value ...]`.

Trains (or resumes) the experiment described by an ml_collections config file whose
`get_config()` returns the sections model / data / optim / parallel / train (see rocket.config).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (ml_collections).", lock_config=True
)
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # absl's INFO chatter (XLA, tfds, orbax) only on request
        logging.set_verbosity(logging.WARNING)
    from rocket.config import ConfigError, from_config_dict
    from rocket.data import DataError
    from rocket.train.checkpoint import CheckpointError
    from rocket.train.loop import train
    from rocket.utils import enable_compilation_cache

    enable_compilation_cache()
    try:
        train(from_config_dict(_CONFIG.value))
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app.run(main)
