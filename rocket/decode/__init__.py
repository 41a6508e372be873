"""Decoding: the engine, its methods and the tools beside it.

`generate(target, prompt, prompt_len, key, method=..., ...)` runs any method inside one jitted
`lax.while_loop` (see `rocket.decode.engine` for how a method plugs in).

  * engine room (this package's top level): `engine` (the loop, `ModelStep`, the `Method`
    protocol), `protocol` (`DecodableModel`, what a model must provide), `sampling`, `verify`,
    `trees`, `cost_model`, `rng` and `generate`. The KV cache lives below the models, in
    `rocket.layers.cache`, and is re-exported here.
  * `rocket.decode.methods`: one module per method, the `METHODS` registry, `register_method`.
  * `rocket.decode.tools`: byte-level transforms that do not run on the engine (`byte_probs`,
    `regex_dfa`); they never import a method.
"""

from rocket.decode.cost_model import call_widths, chain_mat, modelled_speedup, modelled_time_per_token
from rocket.decode.engine import (
    Ctx,
    DecodeOutput,
    Method,
    ModelStep,
    RoundOut,
    StagedCache,
    Stats,
    StepOut,
    last_prompt_token,
    new_cache,
    prefill,
    run,
)
from rocket.decode.generate import decode_stats, generate
from rocket.decode.methods import (
    METHODS,
    Autoregressive,
    AWRSDecode,
    ContrastiveSearch,
    DySpec,
    MomentumDecoding,
    SelfExit,
    SelfMoD,
    SelfMoR,
    SelfSkip,
    Speculative,
    StreamingAR,
    StreamPolicy,
    TokenRecycling,
    register_method,
    resolve_method,
)
from rocket.decode.protocol import DecodableConfig, DecodableModel, DecodeSpec
from rocket.decode.sampling import SamplerConfig, sample, warp
from rocket.layers.cache import (
    Cache,
    KVBlock,
    LayerCache,
    check_capacity,
    commit_block,
    commit_path,
    init_cache,
    rollback,
)

__all__ = [
    # the KV cache (rocket.layers.cache)
    "Cache",
    "KVBlock",
    "LayerCache",
    "check_capacity",
    "commit_block",
    "commit_path",
    "init_cache",
    "rollback",
    # engine
    "Ctx",
    "DecodeOutput",
    "Method",
    "ModelStep",
    "RoundOut",
    "StagedCache",
    "Stats",
    "StepOut",
    "new_cache",
    "last_prompt_token",
    "prefill",
    "run",
    "DecodableConfig",
    "DecodableModel",
    "DecodeSpec",
    "SamplerConfig",
    "sample",
    "warp",
    "call_widths",
    "chain_mat",
    "modelled_speedup",
    "modelled_time_per_token",
    # generate
    "decode_stats",
    "generate",
    # methods
    "METHODS",
    "register_method",
    "resolve_method",
    "AWRSDecode",
    "Autoregressive",
    "ContrastiveSearch",
    "DySpec",
    "MomentumDecoding",
    "SelfExit",
    "SelfMoD",
    "SelfMoR",
    "SelfSkip",
    "Speculative",
    "StreamPolicy",
    "StreamingAR",
    "TokenRecycling",
]
