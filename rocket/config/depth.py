"""`model.mod`, `model.router`, `model.mor`: adaptive depth (Mixture-of-Depths, p-MoD,
Mixture-of-Recursions).

References: Raposo et al., "Mixture-of-Depths", arXiv 2404.02258; Zhang et al., "p-MoD", arXiv
2412.04449 (TanhNorm gate, STRing, progressive ratio decay); Bae et al., "Mixture-of-Recursions",
arXiv 2507.10524. The layers are in `rocket.routing`, `rocket.models.mod`, `rocket.models.mor`.
"""

from __future__ import annotations

import dataclasses
import math

from rocket.config.base import Section, check, choice, non_negative, positive

BLOCK_KINDS = ("dense", "mod")
MOD_SCHEDULES = ("constant", "prd")
MOD_GATES = ("raw", "sigmoid", "tanhnorm")
CAUSAL_ROUTERS = ("aux_bce", "predictor")
MOR_SHARINGS = ("none", "cycle", "middle_cycle")
MOR_ROUTERS = ("expert", "token", "none")
MOR_TOKEN_GATES = ("softmax", "sigmoid")
MOR_KV = ("recursion", "share")


def prd_capacities(n_layers: int, mean: float, cap_max: float, cap_min: float) -> list[float | None]:
    """p-MoD progressive ratio decay over layers: rho(l) = mean + cos(pi * l / (L - 1)) / 2.

    Layer l is routed iff rho(l) <= cap_max, with capacity max(rho(l), cap_min); otherwise dense
    (None). (The official code hard-codes L - 1 = 31 for a 32-layer model; here it is L - 1.)
    """
    out: list[float | None] = []
    for layer in range(n_layers):
        rho = mean + 0.5 * math.cos(math.pi * layer / max(n_layers - 1, 1))
        out.append(max(rho, cap_min) if rho <= cap_max else None)
    return out


@dataclasses.dataclass(frozen=True)
class ModConfig(Section):
    """Mixture-of-Depths layers.

    Attributes:
      pattern: comma-separated block kinds cycled over the layers: "dense" (no MoD), "dense,mod"
        (MoD on every other layer, the paper's setting), "mod" (every layer a candidate).
      capacity: fraction c in (0, 1] of each row's tokens a MoD layer processes (k =
        max(1, floor(c T))); with schedule "prd" it is p-MoD's mean ratio rho-bar.
      schedule: "constant" or "prd" (p-MoD progressive ratio decay, `prd_capacities`: a "mod"
        layer is routed iff rho(l) <= prd_max, at capacity max(rho(l), prd_min)).
      gate: "raw" (the router score, MoD paper), "sigmoid" (alpha sigmoid(r)), "tanhnorm" (p-MoD:
        alpha tanh(r) + 1 with a zero-initialised router, so the gate starts at exactly 1).
      gate_alpha: alpha of the sigmoid / tanhnorm gates (p-MoD: 0.2).
      string: p-MoD STRing: skipped tokens are scaled by the gate too (needs "tanhnorm").
      aux_coef: weight of the routers' causal BCE loss (summed over MoD layers).
    """

    pattern: str = "dense"
    capacity: float = 0.125
    schedule: str = choice("constant", MOD_SCHEDULES)
    prd_max: float = 0.85
    prd_min: float = 0.15
    gate: str = choice("raw", MOD_GATES)
    gate_alpha: float = 0.2
    string: bool = False
    aux_coef: float = 0.01

    @property
    def kinds(self) -> tuple[str, ...]:
        """The pattern's block kinds, in order (not yet cycled over the layers)."""
        return tuple(k.strip() for k in self.pattern.split(","))

    def validate(self) -> None:
        for kind in self.kinds:
            check(kind in BLOCK_KINDS, "pattern", f"unknown block kind {kind!r}; available: {BLOCK_KINDS}")
        check(0.0 < self.capacity <= 1.0, "capacity", f"must be in (0, 1], got {self.capacity}")
        check(0.0 < self.prd_min <= 1.0, "prd_min", f"must be in (0, 1], got {self.prd_min}")
        positive(self, "prd_max")
        check(
            not self.string or self.gate == "tanhnorm",
            "string",
            "STRing scales skipped tokens by the gate and needs the bounded 'tanhnorm' gate",
        )
        non_negative(self, "aux_coef")


@dataclasses.dataclass(frozen=True)
class RouterConfig(Section):
    """How MoD and MoR routers decide per token when routing causally (decoding).

    Attributes:
      causal: "aux_bce" (router logit > 0, trained by BCE against top-k membership) or
        "predictor" (a stop-gradient MLP's logit > 0; Raposo et al. sec. 3.5 option b).
      predictor_hidden: hidden width of that predictor MLP.
    """

    causal: str = choice("aux_bce", CAUSAL_ROUTERS)
    predictor_hidden: int = 64

    def validate(self) -> None:
        positive(self, "predictor_hidden")


@dataclasses.dataclass(frozen=True)
class MoRConfig(Section):
    """Mixture-of-Recursions: a recursive stack of shared layers with per-token depth.

    `model.n_layers` counts layer applications (the unrolled depth L), as in the paper.

    Attributes:
      sharing: "none" (no MoR), "cycle" (L / N_r shared layers applied N_r times) or
        "middle_cycle" (unique first and last layers around (L - 2) / N_r shared ones).
      recursions: N_r >= 1.
      router: "expert" (expert-choice, nested top-k with capacities (N_r - r) / N_r), "token"
        (token-choice: one router picks each token's depth), or "none" (plain recursion).
      alpha / temp: the gate alpha * f(router(x / temp)) (expert: f = sigmoid).
      token_gate: token-choice gate f: "softmax" or "sigmoid".
      aux_coef: expert-choice BCE weight (summed over recursions; paper 0.001).
      z_loss_coef: router z-loss weight (paper: 0 for expert-choice, 1e-5 for token-choice).
      balance_coef: token-choice balancing loss weight (paper 0.1).
      kv: "recursion" (every layer application has its own K/V) or "share" (recursions r >= 1
        attend to recursion 0's K/V of the same shared layer; only those are cached).
      gate_only: expert router with capacity 1 at every recursion: every token takes every
        recursion through the learned gate h + g B(h), nothing is routed (a control that
        separates the gate from the routing).
    """

    sharing: str = choice("none", MOR_SHARINGS)
    recursions: int = 2
    router: str = choice("expert", MOR_ROUTERS)
    alpha: float = 0.1
    temp: float = 1.0
    token_gate: str = choice("softmax", MOR_TOKEN_GATES)
    aux_coef: float = 0.001
    z_loss_coef: float = 0.0
    balance_coef: float = 0.1
    kv: str = choice("recursion", MOR_KV)
    gate_only: bool = False

    @property
    def enabled(self) -> bool:
        return self.sharing != "none"

    @property
    def unique_edge_layers(self) -> int:
        """Layers outside the recursion: 2 for "middle_cycle" (first and last), else 0."""
        return 2 if self.sharing == "middle_cycle" else 0

    def validate(self) -> None:
        check(self.recursions >= 1, "recursions", f"must be >= 1, got {self.recursions}")
        check(not self.gate_only or self.router == "expert", "gate_only", "needs router='expert'")
        positive(self, "temp")
        non_negative(self, "aux_coef", "z_loss_coef", "balance_coef")
