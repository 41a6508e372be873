"""`parallel`: the device mesh (`rocket.parallel`)."""

from __future__ import annotations

import dataclasses

from rocket.config.base import Section, check


@dataclasses.dataclass(frozen=True)
class ParallelConfig(Section):
    """Device mesh with axes (data, fsdp, tensor); -1 on one axis means "all remaining devices"."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def validate(self) -> None:
        sizes = (self.data, self.fsdp, self.tensor)
        check(sum(s == -1 for s in sizes) <= 1, "data", "at most one of data, fsdp, tensor may be -1")
        for name, s in zip(("data", "fsdp", "tensor"), sizes):
            check(s == -1 or s >= 1, name, f"must be -1 or a positive integer, got {s}")
