"""Typed, validated configuration for rocket.

Experiments are written as `ml_collections.ConfigDict` files (`experiments/configs/*.py`, each with a
`get_config()`), overridden from the command line with `--config.model.d_model=512` and turned into
frozen dataclasses here. Every dataclass validates itself on construction and names the offending
field in its error, so a typo or an inconsistent value fails before anything is compiled.

Sections: `model` (`ModelConfig`), `data` (`DataConfig`), `optim` (`OptimConfig`), `parallel`
(`ParallelConfig`), `train` (`TrainConfig`), `loss` (`LossConfig`), gathered in `ExperimentConfig`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import ml_collections


class ConfigError(ValueError):
    """A configuration value is unknown, out of range, or inconsistent with another value."""


def _check(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config field '{field}': {msg}")


REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16")
DD_CURRICULA = ("grow_p2", "uniform")
OPTIMIZERS = ("adamw", "adafactor", "lion", "sgd", "spam", "adamp")
SCHEDULES = ("cosine", "constant", "linear", "wsd", "power")
REWEIGHT_STRATEGIES = ("none", "uniform", "linupper", "quadratic", "extremes", "upper")
TOKEN_SELECTIONS = ("none", "sstoken")
PROJECTIONS = ("dense", "pattention")
PATTENTION_NORMS = ("l2_norm_gelu", "gelu_l2_norm", "softmax")
ATTENTIONS = ("softmax", "softplus")
EMBEDDINGS = ("learned", "lexinvariant")
BLOCK_KINDS = ("dense", "mod")
MOD_GATES = ("raw", "sigmoid", "tanhnorm")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The decoder's shape and numerics.

    Attributes:
      vocab_size: number of token ids; must cover the tokenizer's vocabulary.
      d_model: residual-stream width D.
      n_layers: number of decoder blocks L.
      n_heads: query heads H.
      n_kv_heads: key/value heads H_kv (grouped-query attention; H_kv == H is multi-head,
        H_kv == 1 is multi-query). H must be divisible by H_kv.
      head_dim: per-head width D_h; default D // H.
      d_ff: SwiGLU hidden width F; default 8/3 * D rounded up to a multiple of 64.
      max_seq_len: the longest sequence (prompt + generation) the model is configured for.
      rope_theta: RoPE base frequency.
      norm_eps: RMSNorm epsilon.
      tie_embeddings: score logits against the input embedding matrix (no separate unembedding).
      dtype: compute dtype of activations and matmuls ("float32" or "bfloat16"). Softmax,
        normalisation statistics and logits are always float32.
      param_dtype: storage dtype of parameters (float32 is the recommended policy).
      scan_layers: stack the blocks with `nn.scan` (one compiled block, params with a leading
        'layers' axis). Faster compiles for deep models.
      remat: rematerialisation policy of each block: "none", "full" (save nothing),
        "dots" (save matmul outputs), "dots_no_batch" (save matmuls without batch dims).
      init_std: standard deviation of the embedding initialiser.
      attention_impl: "xla" (the jnp reference, every backend), "pallas" (fused kernels: cuDNN or
        pallas_kernels; interpreted, slowly, on CPU) or "auto" (pallas on GPU/TPU, xla on CPU).

    Layer kinds (compose freely with each other and with the block kinds; README "Layer kinds"):
      projection: "dense" (weight matrices) or "pattention" (TokenFormer: every projection of
        attention (Q, K, V, output) and the whole FFN is attention over learned parameter tokens;
        `rocket.layers.pattention`, growth in `rocket.models.tokenformer.grow`).
      n_param_tokens: parameter tokens n of each attention projection (default d_model).
      n_param_tokens_ffn: parameter tokens of the FFN Pattention (default 4 * n_param_tokens).
      pattention_norm: score normalisation Θ: "l2_norm_gelu" (official default), "gelu_l2_norm",
        or "softmax" (the paper's exp + L1 alternative).
      pattention_scale_tokens / pattention_scale_tokens_ffn: the frozen constant n_scale of the
        scale tau = sqrt(n_scale). None = the layer's own n (paper and PyTorch code); setting it is
        the official JAX code's `zoom_dim`; `grow` pins it to the pre-growth n so the grown model
        computes exactly the same function.
      attention: "softmax" or "softplus" (LSSA: softplus + L1 normalisation with the log d log N
        length scale; `rocket.layers.softplus`).
      softplus_power: LSSAR re-weighting power p > 0 (None = no re-weighting). Changing it on a
        trained model (e.g. `dataclasses.replace(cfg, softplus_power=15.0)`) needs no new params.
      embedding: "learned" (a table) or "lexinvariant" (per-sequence random Gaussian embeddings
        scored by the same per-sequence matrix; `rocket.layers.lexinvariant`).
      lexinvariant_learned_prob: the regularised (semi-lexinvariant) variant: each sequence uses a
        learned table instead of its random one with this probability (0 = pure lexinvariant).

    Adaptive depth (MoD / p-MoD / MoR; rocket.routing, rocket.models.mod, rocket.models.mor):
      block_pattern: comma-separated block kinds cycled over the layers: "dense" (all dense),
        "dense,mod" (MoD on every other layer, the paper's setting), "mod" (all routed).
      mod_capacity: fraction c in (0, 1] of each row's tokens a MoD layer processes (k =
        max(1, floor(c T))); with mod_schedule="prd" it is p-MoD's mean ratio rho-bar.
      mod_schedule: "constant" or "prd" (p-MoD progressive ratio decay: rho(l) = c + cos(pi l /
        (L-1)) / 2; a "mod" layer is routed iff rho(l) <= mod_prd_max, at max(rho(l), mod_prd_min)).
      mod_gate: "raw" (router score, MoD paper), "sigmoid" (alpha sigmoid(r)), "tanhnorm" (p-MoD:
        alpha tanh(r) + 1, zero-initialised router so the gate starts at exactly 1).
      mod_gate_alpha: alpha of the sigmoid / tanhnorm gates (p-MoD: 0.2).
      mod_string: p-MoD STRing: skipped tokens are scaled by the gate too (needs "tanhnorm").
      mod_aux_coef: weight of the routers' causal BCE loss (summed over MoD layers).
      router_causal: how routing="causal" decides per token: "aux_bce" (router logit > 0, trained
        by BCE against top-k membership) or "predictor" (a stop-gradient MLP's logit > 0).
      router_predictor_hidden: hidden width of that predictor MLP.
      mor_sharing: "none" (no MoR), or a recursive stack: "cycle" (L / N_r shared layers applied
        N_r times) or "middle_cycle" (unique first and last layers around (L-2) / N_r shared ones).
        n_layers counts layer applications (the unrolled depth L), as in the paper.
      mor_recursions: N_r >= 1.
      mor_router: "expert" (expert-choice, nested top-k with capacities (N_r - r) / N_r),
        "token" (token-choice: one router picks each token's depth), or "none" (plain recursion).
      mor_alpha / mor_temp: gate alpha * f(router(x / temp)) (expert: f = sigmoid).
      mor_token_gate: token-choice gate f: "softmax" or "sigmoid".
      mor_aux_coef: expert-choice BCE weight (summed over recursions; paper 0.001).
      mor_z_loss_coef: router z-loss weight (paper: 0 for expert-choice, 1e-5 for token-choice).
      mor_balance_coef: token-choice balancing loss weight (paper 0.1).
      mor_kv: "recursion" (recursion-wise caching: every layer application has its own K/V) or
        "share" (recursive KV sharing: recursions r >= 1 attend to recursion 0's K/V of the same
        shared layer, and only those are cached, so `cache_layers` = L - (N_r - 1) m).
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
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "none"
    init_std: float = 0.02
    attention_impl: str = "xla"
    # --- layer kinds (issue 4): TokenFormer projections, softplus attention, lexinvariant embeddings
    projection: str = "dense"
    n_param_tokens: int | None = None
    n_param_tokens_ffn: int | None = None
    pattention_norm: str = "l2_norm_gelu"
    pattention_scale_tokens: int | None = None
    pattention_scale_tokens_ffn: int | None = None
    attention: str = "softmax"
    softplus_power: float | None = None
    embedding: str = "learned"
    lexinvariant_learned_prob: float = 0.0
    # --- Adaptive depth: MoD / p-MoD / MoR (see the docstring; validated in _check_routing) ---
    block_pattern: str = "dense"
    mod_capacity: float = 0.125
    mod_schedule: str = "constant"
    mod_prd_max: float = 0.85
    mod_prd_min: float = 0.15
    mod_gate: str = "raw"
    mod_gate_alpha: float = 0.2
    mod_string: bool = False
    mod_aux_coef: float = 0.01
    router_causal: str = "aux_bce"
    router_predictor_hidden: int = 64
    mor_sharing: str = "none"
    mor_recursions: int = 2
    mor_router: str = "expert"
    mor_alpha: float = 0.1
    mor_temp: float = 1.0
    mor_token_gate: str = "softmax"
    mor_aux_coef: float = 0.001
    mor_z_loss_coef: float = 0.0
    mor_balance_coef: float = 0.1
    mor_kv: str = "recursion"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "max_seq_len"):
            _check(
                int(getattr(self, name)) >= 1, name, f"must be a positive integer, got {getattr(self, name)}"
            )
        _check(
            self.d_model % self.n_heads == 0 or self.head_dim is not None,
            "d_model",
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads} (or set head_dim)",
        )
        _check(
            self.n_heads % self.n_kv_heads == 0,
            "n_kv_heads",
            f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}",
        )
        _check(self.head_dim is None or self.head_dim >= 1, "head_dim", "must be positive")
        _check(
            self.resolved_head_dim % 2 == 0,
            "head_dim",
            f"RoPE needs an even head dimension, got {self.resolved_head_dim}",
        )
        _check(self.d_ff is None or self.d_ff >= 1, "d_ff", "must be positive")
        _check(self.rope_theta > 0, "rope_theta", "must be positive")
        _check(self.norm_eps > 0, "norm_eps", "must be positive")
        _check(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        _check(
            self.param_dtype in DTYPES, "param_dtype", f"must be one of {DTYPES}, got {self.param_dtype!r}"
        )
        _check(self.remat in REMAT_POLICIES, "remat", f"must be one of {REMAT_POLICIES}, got {self.remat!r}")
        _check(
            self.attention_impl in ("xla", "pallas", "auto"),
            "attention_impl",
            f"must be 'xla', 'pallas' or 'auto', got {self.attention_impl!r}",
        )
        self._check_layer_kinds()
        self._check_routing()

    def _check_layer_kinds(self) -> None:
        """Validates the layer-kind group (projection, attention, embedding and their parameters)."""
        _check(
            self.projection in PROJECTIONS,
            "projection",
            f"must be one of {PROJECTIONS}, got {self.projection!r}",
        )
        for name in (
            "n_param_tokens",
            "n_param_tokens_ffn",
            "pattention_scale_tokens",
            "pattention_scale_tokens_ffn",
        ):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, f"must be >= 1 (or None), got {value}")
        _check(
            self.pattention_norm in PATTENTION_NORMS,
            "pattention_norm",
            f"must be one of {PATTENTION_NORMS}, got {self.pattention_norm!r}",
        )
        _check(
            self.attention in ATTENTIONS, "attention", f"must be one of {ATTENTIONS}, got {self.attention!r}"
        )
        _check(
            self.softplus_power is None or self.softplus_power > 0,
            "softplus_power",
            f"the re-weighting power must be > 0 (or None for no re-weighting), got {self.softplus_power}",
        )
        _check(
            self.softplus_power is None or self.attention == "softplus",
            "softplus_power",
            f"re-weighting applies to attention='softplus' only, got attention={self.attention!r}",
        )
        _check(
            self.embedding in EMBEDDINGS, "embedding", f"must be one of {EMBEDDINGS}, got {self.embedding!r}"
        )
        _check(
            self.embedding != "lexinvariant" or self.tie_embeddings,
            "tie_embeddings",
            "a lexinvariant model must score logits against its per-sequence embeddings (tie_embeddings=True); "
            "a learned unembedding reintroduces a fixed lexicon",
        )
        _check(
            0.0 <= self.lexinvariant_learned_prob <= 1.0,
            "lexinvariant_learned_prob",
            f"must be in [0, 1], got {self.lexinvariant_learned_prob}",
        )

    @property
    def resolved_n_param_tokens(self) -> int:
        return self.n_param_tokens if self.n_param_tokens is not None else self.d_model

    @property
    def resolved_n_param_tokens_ffn(self) -> int:
        return (
            self.n_param_tokens_ffn
            if self.n_param_tokens_ffn is not None
            else 4 * self.resolved_n_param_tokens
        )

    def _check_routing(self) -> None:
        kinds = self.block_kinds
        for kind in set(kinds):
            _check(
                kind in BLOCK_KINDS, "block_pattern", f"unknown block kind {kind!r}; available: {BLOCK_KINDS}"
            )
        _check(0.0 < self.mod_capacity <= 1.0, "mod_capacity", f"must be in (0, 1], got {self.mod_capacity}")
        _check(
            self.mod_schedule in ("constant", "prd"),
            "mod_schedule",
            f"unknown schedule {self.mod_schedule!r}",
        )
        _check(0.0 < self.mod_prd_min <= 1.0, "mod_prd_min", f"must be in (0, 1], got {self.mod_prd_min}")
        _check(self.mod_prd_max > 0, "mod_prd_max", f"must be positive, got {self.mod_prd_max}")
        _check(
            self.mod_gate in MOD_GATES, "mod_gate", f"unknown gate {self.mod_gate!r}; available: {MOD_GATES}"
        )
        _check(
            not self.mod_string or self.mod_gate == "tanhnorm",
            "mod_string",
            "STRing scales skipped tokens by the gate and needs the bounded 'tanhnorm' gate",
        )
        _check(self.mod_aux_coef >= 0, "mod_aux_coef", "must be >= 0")
        _check(
            self.router_causal in ("aux_bce", "predictor"),
            "router_causal",
            f"must be 'aux_bce' or 'predictor', got {self.router_causal!r}",
        )
        _check(self.router_predictor_hidden >= 1, "router_predictor_hidden", "must be positive")
        _check(
            self.mor_sharing in ("none", "cycle", "middle_cycle"),
            "mor_sharing",
            f"must be 'none', 'cycle' or 'middle_cycle', got {self.mor_sharing!r}",
        )
        _check(self.mor_recursions >= 1, "mor_recursions", f"must be >= 1, got {self.mor_recursions}")
        _check(
            self.mor_router in ("expert", "token", "none"),
            "mor_router",
            f"must be 'expert', 'token' or 'none', got {self.mor_router!r}",
        )
        _check(
            self.mor_token_gate in ("softmax", "sigmoid"),
            "mor_token_gate",
            f"must be 'softmax' or 'sigmoid', got {self.mor_token_gate!r}",
        )
        _check(self.mor_temp > 0, "mor_temp", "must be positive")
        _check(
            self.mor_kv in ("recursion", "share"),
            "mor_kv",
            f"must be 'recursion' or 'share', got {self.mor_kv!r}",
        )
        for name in ("mor_aux_coef", "mor_z_loss_coef", "mor_balance_coef"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        if self.mor_sharing != "none":
            shared = self.n_layers - (2 if self.mor_sharing == "middle_cycle" else 0)
            _check(
                shared >= self.mor_recursions and shared % self.mor_recursions == 0,
                "mor_recursions",
                f"{self.mor_sharing} sharing needs mor_recursions={self.mor_recursions} to divide the "
                f"{shared} recursed layers of n_layers={self.n_layers}",
            )
            _check(set(kinds) == {"dense"}, "block_pattern", "MoD layers cannot be combined with MoR")
        _check(
            not self.scan_layers or (set(kinds) == {"dense"} and self.mor_sharing == "none"),
            "scan_layers",
            "scanning over layers needs identical dense layers (no MoD pattern, no MoR)",
        )

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The block kind of every layer: `block_pattern` cycled over n_layers."""
        pattern = [k.strip() for k in self.block_pattern.split(",")]
        return tuple(pattern[i % len(pattern)] for i in range(self.n_layers))

    @property
    def layer_capacities(self) -> tuple[float | None, ...]:
        """MoD capacity of every layer (None = a dense layer)."""
        from rocket.routing import prd_capacities

        if self.mod_schedule == "prd":
            prd = prd_capacities(self.n_layers, self.mod_capacity, self.mod_prd_max, self.mod_prd_min)
        else:
            prd = [self.mod_capacity] * self.n_layers
        return tuple(c if kind == "mod" else None for kind, c in zip(self.block_kinds, prd))

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def cache_layers(self) -> int:
        """Number of K/V layers in a decoding cache (one per attention application; with MoR
        recursive KV sharing only the first recursion of the shared layers has its own)."""
        if self.mor_sharing == "none" or self.mor_kv == "recursion":
            return self.n_layers
        shared = self.n_layers - (2 if self.mor_sharing == "middle_cycle" else 0)
        return self.n_layers - shared + shared // self.mor_recursions

    @property
    def resolved_d_ff(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return -(-(8 * self.d_model // 3) // 64) * 64


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where tokens come from.

    Attributes:
      corpus: "stdlib" (this Python's standard-library sources, the built-in corpus), a folder,
        a glob of text files, or "tfds:<name>" for a TFDS catalog dataset (needs the network).
      tokenizer: "byte" (vocab 258) or "sentencepiece" (BPE trained locally on the corpus).
      spm_vocab_size: vocabulary size of the locally trained SentencePiece model.
      seq_len: tokens per packed training row.
      batch_size: rows per global batch (split over the data-parallel axes).
      val_fraction: fraction of files (by path hash) held out for validation, in (0, 1).
      eval_batches: number of validation batches per evaluation.
      cache_dir: where prepared corpora and tokenizers are cached ("" = ~/.cache/rocket or
        $ROCKET_CACHE_DIR).
      decomposition: train on Dataset Decomposition buckets (Pouransari et al., 2024,
        arXiv 2405.13226; `rocket.data.decomposition`): documents cut into power-of-two chunks,
        one bucket per step with `batch_size * seq_len` tokens (seq_len must be a power of two,
        the longest bucket). Evaluation keeps the packed `seq_len` batches.
      dd_min_log2: the shortest bucket is 2**dd_min_log2 tokens; shorter document tails are dropped.
      dd_curriculum: "grow_p2" (bucket odds x 2**(max - i): short to long) or "uniform" (odds
        proportional to the bucket's remaining tokens only: a random order, no trend).
      dd_cycles: curriculum cycles per epoch (each cycle replays short-to-long on 1/cycles of the data).
    """

    corpus: str = "stdlib"
    tokenizer: str = "byte"
    spm_vocab_size: int = 4096
    seq_len: int = 256
    batch_size: int = 16
    val_fraction: float = 0.05
    eval_batches: int = 8
    cache_dir: str = ""
    # Dataset decomposition (rocket.data.decomposition).
    decomposition: bool = False
    dd_min_log2: int = 5
    dd_curriculum: str = "grow_p2"
    dd_cycles: int = 1

    def __post_init__(self):
        _check(
            self.tokenizer in ("byte", "sentencepiece"),
            "tokenizer",
            f"must be 'byte' or 'sentencepiece', got {self.tokenizer!r}",
        )
        _check(self.seq_len >= 2, "seq_len", f"must be >= 2, got {self.seq_len}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        _check(self.eval_batches >= 1, "eval_batches", f"must be >= 1, got {self.eval_batches}")
        _check(
            self.spm_vocab_size >= 268,
            "spm_vocab_size",
            f"must be >= 268 (4 specials + 256 byte pieces + merges), got {self.spm_vocab_size}",
        )
        if self.decomposition:
            _check(
                self.seq_len & (self.seq_len - 1) == 0,
                "seq_len",
                f"dataset decomposition needs a power-of-two seq_len, got {self.seq_len}",
            )
            _check(
                1 <= self.dd_min_log2 and 2**self.dd_min_log2 <= self.seq_len,
                "dd_min_log2",
                f"must be >= 1 with 2**dd_min_log2 <= seq_len={self.seq_len}, got {self.dd_min_log2}",
            )
        _check(
            self.dd_curriculum in DD_CURRICULA,
            "dd_curriculum",
            f"must be one of {DD_CURRICULA}, got {self.dd_curriculum!r}",
        )
        _check(self.dd_cycles >= 1, "dd_cycles", f"must be >= 1, got {self.dd_cycles}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """optax optimizer and learning-rate schedule.

    Attributes:
      name: "adamw" (optax.adamw) or "adafactor", "lion", "sgd", "spam" (spike-aware Adam with
        momentum reset), "adamp" (Adam with the radial component projected out); see
        `rocket.train.optimizers`.
      lr: peak learning rate.
      schedule: "cosine" (linear warmup + cosine decay), "constant" (warmup then constant),
        "linear" (warmup + linear decay), "wsd" (warmup-stable-decay: linear decay over the last
        `decay_fraction` of the post-warmup steps), "power" (Power scheduler: min(lr, a * n**b) in
        tokens seen n, exponential decay to `min_lr_ratio` over the last `decay_fraction`).
      warmup_steps: linear warmup length in steps.
      min_lr_ratio: final learning rate as a fraction of `lr`, in [0, 1].
      decay_fraction: for "wsd", the fraction of the run spent decaying, in (0, 1].
      b1, b2, eps: Adam moments.
      weight_decay: decoupled weight decay, applied to matrices only (not to norm scales).
      grad_clip: global-norm clipping threshold (0 disables).
      spam_theta: SPAM spike threshold: g**2 > theta * v marks a spike.
      spam_reset_interval: SPAM zeroes both moments every this many steps.
      spam_clip_skip: steps after each reset without spike clipping (v is still near zero).
      spam_warmup_steps: cosine learning-rate warmup (0.01 -> 1) after every reset (0 disables).
      adamp_delta: AdamP's scale-invariance threshold (cosine < delta / sqrt(dim)).
      adamp_wd_ratio: AdamP's weight-decay multiplier on parameters found scale-invariant.
      power_a, power_b: Power scheduler law a * n**b (n = tokens seen; a absorbs the batch size).
    """

    name: str = "adamw"
    lr: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # SPAM, AdamP and the Power scheduler (rocket.train.optimizers).
    spam_theta: float = 5000.0
    spam_reset_interval: int = 500
    spam_clip_skip: int = 20
    spam_warmup_steps: int = 150
    adamp_delta: float = 0.1
    adamp_wd_ratio: float = 0.1
    power_a: float = 4.6
    power_b: float = -0.51

    def __post_init__(self):
        _check(self.name in OPTIMIZERS, "name", f"unknown optimizer {self.name!r}; valid: {OPTIMIZERS}")
        _check(
            self.schedule in SCHEDULES, "schedule", f"unknown schedule {self.schedule!r}; valid: {SCHEDULES}"
        )
        _check(self.spam_theta > 0, "spam_theta", f"must be positive, got {self.spam_theta}")
        _check(self.spam_reset_interval >= 1, "spam_reset_interval", "must be >= 1")
        _check(
            1 <= self.spam_clip_skip < self.spam_reset_interval,
            "spam_clip_skip",
            f"must be in [1, spam_reset_interval={self.spam_reset_interval}), got {self.spam_clip_skip}",
        )
        _check(
            0 <= self.spam_warmup_steps <= self.spam_reset_interval,
            "spam_warmup_steps",
            f"must be in [0, spam_reset_interval={self.spam_reset_interval}], got {self.spam_warmup_steps}",
        )
        _check(self.adamp_delta > 0, "adamp_delta", f"must be positive, got {self.adamp_delta}")
        _check(0.0 <= self.adamp_wd_ratio <= 1.0, "adamp_wd_ratio", "must be in [0, 1]")
        _check(self.power_a > 0, "power_a", f"must be positive, got {self.power_a}")
        _check(self.power_b < 0, "power_b", f"must be negative (a decaying law), got {self.power_b}")
        _check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(
            0.0 < self.decay_fraction <= 1.0,
            "decay_fraction",
            f"must be in (0, 1], got {self.decay_fraction}",
        )
        _check(0.0 <= self.b1 < 1.0, "b1", "must be in [0, 1)")
        _check(0.0 <= self.b2 < 1.0, "b2", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class LossConfig:
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
    """

    reweight: str = "none"
    reweight_temperature: float = 1.0
    reweight_delta: float = 1.0
    reweight_warmup_steps: int = 0
    reweight_unit: str = "row"
    meap_rate: float = 0.0
    meap_mask_id: int = -1
    token_select: str = "none"
    token_keep: float = 0.6
    token_gamma: float = 0.5
    token_ema_decay: float = 0.99
    token_warmup_steps: int = 0
    aux_scales: str = ""

    def __post_init__(self):
        _check(
            self.reweight in REWEIGHT_STRATEGIES,
            "reweight",
            f"unknown strategy {self.reweight!r}; valid: {REWEIGHT_STRATEGIES}",
        )
        _check(
            self.reweight_temperature > 0,
            "reweight_temperature",
            f"must be positive, got {self.reweight_temperature}",
        )
        _check(self.reweight_delta > 0, "reweight_delta", f"must be positive, got {self.reweight_delta}")
        _check(self.reweight_warmup_steps >= 0, "reweight_warmup_steps", "must be >= 0")
        _check(
            self.reweight_unit in ("row", "segment"),
            "reweight_unit",
            f"must be 'row' or 'segment', got {self.reweight_unit!r}",
        )
        _check(0.0 <= self.meap_rate < 1.0, "meap_rate", f"must be in [0, 1), got {self.meap_rate}")
        _check(self.meap_mask_id >= -1, "meap_mask_id", "must be a token id or -1")
        _check(
            self.token_select in TOKEN_SELECTIONS,
            "token_select",
            f"unknown strategy {self.token_select!r}; valid: {TOKEN_SELECTIONS}",
        )
        _check(0.0 < self.token_keep <= 1.0, "token_keep", f"must be in (0, 1], got {self.token_keep}")
        _check(0.0 <= self.token_gamma <= 1.0, "token_gamma", f"must be in [0, 1], got {self.token_gamma}")
        _check(
            0.0 <= self.token_ema_decay < 1.0,
            "token_ema_decay",
            f"must be in [0, 1), got {self.token_ema_decay}",
        )
        _check(self.token_warmup_steps >= 0, "token_warmup_steps", "must be >= 0")
        parse_aux_scales(self.aux_scales)

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
        _check(
            bool(sep and name.strip()) and scale == scale and scale >= 0,
            "aux_scales",
            f"expected 'name:scale' with scale >= 0, got {item!r}",
        )
        _check(name.strip() not in out, "aux_scales", f"{name.strip()!r} is given twice")
        out[name.strip()] = scale
    return out


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """Device mesh with axes (data, fsdp, tensor); -1 on one axis means "all remaining devices"."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        _check(sum(s == -1 for s in sizes) <= 1, "parallel", "at most one axis may be -1")
        for name, s in zip(("data", "fsdp", "tensor"), sizes):
            _check(s == -1 or s >= 1, name, f"must be -1 or a positive integer, got {s}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training run.

    Attributes:
      steps: total optimizer steps.
      microbatches: gradient accumulation: each step's batch is processed in this many sequential
        slices (less activation memory, the same update).
      seed: seeds parameters init, data order and the step RNG.
      workdir: checkpoints go to workdir/checkpoints, metrics to workdir/logs.
      log_every / eval_every / ckpt_every: intervals in steps (eval and checkpoint also run at
        the last step).
      keep_checkpoints: how many checkpoints to keep.
      sample_tokens: length of the sample generated at the end (0 disables).
      sample_prompt: its prompt.
      sample_temperature / sample_top_k / sample_top_p: its sampler.
      progress: show a progress bar.
      profile_steps: if > 0, record a JAX profiler trace (TensorBoard / Perfetto) of this many steps,
        starting at the third step of the run, into workdir/logs.
    """

    steps: int = 1000
    microbatches: int = 1
    seed: int = 0
    workdir: str = "runs/default"
    log_every: int = 10
    eval_every: int = 200
    ckpt_every: int = 200
    keep_checkpoints: int = 3
    sample_tokens: int = 200
    sample_prompt: str = "def "
    sample_temperature: float = 0.8
    sample_top_k: int = 0
    sample_top_p: float = 0.95
    progress: bool = True
    profile_steps: int = 0

    def __post_init__(self):
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.microbatches >= 1, "microbatches", f"must be >= 1, got {self.microbatches}")
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        for name in ("log_every", "eval_every", "ckpt_every", "keep_checkpoints"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.sample_tokens >= 0, "sample_tokens", "must be >= 0")
        _check(self.profile_steps >= 0, "profile_steps", "must be >= 0")
        _check(self.sample_temperature >= 0, "sample_temperature", "must be >= 0 (0 = greedy)")
        _check(self.sample_top_k >= 0, "sample_top_k", "must be >= 0 (0 = off)")
        _check(0.0 < self.sample_top_p <= 1.0, "sample_top_p", f"must be in (0, 1], got {self.sample_top_p}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    parallel: ParallelConfig = ParallelConfig()
    train: TrainConfig = TrainConfig()
    loss: LossConfig = LossConfig()

    def __post_init__(self):
        _check(
            self.data.seq_len <= self.model.max_seq_len,
            "data.seq_len",
            f"seq_len={self.data.seq_len} is longer than model.max_seq_len={self.model.max_seq_len}",
        )
        _check(
            self.data.batch_size % self.train.microbatches == 0,
            "train.microbatches",
            f"batch_size={self.data.batch_size} is not divisible into {self.train.microbatches} microbatches",
        )
        _check(
            self.loss.meap_mask_id < self.model.vocab_size,
            "loss.meap_mask_id",
            f"{self.loss.meap_mask_id} is not below model.vocab_size={self.model.vocab_size}",
        )


T = TypeVar("T")


def _allowed_types(cls: type, name: str) -> tuple[type, ...]:
    """The runtime types a field accepts, from its annotation (`int | None` -> (int, NoneType))."""
    hint = typing.get_type_hints(cls)[name]
    return tuple(typing.get_args(hint)) or (hint,)


def _coerce(cls: type, name: str, value: Any, path: str) -> Any:
    """Checks a value's type against the field's annotation; ints are accepted for float fields."""
    allowed = _allowed_types(cls, name)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(f"config field '{path}': expected {names}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """Builds dataclass `cls` from a mapping, rejecting unknown keys and wrong types by name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"config field '{path}': unknown key; valid keys of '{prefix.rstrip('.') or cls.__name__}' "
                f"are {sorted(fields)}"
            )
        default = fields[key].default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config field '{path}': expected a section (mapping), got {value!r}")
            kwargs[key] = from_dict(type(default), value, prefix=f"{path}.")
        else:
            kwargs[key] = _coerce(cls, key, value, path)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_config_dict(cd: ml_collections.ConfigDict | Mapping[str, Any]) -> ExperimentConfig:
    """ml_collections config (with command-line overrides applied) -> validated ExperimentConfig."""
    values = cd.to_dict() if isinstance(cd, ml_collections.ConfigDict) else dict(cd)
    return from_dict(ExperimentConfig, values)


def _with_placeholders(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Optional fields left at None become typed placeholders, so `--config.model.head_dim=64` works."""
    out = {}
    for f in dataclasses.fields(cls):
        v = values[f.name]
        if dataclasses.is_dataclass(f.default):
            out[f.name] = _with_placeholders(type(f.default), v)
        elif v is None:
            kinds = [t for t in _allowed_types(cls, f.name) if t is not type(None)]
            out[f.name] = ml_collections.config_dict.placeholder(kinds[0])
        else:
            out[f.name] = v
    return out


def to_config_dict(cfg: ExperimentConfig) -> ml_collections.ConfigDict:
    """The inverse of `from_config_dict`: a ConfigDict with every field, for experiment files."""
    return ml_collections.ConfigDict(_with_placeholders(ExperimentConfig, to_dict(cfg)))
