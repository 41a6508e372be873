"""Parameter initialisers with logical axis names attached (for `rocket.parallel`'s rules)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn


def kernel_init(names: Sequence[str], *, in_axes: int = 1, depth: int = 0) -> nn.initializers.Initializer:
    """Truncated-normal fan-in init (variance 1/fan_in) over the first `in_axes` dims.

    `depth > 0` marks a residual output projection: its scale is further divided by sqrt(2 * depth)
    (GPT-2 / Megatron practice) so the residual stream's variance does not grow with the layer count.
    """
    scale = 1.0 / (2.0 * depth) if depth else 1.0
    init = nn.initializers.variance_scaling(
        scale,
        "fan_in",
        "truncated_normal",
        in_axis=tuple(range(in_axes)),
        out_axis=tuple(range(in_axes, len(names))),
    )
    return nn.with_logical_partitioning(init, tuple(names))


def embed_init(names: Sequence[str], std: float) -> nn.initializers.Initializer:
    return nn.with_logical_partitioning(nn.initializers.normal(stddev=std), tuple(names))
