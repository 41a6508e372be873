"""`model.arch`: the architecture options that separate the Llama-style model families.

rocket's dense model is a Llama (RoPE, RMSNorm pre-norm, GQA, SwiGLU). The other families
`rocket.interop` imports differ from it by a few local choices, each a field here (defaults = Llama):

  rope_scaling="llama3"     Llama 3.1 frequency-dependent RoPE scaling (`rocket.layers.rope`)
  sliding_window=W          Mistral: a query at position i sees keys at i - W < j <= i
  qkv_bias                  Qwen2 / Qwen2.5: biases on the q, k, v projections
  qk_norm                   Qwen3: RMSNorm over each head's q and k before RoPE
  norm_offset               Gemma: every RMSNorm scales by (1 + w), w initialised to 0
  embed_scale               Gemma: the embedding lookup is multiplied by sqrt(d_model)
  mlp_activation="gelu_tanh"  Gemma: GeGLU with the tanh-approximate GeLU instead of SwiGLU

(head_dim independent of d_model and tied / untied embeddings are `ModelConfig.head_dim` and
`tie_embeddings`.)
"""

from __future__ import annotations

import dataclasses

from rocket.config.base import Section, check, choice

ROPE_SCALINGS = ("none", "llama3")
MLP_ACTIVATIONS = ("silu", "gelu_tanh")


@dataclasses.dataclass(frozen=True)
class ArchConfig(Section):
    """Family options of the dense decoder (module docstring).

    Attributes:
      rope_scaling: "none" or "llama3" (inverse frequencies with wavelength above
        rope_original_max_len / rope_low_freq_factor are divided by rope_factor, those below
        rope_original_max_len / rope_high_freq_factor kept, the band between interpolated).
      rope_factor, rope_low_freq_factor, rope_high_freq_factor, rope_original_max_len: its parameters.
      sliding_window: None (full causal attention) or W >= 1 keys back, the query's own included.
      qkv_bias: learned biases on the query, key and value projections.
      qk_norm: RMSNorm over the head dimension of queries and keys, before RoPE.
      norm_offset: RMSNorm computes x_hat * (1 + w) with w initialised to zero.
      embed_scale: multiply the looked-up embeddings by sqrt(d_model) (not the tied readout).
      mlp_activation: the gate activation of the gated MLP: "silu" (SwiGLU) or "gelu_tanh" (GeGLU).
    """

    rope_scaling: str = choice("none", ROPE_SCALINGS)
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    sliding_window: int | None = None
    qkv_bias: bool = False
    qk_norm: bool = False
    norm_offset: bool = False
    embed_scale: bool = False
    mlp_activation: str = choice("silu", MLP_ACTIVATIONS)

    def validate(self) -> None:
        check(self.rope_factor >= 1, "rope_factor", f"must be >= 1, got {self.rope_factor}")
        check(
            0 < self.rope_low_freq_factor < self.rope_high_freq_factor,
            "rope_high_freq_factor",
            f"needs 0 < rope_low_freq_factor < rope_high_freq_factor, got "
            f"{self.rope_low_freq_factor} and {self.rope_high_freq_factor}",
        )
        check(self.rope_original_max_len >= 1, "rope_original_max_len", "must be >= 1")
        check(
            self.sliding_window is None or self.sliding_window >= 1,
            "sliding_window",
            f"must be >= 1 (or None for full attention), got {self.sliding_window}",
        )

    @property
    def rope(self) -> tuple[float, float, float, int] | None:
        """Llama-3 scaling as (factor, low_freq_factor, high_freq_factor, original_max_len), or None."""
        if self.rope_scaling == "none":
            return None
        return (
            self.rope_factor,
            self.rope_low_freq_factor,
            self.rope_high_freq_factor,
            self.rope_original_max_len,
        )
