"""rocket's models: one decoder class whose blocks, attention and projections come from config."""

from rocket.models.accounting import flops_per_token, param_count
from rocket.models.transformer import Block, Transformer

__all__ = ["Transformer", "Block", "param_count", "flops_per_token"]
