"""`python -m rocket.generate --checkpoint WORKDIR [--method NAME] [--method_arg k=v ...] ...`.

Restores a `rocket.train` run with `rocket.train.restore.restore_run` (the params of its latest
checkpoint, or of `--step`, and the config saved with it), decodes `--prompt` (or every line of
`--prompts_file`, as one right-padded batch) with any method of `rocket.decode.METHODS`, and prints
the text(s), tokens/s (warm: the second, compiled call) and the method's stats (mean accepted
tokens per target call, acceptance rate, calls per token; a stat a method does not count is left
out). Methods that need a draft model take `--draft_checkpoint` (a run with the same tokenizer).
`--hf DIR_OR_HUB_ID` decodes a Hugging Face model instead (`--hf_draft`: its draft, with an
identical vocabulary).
`--temperature 0` (the default) decodes greedily; `--top_k` / `--top_p` need a temperature > 0.

`--method_arg NAME=VALUE` (repeatable) sets any field of the method's dataclass, for every
registered method, with no per-method code here: `--method_arg branching=1,1,1,1,1,1` (a
speculative chain of gamma = 6), `--method_arg k=4` (Token Recycling), `--method_arg top_k=8
--method_arg alpha=0.4` (contrastive search), `--method_arg stream.window=60` (a nested field).
A value is read as a Python literal (a bare word is a string) and must match the field's type.
Bad input prints one line `error: ...` and exits with code 2.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import flags, logging

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Run workdir (or its checkpoints/ directory).")
_HF = flags.DEFINE_string("hf", None, "A Hugging Face model directory or hub id (instead of --checkpoint).")
_HF_DRAFT = flags.DEFINE_string("hf_draft", None, "A Hugging Face draft model with the same vocabulary.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DRAFT = flags.DEFINE_string("draft_checkpoint", None, "Draft run workdir (methods that need a draft).")
_METHOD = flags.DEFINE_string("method", "ar", "Decoding method (a name in rocket.decode.METHODS).")
_METHOD_ARGS = flags.DEFINE_multi_string(
    "method_arg", [], "NAME=VALUE: a field of the method's dataclass (repeatable), e.g. k=4."
)
_PROMPT = flags.DEFINE_string("prompt", "def ", "Prompt text.")
_PROMPTS_FILE = flags.DEFINE_string(
    "prompts_file", None, "A file of prompts, one per line, decoded as a batch."
)
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Top-k filter (0 = off; needs --temperature > 0).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus filter in (0, 1] (1 = off; needs --temperature > 0).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


class UsageError(ValueError):
    """Bad command-line input (printed as one `error:` line, exit code 2)."""


def _coerce(text: str, current: Any, where: str) -> Any:
    """`text` as a value of `current`'s type: a Python literal (a bare word: a string)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if current is None or isinstance(current, str):
        return value if current is None else text
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected True or False, got {text!r}")
        return value
    if isinstance(current, tuple):
        value = value if isinstance(value, (tuple, list)) else (value,)
        as_tuple = lambda v: tuple(as_tuple(x) for x in v) if isinstance(v, (tuple, list)) else v
        return as_tuple(value)
    if isinstance(current, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(current, int) and not isinstance(value, int):
            raise UsageError(f"{where}: expected an integer, got {text!r}")
        return type(current)(value)
    raise UsageError(f"{where}: expected {type(current).__name__}, got {text!r}")


def _with_field(obj: Any, dotted: str, text: str, where: str) -> Any:
    """A copy of dataclass `obj` with field `dotted` (may name a nested dataclass's field) set."""
    name, _, rest = dotted.partition(".")
    fields = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
    if name not in fields:
        raise UsageError(f"{where}: no parameter {name!r}; the parameters are {fields}")
    current = getattr(obj, name)
    value = _with_field(current, rest, text, where) if rest else _coerce(text, current, where)
    return dataclasses.replace(obj, **{name: value})


def method_with_args(name: str, method: Any, args: Sequence[str]) -> Any:
    """`method` (a registered dataclass instance) with each `NAME=VALUE` of `args` applied; the
    method's own validation runs on the result."""
    for arg in args:
        key, eq, text = arg.partition("=")
        if not eq or not key:
            raise UsageError(f"--method_arg {arg!r}: expected NAME=VALUE")
        method = _with_field(method, key.strip(), text.strip(), f"--method_arg {key.strip()} of {name!r}")
    return method


def make_sampler(method_name: str, method: Any, temperature: float, top_k: int, top_p: float) -> Any:
    """The SamplerConfig of the sampling flags; refuses values out of range and options the method
    would ignore (top-k / top-p when greedy, a temperature for a deterministic method)."""
    from rocket.decode import SamplerConfig

    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise UsageError(f"--top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise UsageError(f"--top_p must be in (0, 1] (1 = off), got {top_p}")
    if not getattr(type(method), "uses_sampler", True):
        if temperature or top_k or top_p < 1.0:
            raise UsageError(
                f"method {method_name!r} is deterministic and ignores --temperature/--top_k/--top_p; "
                "set its parameters with --method_arg"
            )
        return SamplerConfig(greedy=True)
    if temperature == 0:
        if top_k or top_p < 1.0:
            raise UsageError(
                "--top_k/--top_p filter sampling and have no effect with --temperature 0 (greedy)"
            )
        return SamplerConfig(greedy=True)
    return SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p)


def read_prompts(path: str | None, prompt: str) -> list[str]:
    """The lines of `path` (blank lines skipped), or `[prompt]`."""
    if path is None:
        return [prompt]
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\r\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompts_file {path!r}: {e.__class__.__name__}: {e}") from None
    if not prompts:
        raise UsageError(f"--prompts_file {path!r} has no prompts (one per line)")
    return prompts


def main() -> None:
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax's read-only notices
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rocket.config import ConfigError
    from rocket.data import DataError
    from rocket.decode import ModelStep, decode_stats, generate, resolve_method
    from rocket.interop.decoding import load_hf_steps
    from rocket.train.checkpoint import CheckpointError
    from rocket.train.restore import restore_run
    from rocket.utils import enable_compilation_cache

    enable_compilation_cache()
    try:
        method = method_with_args(_METHOD.value, resolve_method(_METHOD.value), _METHOD_ARGS.value)
        sampler = make_sampler(_METHOD.value, method, _TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
        if bool(_HF.value) < bool(_HF_DRAFT.value) or (_HF.value and _DRAFT.value):
            raise UsageError("give --checkpoint [--draft_checkpoint] or --hf [--hf_draft]")
        has_draft = bool(_DRAFT.value or _HF_DRAFT.value)
        if method.needs_draft and not has_draft:
            raise UsageError(
                f"method {_METHOD.value!r} needs a draft model: pass --draft_checkpoint DIR "
                "(a training run with the same tokenizer), or --hf_draft with --hf"
            )
        if has_draft and not method.needs_draft:
            print(f"warning: method {_METHOD.value!r} uses no draft model; the draft is ignored")
        prompts = read_prompts(_PROMPTS_FILE.value, _PROMPT.value)
        draft = None
        if _HF.value:
            target, draft, tokenizer = load_hf_steps(_HF.value, _HF_DRAFT.value)  # checks the vocabularies
            draft = draft if method.needs_draft else None
        else:
            restored = restore_run(_CHECKPOINT.value, _STEP.value)
            tokenizer = restored.tokenizer()
            target = ModelStep(restored.model, {"params": restored.params})
        if _DRAFT.value and method.needs_draft:
            draft_run = restore_run(_DRAFT.value)
            draft = ModelStep(draft_run.model, {"params": draft_run.params})
    except (ConfigError, DataError, CheckpointError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    encoded = [np.concatenate([[tokenizer.bos_id], tokenizer.encode(p)]).astype(np.int32) for p in prompts]
    lens = np.array([len(e) for e in encoded], np.int32)  # [B]
    prompt_bp = np.zeros((len(encoded), int(lens.max())), np.int32)  # right-padded
    for b, e in enumerate(encoded):
        prompt_bp[b, : len(e)] = e
    run = lambda: generate(
        target,
        jnp.asarray(prompt_bp),
        jnp.asarray(lens),
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
    n_b = np.asarray(out.n_tokens)
    for b, p in enumerate(prompts):
        if len(prompts) > 1:
            print(f"--- prompt {b}")
        print(p + tokenizer.decode(np.asarray(out.tokens[b, : n_b[b]])))
    stats = {k: v for k, v in decode_stats(out).items() if math.isfinite(v)}
    n = int(n_b.sum())
    print(
        f"[{_METHOD.value}] {n} tokens in {t2 - t1:.3f}s = {n / (t2 - t1):.1f} tokens/s (compile {t1 - t0:.1f}s); "
        + ", ".join(f"{k} {v:.3f}" for k, v in stats.items())
    )


def run(argv: Sequence[str]) -> None:
    """Parses the flags (one `error:` line and exit code 2 on a bad or missing one) and runs."""
    if "--help" in argv or "-h" in argv:
        print(__doc__.strip() + "\n\nflags:\n" + flags.FLAGS.main_module_help())
        return
    try:
        extra = flags.FLAGS(list(argv))[1:]
        if extra:
            raise flags.Error(f"unexpected arguments: {extra}")
        if (_CHECKPOINT.value is None) == (_HF.value is None):
            raise flags.Error(
                "give one of --checkpoint (a training run's workdir) or --hf (a Hugging Face model)"
            )
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run(sys.argv)
