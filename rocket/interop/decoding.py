"""Hugging Face models as decoding targets and drafts: `load_hf_steps(target, draft)`.

A draft must score the same token ids as its target: a draft whose tokenizer differs (another
family, another vocabulary) is refused unless both vocabularies are identical, token for token
(the same bytes for every id) and with the same logit width.
"""

from __future__ import annotations

import jax

from rocket.data import HFTokenizer
from rocket.decode import ModelStep
from rocket.interop.hf import load_hf
from rocket.interop.hf_config import InteropError
from rocket.models import Transformer


def same_vocabulary(a: HFTokenizer, b: HFTokenizer) -> bool:
    """Every id stands for the same bytes in both tokenizers."""
    return a.vocab_size == b.vocab_size and all(
        a.decode_bytes([i]) == b.decode_bytes([i]) and a.piece(i) == b.piece(i) for i in range(a.vocab_size)
    )


def load_hf_steps(
    target: str, draft: str | None = None, *, mesh: jax.sharding.Mesh | None = None, dtype: str = "float32"
) -> tuple[ModelStep, ModelStep | None, HFTokenizer]:
    """(target step, draft step or None, the target's tokenizer) of Hugging Face model directories
    (or hub ids); see the module docstring for the draft's vocabulary rule."""
    cfg, params, tokenizer = load_hf(target, mesh=mesh, dtype=dtype)
    target_step = ModelStep(Transformer(cfg), {"params": params})
    if draft is None:
        return target_step, None, tokenizer
    draft_cfg, draft_params, draft_tokenizer = load_hf(draft, mesh=mesh, dtype=dtype)
    if draft_cfg.vocab_size != cfg.vocab_size or not same_vocabulary(tokenizer, draft_tokenizer):
        raise InteropError(
            f"{draft}: the draft's vocabulary ({draft_tokenizer.vocab_size} tokens, logits over "
            f"{draft_cfg.vocab_size}) is not the target's ({tokenizer.vocab_size}, {cfg.vocab_size}); "
            "speculative decoding needs identical vocabularies"
        )
    return target_step, ModelStep(Transformer(draft_cfg), {"params": draft_params}), tokenizer
