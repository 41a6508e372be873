"""Decoding: the shared KV cache, samplers, the decoding engine and its methods.

`generate(target, prompt, prompt_len, key, method=..., ...)` runs any method inside one jitted
`lax.while_loop` (see `rocket.decode.engine` for how a method plugs in).
"""

from rocket.decode.autoregressive import Autoregressive
from rocket.decode.cache import (
    Cache,
    KVBlock,
    LayerCache,
    check_capacity,
    commit_block,
    commit_path,
    init_cache,
    rollback,
)
from rocket.decode.cost_model import call_widths, chain_mat, modelled_speedup, modelled_time_per_token
from rocket.decode.engine import (
    Ctx,
    DecodeOutput,
    ModelStep,
    RoundOut,
    Stats,
    StepOut,
    last_prompt_token,
    new_cache,
    prefill,
    run,
)
from rocket.decode.methods import METHODS, decode_stats, generate, resolve_method
from rocket.decode.sampling import SamplerConfig, sample, warp
from rocket.decode.speculative import DySpec, Speculative
from rocket.decode.token_recycling import TokenRecycling

__all__ = [
    "Autoregressive",
    "Cache",
    "KVBlock",
    "LayerCache",
    "check_capacity",
    "commit_block",
    "commit_path",
    "init_cache",
    "rollback",
    "call_widths",
    "chain_mat",
    "modelled_speedup",
    "modelled_time_per_token",
    "Ctx",
    "DecodeOutput",
    "ModelStep",
    "RoundOut",
    "Stats",
    "StepOut",
    "new_cache",
    "last_prompt_token",
    "prefill",
    "run",
    "METHODS",
    "decode_stats",
    "generate",
    "resolve_method",
    "SamplerConfig",
    "sample",
    "warp",
    "DySpec",
    "Speculative",
    "TokenRecycling",
]
