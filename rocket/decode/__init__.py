"""Decoding: the shared KV cache, samplers, and generation loops."""

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
from rocket.decode.generate import generate, new_cache, prefill
from rocket.decode.sampling import SamplerConfig, sample, warp

__all__ = [
    "Cache",
    "KVBlock",
    "LayerCache",
    "check_capacity",
    "commit_block",
    "commit_path",
    "init_cache",
    "rollback",
    "generate",
    "new_cache",
    "prefill",
    "SamplerConfig",
    "sample",
    "warp",
]
