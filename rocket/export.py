"""`python -m rocket.export --checkpoint WORKDIR --out DIR [--step N]`: a training run as a Hugging Face
model directory.

Restores the run (`rocket.train.restore.restore_run`: its saved config, the params of the latest
checkpoint or of `--step`, its tokenizer) and writes `DIR` with `rocket.interop.save_hf`:
config.json (the family the model's options name; a plain dense model is a Llama),
model.safetensors and tokenizer.json. `transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads
it, and so does `rocket.interop.load_hf`. A model Hugging Face cannot express (MoD, MoR, TokenFormer,
softplus attention) or a tokenizer without a tokenizer.json form (SentencePiece) is one
`error: ...` line and exit code 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Run workdir (or its checkpoints/ directory).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "Output directory (created).")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax's read-only notices
    from rocket.config import ConfigError
    from rocket.data import DataError
    from rocket.interop import save_hf
    from rocket.train.checkpoint import CheckpointError
    from rocket.train.restore import restore_run

    try:
        run = restore_run(_CHECKPOINT.value, _STEP.value)
        save_hf(run.config.model, run.params, run.tokenizer(), _OUT.value)
    except (ConfigError, DataError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"step {run.step} of {_CHECKPOINT.value} -> {_OUT.value} ({', '.join(sorted(os.listdir(_OUT.value)))})"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app.run(main)
