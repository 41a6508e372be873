"""`loss`: the training transforms composed into the train step (`rocket.train.transforms`)."""

from __future__ import annotations

import dataclasses

from rocket.config.base import Registry, Section, check, choice

REWEIGHT_STRATEGIES = ("none", "uniform", "linupper", "quadratic", "extremes", "upper")
REWEIGHT_UNITS = ("row", "segment")
TOKEN_SELECTIONS = ("none", "sstoken")
EARLY_EXIT_CURRICULA = ("rotational", "none")  # LayerSkip's rotational curriculum, or every exit
# Transforms a user project adds (`rocket.train.transforms.register_transform`), enabled by name in
# `loss.transforms`; rocket's own transforms are configured by the fields above.
USER_TRANSFORMS: Registry = Registry("training transform", ())


@dataclasses.dataclass(frozen=True)
class LossConfig(Section):
    """Loss transforms composed into the train step (`rocket.train.transforms`).

    Attributes:
      reweight: loss-based sample reweighting (Sow et al., 2025, arXiv 2502.06733): "none", or the
        strategy f of the normalised sample loss: "uniform", "linupper", "quadratic", "extremes",
        "upper". Weights are softmax(f / temperature) over the batch's samples, times their count.
      reweight_temperature: the KL-regulariser r (> 0); large r tends to uniform weights.
      reweight_delta: delta, the half-width of the normalised loss range [-delta, delta].
      reweight_warmup_steps: uniform weights before this step (the paper's burn-out period).
      reweight_unit: what a "sample" is: "row" (a packed row, as in the paper's concat-and-chunk
        data) or "segment" (each packed document chunk).
      meap_rate: MEAP (Zhuang et al., 2025, arXiv 2502.07490): fraction of input positions replaced
        by `meap_mask_id` (targets unchanged), in [0, 1); 0.15 pretraining, 0.1 SFT, 0 = off.
      meap_mask_id: the [MASK] id; -1 = model.vocab_size - 1. Must not be a tokenizer id.
      token_select: "none" or "sstoken" (arXiv 2510.18250): keep the top
        `token_keep` fraction of each sample's target tokens by
        gamma * minmax(loss_ema - loss) + (1 - gamma) * attention-to-prompt.
      token_keep: kept fraction rho in (0, 1].
      token_gamma: the mix gamma in [0, 1] (1 = excess loss only, needs no prompt mask).
      token_ema_decay: decay alpha in [0, 1) of the EMA history model (kept in TrainState).
      token_warmup_steps: gamma = 0 (attention only) before this step, as the official code.
      aux_scales: extra scales for the model's aux losses, "name:scale,name:scale" (e.g.
        "mod_balance:0.5"); each named loss must be produced by the model.
      early_exit_scale: weight of LayerSkip's early-exit loss (arXiv 2404.16710) added to the
        objective (`rocket.train.early_exit`); 0 = off. Dense models only.
      early_exit_e_scale: e_scale of the per-exit scales e(l); early_exit_curriculum: "rotational"
        (exits every `early_exit_rotation` layers, rotating each step) or "none" (every exit);
      layer_dropout: p_max of LayerSkip's layer dropout in the early-exit forward, in [0, 1).
      transforms: comma-separated names of registered user transforms to compose after rocket's
        own (`docs/extending.md`, "A new training transform").
    """

    reweight: str = choice("none", REWEIGHT_STRATEGIES)
    reweight_temperature: float = 1.0
    reweight_delta: float = 1.0
    reweight_warmup_steps: int = 0
    reweight_unit: str = choice("row", REWEIGHT_UNITS)
    meap_rate: float = 0.0
    meap_mask_id: int = -1
    token_select: str = choice("none", TOKEN_SELECTIONS)
    token_keep: float = 0.6
    token_gamma: float = 0.5
    token_ema_decay: float = 0.99
    token_warmup_steps: int = 0
    aux_scales: str = ""
    early_exit_scale: float = 0.0
    early_exit_e_scale: float = 1.0
    early_exit_curriculum: str = choice("rotational", EARLY_EXIT_CURRICULA)
    early_exit_rotation: int = 2
    layer_dropout: float = 0.0
    transforms: str = ""

    def validate(self) -> None:
        check(
            self.reweight_temperature > 0,
            "reweight_temperature",
            f"must be positive, got {self.reweight_temperature}",
        )
        check(self.reweight_delta > 0, "reweight_delta", f"must be positive, got {self.reweight_delta}")
        check(self.reweight_warmup_steps >= 0, "reweight_warmup_steps", "must be >= 0")
        check(0.0 <= self.meap_rate < 1.0, "meap_rate", f"must be in [0, 1), got {self.meap_rate}")
        check(self.meap_mask_id >= -1, "meap_mask_id", "must be a token id or -1")
        check(0.0 < self.token_keep <= 1.0, "token_keep", f"must be in (0, 1], got {self.token_keep}")
        check(0.0 <= self.token_gamma <= 1.0, "token_gamma", f"must be in [0, 1], got {self.token_gamma}")
        check(
            0.0 <= self.token_ema_decay < 1.0,
            "token_ema_decay",
            f"must be in [0, 1), got {self.token_ema_decay}",
        )
        check(self.token_warmup_steps >= 0, "token_warmup_steps", "must be >= 0")
        parse_aux_scales(self.aux_scales)
        check(self.early_exit_scale >= 0, "early_exit_scale", f"must be >= 0, got {self.early_exit_scale}")
        check(
            self.early_exit_e_scale > 0, "early_exit_e_scale", f"must be > 0, got {self.early_exit_e_scale}"
        )
        check(
            self.early_exit_rotation >= 1,
            "early_exit_rotation",
            f"must be >= 1, got {self.early_exit_rotation}",
        )
        check(
            0.0 <= self.layer_dropout < 1.0, "layer_dropout", f"must be in [0, 1), got {self.layer_dropout}"
        )
        for name in self.transform_names:
            check(
                name in USER_TRANSFORMS,
                "transforms",
                f"unknown training transform {name!r}; registered: {USER_TRANSFORMS.names()}",
            )

    @property
    def transform_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.transforms.split(",") if n.strip())

    @property
    def aux_scale_map(self) -> dict[str, float]:
        return parse_aux_scales(self.aux_scales)


def parse_aux_scales(spec: str) -> dict[str, float]:
    """ "a:0.5,b:2" -> {"a": 0.5, "b": 2.0}; ConfigError naming `loss.aux_scales` on bad input."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = item.partition(":")
        try:
            scale = float(value)
        except ValueError:
            scale = float("nan")
        check(
            bool(sep and name.strip()) and scale == scale and scale >= 0,
            "aux_scales",
            f"expected 'name:scale' with scale >= 0, got {item!r}",
        )
        check(name.strip() not in out, "aux_scales", f"{name.strip()!r} is given twice")
        out[name.strip()] = scale
    return out
