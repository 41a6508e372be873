"""`python -m rocket.generate --checkpoint WORKDIR [--method NAME] [--draft_checkpoint WORKDIR] ...`.

Restores a `rocket.train` run with `rocket.train.restore.restore_run` (the params of its latest
checkpoint, or of `--step`, and the config saved with it), decodes `--prompt` with any method of
`rocket.decode.METHODS`, and prints the text, tokens/s (warm: the second, compiled call) and the
method's stats (mean accepted tokens per target call, acceptance rate, calls per token).
Speculative methods need `--draft_checkpoint` (a run with the same tokenizer). `--hf DIR_OR_HUB_ID`
decodes a Hugging Face model instead (`--hf_draft`: its draft, with an identical vocabulary). `--temperature 0`
(the default) decodes greedily.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Run workdir (or its checkpoints/ directory).")
_HF = flags.DEFINE_string("hf", None, "A Hugging Face model directory or hub id (instead of --checkpoint).")
_HF_DRAFT = flags.DEFINE_string("hf_draft", None, "A Hugging Face draft model with the same vocabulary.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DRAFT = flags.DEFINE_string("draft_checkpoint", None, "Draft run workdir (speculative methods).")
_METHOD = flags.DEFINE_string("method", "ar", "Decoding method (a name in rocket.decode.METHODS).")
_PROMPT = flags.DEFINE_string("prompt", "def ", "Prompt text.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Top-k filter (0 = off).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus filter (1 = off).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax's read-only notices
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rocket.config import ConfigError
    from rocket.data import DataError
    from rocket.decode import ModelStep, SamplerConfig, decode_stats, generate, resolve_method
    from rocket.interop.decoding import load_hf_steps
    from rocket.train.checkpoint import CheckpointError
    from rocket.train.restore import restore_run
    from rocket.utils import enable_compilation_cache

    enable_compilation_cache()
    try:
        method = resolve_method(_METHOD.value)
        if (
            bool(_HF.value) == bool(_CHECKPOINT.value)
            or bool(_HF.value) < bool(_HF_DRAFT.value)
            or (_HF.value and _DRAFT.value)
        ):
            raise ValueError("give --checkpoint [--draft_checkpoint] or --hf [--hf_draft]")
        if _HF.value:
            target, draft, tokenizer = load_hf_steps(_HF.value, _HF_DRAFT.value)
        else:
            restored = restore_run(_CHECKPOINT.value, _STEP.value)
            tokenizer = restored.tokenizer()
            target = ModelStep(restored.model, {"params": restored.params})
            draft = None
        if _DRAFT.value:
            draft_run = restore_run(_DRAFT.value)
            draft = ModelStep(draft_run.model, {"params": draft_run.params})
    except (ConfigError, DataError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sampler = (
        SamplerConfig(greedy=True)
        if _TEMPERATURE.value == 0
        else SamplerConfig(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)
    )
    prompt = np.concatenate([[tokenizer.bos_id], tokenizer.encode(_PROMPT.value)]).astype(np.int32)
    run = lambda: generate(
        target,
        jnp.asarray(prompt)[None],
        jnp.array([len(prompt)]),
        jax.random.key(_SEED.value),
        max_new_tokens=_MAX_NEW.value,
        method=method,
        sampler=sampler,
        draft=draft,
        eos_id=getattr(tokenizer, "eos_id", None),
    )
    try:
        t0 = time.perf_counter()
        jax.block_until_ready(run())  # compile
        t1 = time.perf_counter()
        out = jax.block_until_ready(run())
        t2 = time.perf_counter()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    n = int(out.n_tokens[0])
    print(_PROMPT.value + tokenizer.decode(np.asarray(out.tokens[0, :n])))
    stats = decode_stats(out)
    print(
        f"[{_METHOD.value}] {n} tokens in {t2 - t1:.3f}s = {n / (t2 - t1):.1f} tokens/s (compile {t1 - t0:.1f}s); "
        + ", ".join(f"{k} {v:.3f}" for k, v in stats.items())
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app.run(main)
