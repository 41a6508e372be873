"""lm-evaluation-harness adapter: the model `rocket` (`pip install -e ".[eval]"`).

    python -m rocket.interop.lm_eval --model rocket --model_args pretrained=DIR_OR_HUB_ID,method=ar \
        --tasks hellaswag --batch_size 8

`--model_args`: `pretrained` (a Hugging Face directory or hub id) or `checkpoint` (a rocket training
run); optional `draft` (an HF directory / a rocket run) with `method` (any name of
`rocket.decode.METHODS`, default "ar"), `dtype`, `max_length` (default the model's max_seq_len) and
`max_gen_toks` (256). `python -m rocket.interop.lm_eval` registers the model and runs lm_eval's
own CLI; `import rocket.interop.lm_eval` registers it for `lm_eval.simple_evaluate` too.

The LM interface (lm_eval 0.4, `lm_eval.api.model.LM`), each request's `.args`:

  loglikelihood((context, continuation))  -> (sum_j log p(c_j | BOS, context, c_<j), all c_j greedy)
  loglikelihood_rolling((text,))          -> sum_j log p(t_j | BOS, t_<j) over windows of max_length
  generate_until((context, gen_kwargs))   -> text from rocket's decoding engine, cut at `until`

Scoring runs batched, jitted forwards over right-padded rows (lengths bucketed to multiples of 32,
so few compiles); `RocketLM` itself needs no lm_eval (the default tests call it directly).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rocket.decode import ModelStep, SamplerConfig, generate, resolve_method
from rocket.interop.decoding import load_hf_steps

BUCKET = 32


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), as lm_eval's HF models split them: trailing spaces of the
    context move to the continuation, and the continuation's ids are those of the joint encoding."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation).tolist()
    n_context = len(tokenizer.encode(context))
    return whole[:n_context], whole[n_context:]


class RocketLM:
    """The lm_eval LM interface over a rocket `ModelStep` (see the module docstring)."""

    def __init__(
        self,
        target: ModelStep,
        tokenizer: Any,
        *,
        draft: ModelStep | None = None,
        method: str = "ar",
        batch_size: int = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
    ) -> None:
        self.target, self.draft, self.tokenizer = target, draft, tokenizer
        self.method = resolve_method(method)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or target.spec.max_seq_len)
        self.max_gen_toks = int(max_gen_toks)
        model, variables = target.module, target.variables

        @jax.jit
        def logprobs(tokens_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
            """log p(tokens[:, t + 1] | tokens[:, :t + 1]) [B, T - 1] and whether it is the argmax."""
            positions = jnp.broadcast_to(jnp.arange(tokens_bt.shape[1]), tokens_bt.shape)
            logits_btv = model.apply(variables, tokens_bt, positions, routing="causal")[0]
            logp_btv = jax.nn.log_softmax(logits_btv[:, :-1].astype(jnp.float32), axis=-1)
            nxt_bt = tokens_bt[:, 1:]
            picked_bt = jnp.take_along_axis(logp_btv, nxt_bt[..., None], axis=-1)[..., 0]
            return picked_bt, logp_btv.argmax(-1) == nxt_bt

        self._logprobs = logprobs

    @classmethod
    def from_args(
        cls,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        draft: str | None = None,
        dtype: str = "float32",
        **kwargs: Any,
    ) -> RocketLM:
        """From a Hugging Face model (`pretrained`) or a rocket run (`checkpoint`), with an optional draft."""
        if (pretrained is None) == (checkpoint is None):
            raise ValueError("rocket model_args need exactly one of pretrained=HF_DIR and checkpoint=RUN")
        if pretrained is not None:
            target, draft_step, tokenizer = load_hf_steps(pretrained, draft, dtype=dtype)
        else:
            from rocket.train.restore import restore_run

            run = restore_run(checkpoint)
            target, tokenizer = ModelStep(run.model, {"params": run.params}), run.tokenizer()
            draft_step = None
            if draft is not None:
                draft_run = restore_run(draft)
                draft_step = ModelStep(draft_run.model, {"params": draft_run.params})
        return cls(target, tokenizer, draft=draft_step, **kwargs)

    def _score(self, rows: Sequence[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """For rows (tokens, start): (sum of log p(tokens[j]) for j >= start, all of them greedy)."""
        out = []
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s : s + self.batch_size]
            t = BUCKET * -(-max(len(r) for r, _ in chunk) // BUCKET)
            tokens = np.zeros((self.batch_size, t), np.int32)
            for i, (r, _) in enumerate(chunk):
                tokens[i, : len(r)] = r
            logp, greedy = map(np.asarray, self._logprobs(jnp.asarray(tokens)))
            for i, (r, start) in enumerate(chunk):
                span = slice(start - 1, len(r) - 1)
                out.append((float(logp[i, span].astype(np.float64).sum()), bool(greedy[i, span].all())))
        return out

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        rows = []
        for req in requests:
            context, continuation = encode_pair(self.tokenizer, *req.args)
            tokens = ([self.tokenizer.bos_id] + context + continuation)[-self.max_length :]
            rows.append((tokens, len(tokens) - len(continuation)))
        return self._score(rows)

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        """Every token scored once, with as much preceding context as fits in max_length."""
        out = []
        for req in requests:
            tokens = [self.tokenizer.bos_id] + self.tokenizer.encode(req.args[0]).tolist()
            windows, step = [], self.max_length - 1
            for start in range(1, len(tokens), step):
                end = min(start + step, len(tokens))
                lo = max(0, end - self.max_length)
                windows.append((tokens[lo:end], start - lo))
            out.append(sum(lp for lp, _ in self._score(windows)))
        return out

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Requests with the same generation arguments run together, `batch_size` rows per call."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out = [""] * len(requests)
        for index in groups.values():
            for s in range(0, len(index), self.batch_size):
                rows = index[s : s + self.batch_size]
                texts = self._generate([requests[i].args[0] for i in rows], requests[rows[0]].args[1])
                for i, text in zip(rows, texts):
                    out[i] = text
        return out

    def _generate(self, contexts: list[str], gen_kwargs: dict[str, Any]) -> list[str]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
        temperature = float(gen_kwargs.get("temperature", 0.0))
        sample = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        sampler = SamplerConfig(temperature=temperature) if sample else SamplerConfig(greedy=True)
        keep = self.max_length - max_new - self.method.block_width
        prompts = [([self.tokenizer.bos_id] + self.tokenizer.encode(c).tolist())[-keep:] for c in contexts]
        padded = np.zeros((self.batch_size, BUCKET * -(-max(map(len, prompts)) // BUCKET)), np.int32)
        lengths = np.ones((self.batch_size,), np.int32)  # unused rows: a one-token prompt
        for i, prompt in enumerate(prompts):
            padded[i, : len(prompt)], lengths[i] = prompt, len(prompt)
        result = generate(
            self.target,
            jnp.asarray(padded),
            jnp.asarray(lengths),
            jax.random.key(int(gen_kwargs.get("seed", 0))),
            max_new_tokens=max_new,
            method=self.method,
            sampler=sampler,
            draft=self.draft,
            eos_id=getattr(self.tokenizer, "eos_id", None),
        )
        tokens, n_tokens = np.asarray(result.tokens), np.asarray(result.n_tokens)
        texts = []
        for i in range(len(prompts)):
            text = self.tokenizer.decode(tokens[i, : n_tokens[i]])
            texts.append(text[: min([text.find(u) for u in until if u and u in text], default=len(text))])
        return texts


def register() -> type:
    """Registers `rocket` with lm_eval (needs lm_eval installed); returns the registered class."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    @register_model("rocket")
    class LMEvalRocket(RocketLM, LM):
        def __init__(self, batch_size: int | str = 8, device: str | None = None, **kwargs: Any) -> None:
            LM.__init__(self)
            del device  # jax places the model
            kwargs.pop("max_batch_size", None)
            loaded = RocketLM.from_args(
                batch_size=int(batch_size) if str(batch_size).isdigit() else 8, **kwargs
            )
            self.__dict__.update(loaded.__dict__)

    return LMEvalRocket


def main() -> None:
    """`python -m rocket.interop.lm_eval ARGS`: lm_eval's CLI with `rocket` registered."""
    register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
