"""The decoding methods of the engine, one module each, and the registry `generate(method=name)` reads.

`METHODS` maps a name to a default configuration. A project adds its own method by name, without
editing rocket:

    register_method("my_greedy", MyGreedy())          # MyGreedy: a frozen dataclass, a `Method`
    generate(target, prompt, prompt_len, key, method="my_greedy", max_new_tokens=64)
"""

from __future__ import annotations

from rocket.decode.engine import Method
from rocket.decode.methods.autoregressive import Autoregressive
from rocket.decode.methods.awrs import AWRSDecode
from rocket.decode.methods.contrastive import ContrastiveSearch
from rocket.decode.methods.momentum import MomentumDecoding
from rocket.decode.methods.self_spec import SelfExit, SelfMoD, SelfMoR, SelfSkip
from rocket.decode.methods.speculative import DySpec, Speculative
from rocket.decode.methods.streaming import StreamingAR, StreamPolicy
from rocket.decode.methods.token_recycling import TokenRecycling

METHODS: dict[str, Method] = {
    "ar": Autoregressive(),
    "speculative": Speculative(branching=(1, 1, 1, 1)),  # chain, gamma = 4
    "tree": Speculative(branching=(3, 2, 1)),  # i.i.d. siblings (SpecInfer), kernel 2
    "spectr": Speculative(branching=(3, 2, 1), kseq=True),  # i.i.d. siblings, SpecTr K-SEQ
    "rsd": Speculative(branching=(3, 2, 1), sampling="without_replacement"),  # RSD-C
    "dyspec": DySpec(),
    "token_recycling": TokenRecycling(),
    "contrastive": ContrastiveSearch(),  # k = 4, alpha = 0.6
    "momentum": MomentumDecoding(),
    "streaming": StreamingAR(),  # attention sinks + rolling window (StreamingLLM defaults)
    # self-speculation: the model drafts with its own shallow path, one KV cache (gamma = 4)
    "self_exit": SelfExit(exit_layer=1),  # early exit after layer 1 (LayerSkip)
    "self_skip": SelfSkip(skip=(1,)),  # skip a layer set (Draft & Verify)
    "self_mod": SelfMoD(),  # MoD: every routed layer skipped
    "self_mor": SelfMoR(recursions=1),  # MoR: the first recursion only
}


def register_method(name: str, method: Method, *, overwrite: bool = False) -> None:
    """Makes `method` (an instance) available as `generate(method=name)` and in `METHODS`.

    Raises ValueError when `name` is taken (unless `overwrite`) and TypeError when `method` is not
    a hashable instance satisfying the `Method` protocol (it is a static argument of jit).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a decoding method name must be a non-empty string, got {name!r}")
    if isinstance(method, type) or not isinstance(method, Method):
        raise TypeError(
            f"{method!r} is not a decoding method instance: it needs needs_draft, rebases_positions, "
            "emit_width, block_width, init, round and carry (subclass rocket.decode.Method)"
        )
    try:
        hash(method)
    except TypeError as e:
        raise TypeError(f"decoding method {name!r} must be hashable (a frozen dataclass)") from e
    if name in METHODS and not overwrite:
        raise ValueError(
            f"decoding method {name!r} is already registered ({METHODS[name]!r}); pass overwrite=True"
        )
    METHODS[name] = method


def resolve_method(method: str | Method) -> Method:
    """A method instance from an instance or a name in `METHODS`."""
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"unknown decoding method {method!r}; known: {sorted(METHODS)}")
        return METHODS[method]
    return method


__all__ = [
    "AWRSDecode",
    "Autoregressive",
    "ContrastiveSearch",
    "DySpec",
    "METHODS",
    "MomentumDecoding",
    "Speculative",
    "StreamPolicy",
    "StreamingAR",
    "TokenRecycling",
    "SelfExit",
    "SelfMoD",
    "SelfMoR",
    "SelfSkip",
    "register_method",
    "resolve_method",
]
