"""Verification (tree / chain) attention for decoding: a split-K Pallas kernel over the cache."""

from pallas_kernels.verify_attention.api import verify_attention
from pallas_kernels.verify_attention.reference import verify_reference

__all__ = ["verify_attention", "verify_reference"]
