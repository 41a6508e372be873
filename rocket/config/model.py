"""`model`: the decoder's shape, numerics and the feature sections it is built from.

    model.attention   AttentionConfig   (kind, softplus_power, impl)
    model.projection  ProjectionConfig  (kind, param_tokens, param_tokens_ffn, norm, scale_tokens...)
    model.embedding   EmbeddingConfig   (kind, learned_prob)
    model.mod         ModConfig         (pattern, capacity, schedule, gate, ...)
    model.router      RouterConfig      (causal, predictor_hidden)
    model.mor         MoRConfig         (sharing, recursions, router, kv, ...)
    model.arch        ArchConfig        (rope_scaling, sliding_window, qkv_bias, qk_norm, ... : families)

Every quantity derived from several fields (head and FFN widths, per-layer block kinds and MoD
capacities, MoR layer counts, the number of K/V cache layers) is a property here and nowhere else.
"""

from __future__ import annotations

import dataclasses

from rocket.config.arch import ArchConfig
from rocket.config.base import Section, check, choice, optional_positive
from rocket.config.depth import ModConfig, MoRConfig, RouterConfig, prd_capacities
from rocket.config.kinds import AttentionConfig, EmbeddingConfig, ProjectionConfig

DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """A decoder-only LM (Llama-style baseline: RoPE, RMSNorm pre-norm, GQA, SwiGLU).

    Attributes:
      vocab_size: number of token ids; must cover the tokenizer's vocabulary.
      d_model: residual-stream width D.
      n_layers: number of decoder blocks L (with MoR: layer applications).
      n_heads: query heads H.
      n_kv_heads: key/value heads H_kv (grouped-query attention); H must be divisible by H_kv.
      head_dim: per-head width D_h; None = D // H.
      d_ff: SwiGLU hidden width F; None = 8/3 * D rounded up to a multiple of 64.
      max_seq_len: the longest sequence (prompt + generation) the model is configured for.
      rope_theta: RoPE base frequency.
      norm_eps: RMSNorm epsilon.
      tie_embeddings: score logits against the input embedding matrix (no separate unembedding).
      dtype: compute dtype of activations and matmuls ("float32" or "bfloat16"). Softmax,
        normalisation statistics and logits are always float32.
      param_dtype: storage dtype of parameters (float32 is the recommended policy).
      scan_layers: loop the body with `nn.scan` (params with a leading 'layers' axis): one
        compiled block for dense layers, one period of `mod.pattern` for MoD (not with p-MoD's
        "prd" schedule), one shared block per recursion for MoR (`rocket.models.scan`); faster
        compiles for deep models.
      remat: rematerialisation policy of each block: "none", "full" (save nothing), "dots" (save
        matmul outputs), "dots_no_batch" (save matmuls without batch dims).
      init_std: standard deviation of the embedding initialiser.
      init_from: "" (random init) or "hf:PATH" (a Hugging Face model directory or hub id): training
        starts from those weights, and the architecture fields come from its config.json
        (`rocket.interop.hf`).
      attention, projection, embedding, mod, router, mor, arch: the feature sections (module docstring).
    """

    vocab_size: int = 258
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 256
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    dtype: str = choice("float32", DTYPES)
    param_dtype: str = choice("float32", DTYPES)
    scan_layers: bool = False
    remat: str = choice("none", REMAT_POLICIES)
    init_std: float = 0.02
    init_from: str = ""
    attention: AttentionConfig = AttentionConfig()
    projection: ProjectionConfig = ProjectionConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    mod: ModConfig = ModConfig()
    router: RouterConfig = RouterConfig()
    mor: MoRConfig = MoRConfig()
    arch: ArchConfig = ArchConfig()

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "max_seq_len"):
            value = getattr(self, name)
            check(int(value) >= 1, name, f"must be a positive integer, got {value}")
        check(
            self.d_model % self.n_heads == 0 or self.head_dim is not None,
            "d_model",
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads} (or set head_dim)",
        )
        check(
            self.n_heads % self.n_kv_heads == 0,
            "n_kv_heads",
            f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}",
        )
        optional_positive(self, "head_dim", "d_ff")
        check(
            self.resolved_head_dim % 2 == 0,
            "head_dim",
            f"RoPE needs an even head dimension, got {self.resolved_head_dim}",
        )
        check(self.rope_theta > 0, "rope_theta", "must be positive")
        check(self.norm_eps > 0, "norm_eps", "must be positive")
        check(
            self.embedding.kind != "lexinvariant" or self.tie_embeddings,
            "tie_embeddings",
            "a lexinvariant model must score logits against its per-sequence embeddings "
            "(tie_embeddings=True); a learned unembedding reintroduces a fixed lexicon",
        )
        check(
            self.init_from == "" or self.init_from.startswith("hf:"),
            "init_from",
            f"must be '' or 'hf:PATH', got {self.init_from!r}",
        )
        check(
            not (self.arch.qkv_bias or self.arch.qk_norm) or self.projection.kind == "dense",
            "arch.qkv_bias" if self.arch.qkv_bias else "arch.qk_norm",
            f"applies to dense projections only, got projection.kind={self.projection.kind!r}",
        )
        self._check_depth()

    def _check_depth(self) -> None:
        mor, dense_only = self.mor, set(self.mod.kinds) == {"dense"}
        if mor.enabled:
            shared = self.n_layers - mor.unique_edge_layers
            check(
                shared >= mor.recursions and shared % mor.recursions == 0,
                "mor.recursions",
                f"{mor.sharing} sharing needs recursions={mor.recursions} to divide the {shared} "
                f"recursed layers of n_layers={self.n_layers}",
            )
            check(dense_only, "mod.pattern", "MoD layers cannot be combined with MoR")
        check(
            not self.scan_layers or dense_only or self.mod.schedule == "constant",
            "scan_layers",
            "scanning MoD layers needs a repeating pattern of capacities; mod.schedule='prd' changes "
            "the capacity with every layer (use mod.schedule='constant' or scan_layers=False)",
        )

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def resolved_d_ff(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return -(-(8 * self.d_model // 3) // 64) * 64

    @property
    def resolved_n_param_tokens(self) -> int:
        """Parameter tokens of each attention Pattention (TokenFormer)."""
        n = self.projection.param_tokens
        return n if n is not None else self.d_model

    @property
    def resolved_n_param_tokens_ffn(self) -> int:
        """Parameter tokens of the FFN Pattention (TokenFormer)."""
        n = self.projection.param_tokens_ffn
        return n if n is not None else 4 * self.resolved_n_param_tokens

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The block kind of every layer: `mod.pattern` cycled over n_layers."""
        kinds = self.mod.kinds
        return tuple(kinds[i % len(kinds)] for i in range(self.n_layers))

    @property
    def layer_capacities(self) -> tuple[float | None, ...]:
        """MoD capacity of every layer (None = a dense layer)."""
        mod = self.mod
        if mod.schedule == "prd":
            caps = prd_capacities(self.n_layers, mod.capacity, mod.prd_max, mod.prd_min)
        else:
            caps = [mod.capacity] * self.n_layers
        return tuple(c if kind == "mod" else None for kind, c in zip(self.block_kinds, caps))

    @property
    def mor_layers_per_recursion(self) -> int:
        """m: the shared layers one MoR recursion applies ((L - edge layers) / N_r; 0 without MoR)."""
        if not self.mor.enabled:
            return 0
        return (self.n_layers - self.mor.unique_edge_layers) // self.mor.recursions

    @property
    def unique_layers(self) -> int:
        """Distinct parameter blocks: L, or with MoR the edge layers plus one recursion's m."""
        if not self.mor.enabled:
            return self.n_layers
        return self.mor.unique_edge_layers + self.mor_layers_per_recursion

    @property
    def cache_layers(self) -> int:
        """K/V layers of a decoding cache: one per attention application; with MoR recursive KV
        sharing only the first recursion of the shared layers has its own."""
        if not self.mor.enabled or self.mor.kv == "recursion":
            return self.n_layers
        return self.unique_layers
