"""Fused Pattention (TokenFormer) as Pallas kernels with a custom VJP."""

from pallas_kernels.pattention.api import pattention
from pallas_kernels.pattention.reference import NORMS, pattention_reference

__all__ = ["NORMS", "pattention", "pattention_reference"]
