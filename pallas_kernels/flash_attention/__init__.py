"""Flash attention (softmax, softplus LSSA / LSSAR) as Pallas kernels with a custom VJP."""

from pallas_kernels.flash_attention.api import attention
from pallas_kernels.flash_attention.reference import attention_reference, visibility

__all__ = ["attention", "attention_reference", "visibility"]
