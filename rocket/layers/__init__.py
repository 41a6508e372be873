"""Building blocks shared by every rocket model."""

from rocket.layers.attention import Attention, attention_fn, make_block_mask
from rocket.layers.embed import Embed
from rocket.layers.lexinvariant import LexinvariantEmbed
from rocket.layers.mlp import SwiGLU
from rocket.layers.norms import RMSNorm
from rocket.layers.pattention import Pattention, PattentionSpec
from rocket.layers.rope import apply_rope, rope_frequencies
from rocket.layers.softplus import softplus_attention

__all__ = [
    "Attention",
    "attention_fn",
    "make_block_mask",
    "Embed",
    "SwiGLU",
    "RMSNorm",
    "apply_rope",
    "rope_frequencies",
    "Pattention",
    "PattentionSpec",
    "softplus_attention",
    "LexinvariantEmbed",
]
