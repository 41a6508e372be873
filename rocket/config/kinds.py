"""`model.attention`, `model.projection`, `model.embedding`: the layer kinds a model is built from.

Attention and projection kinds are open sets (`ATTENTION_KINDS`, `PROJECTION_KINDS`): rocket's
built-ins are declared here and implemented in `rocket.layers` (`docs/extending.md`, "A new layer
kind", shows a user's own kind registered from another project).
"""

from __future__ import annotations

import dataclasses

from rocket.config.base import Registry, Section, check, choice, optional_positive

ATTENTION_KINDS: Registry = Registry("attention kind", ("softmax", "softplus"))
ATTENTION_IMPLS = ("xla", "pallas", "auto")
PROJECTION_KINDS: Registry = Registry("projection kind", ("dense", "pattention"))
PATTENTION_NORMS = ("l2_norm_gelu", "gelu_l2_norm", "softmax")
EMBEDDING_KINDS = ("learned", "lexinvariant")


@dataclasses.dataclass(frozen=True)
class AttentionConfig(Section):
    """How tokens attend.

    Attributes:
      kind: "softmax", or "softplus" (LSSA: softplus scores, L1 normalisation and the
        log d log N length scale; `rocket.layers.softplus`), or a registered user kind.
      softplus_power: LSSAR re-weighting power p > 0 (None = no re-weighting); softplus only.
        Changing it on a trained model needs no new parameters.
      impl: "xla" (the jnp reference, every backend), "pallas" (fused kernels: cuDNN or
        pallas_kernels; interpreted, slowly, on CPU) or "auto" (pallas on GPU/TPU, xla on CPU).
    """

    kind: str = choice("softmax", ATTENTION_KINDS)
    softplus_power: float | None = None
    impl: str = choice("xla", ATTENTION_IMPLS)

    def validate(self) -> None:
        check(
            self.softplus_power is None or self.softplus_power > 0,
            "softplus_power",
            f"the re-weighting power must be > 0 (or None for no re-weighting), got {self.softplus_power}",
        )
        check(
            self.softplus_power is None or self.kind == "softplus",
            "softplus_power",
            f"re-weighting applies to kind='softplus' only, got kind={self.kind!r}",
        )


@dataclasses.dataclass(frozen=True)
class ProjectionConfig(Section):
    """The projections of attention (Q, K, V, output) and the FFN.

    Attributes:
      kind: "dense" (weight matrices; SwiGLU FFN), "pattention" (TokenFormer, Wang et al., 2024,
        arXiv 2410.23168: every projection is attention over learned parameter tokens;
        `rocket.layers.pattention`, growth in `rocket.models.tokenformer.grow`), or a registered
        user kind.
      param_tokens: parameter tokens n of each attention projection (None = d_model).
      param_tokens_ffn: parameter tokens of the FFN Pattention (None = 4 * param_tokens).
      norm: score normalisation: "l2_norm_gelu" (official default), "gelu_l2_norm", or "softmax".
      scale_tokens / scale_tokens_ffn: the frozen constant n_scale of the scale tau = sqrt(n_scale).
        None = the layer's own n; `grow` pins it to the pre-growth n so the grown model computes
        exactly the same function.
    """

    kind: str = choice("dense", PROJECTION_KINDS)
    param_tokens: int | None = None
    param_tokens_ffn: int | None = None
    norm: str = choice("l2_norm_gelu", PATTENTION_NORMS)
    scale_tokens: int | None = None
    scale_tokens_ffn: int | None = None

    def validate(self) -> None:
        optional_positive(self, "param_tokens", "param_tokens_ffn", "scale_tokens", "scale_tokens_ffn")


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig(Section):
    """The token embedding (and, tied, the readout).

    Attributes:
      kind: "learned" (a table) or "lexinvariant" (per-sequence random Gaussian embeddings scored
        by the same per-sequence matrix; Huang et al., 2023, arXiv 2305.16349;
        `rocket.layers.lexinvariant`).
      learned_prob: the semi-lexinvariant variant: each sequence uses the learned table instead of
        its random one with this probability (0 = pure lexinvariant).
    """

    kind: str = choice("learned", EMBEDDING_KINDS)
    learned_prob: float = 0.0

    def validate(self) -> None:
        check(0.0 <= self.learned_prob <= 1.0, "learned_prob", f"must be in [0, 1], got {self.learned_prob}")
