"""Analytic parameter and FLOP counts (used for MFU and for iso-FLOP comparisons).

FLOPs count a multiply-add as 2. Per token, the forward pass of the dense decoder costs

  2 * N_matmul                       (every weight matrix, including the LM head)
  + 2 * 2 * L * H * D_h * ctx        (q k^T and p v over `ctx` visible keys)

with ctx = (seq_len + 1) / 2 for causal training (each query sees itself and its past: the
average over positions; MaxText's convention since it halved causal attention FLOPs). Training
(forward + backward) is 3x the forward pass. Remat recomputation is not counted, so this is
"model FLOPs" (MFU), not hardware FLOPs (HFU). Embedding lookups cost no FLOPs.

TokenFormer (`projection="pattention"`): a Pattention d_in -> d_out with n tokens holds n (d_in + d_out)
parameters and costs 2 n (d_in + d_out) FLOPs per token (scores and output; the normalisation is
elementwise and not counted), i.e. it counts like a matrix of that many parameters. Lexinvariant
embeddings have no table (unless `lexinvariant_learned_prob > 0`) but the readout matmul against the
per-sequence matrix is counted as usual (its random generation is not).
"""

from __future__ import annotations

from rocket.config import ModelConfig


def _layer_matmul_params(cfg: ModelConfig) -> int:
    d, dh, f = cfg.d_model, cfg.resolved_head_dim, cfg.resolved_d_ff
    if cfg.projection == "pattention":
        hq, hkv = cfg.n_heads * dh, cfg.n_kv_heads * dh
        attn = cfg.resolved_n_param_tokens * ((d + hq) + 2 * (d + hkv) + (hq + d))
        return attn + cfg.resolved_n_param_tokens_ffn * 2 * d
    attn = d * dh * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * dh * d
    mlp = 3 * d * f
    return attn + mlp


def param_count(cfg: ModelConfig, *, include_embedding: bool = True) -> int:
    """Number of parameters of `Transformer(cfg)` (equals the size of its param tree)."""
    d = cfg.d_model
    per_layer = _layer_matmul_params(cfg) + 2 * d  # + two RMSNorm scales
    total = cfg.n_layers * per_layer + d  # + final norm
    if include_embedding:
        has_table = cfg.embedding == "learned" or cfg.lexinvariant_learned_prob > 0
        total += cfg.vocab_size * d * (int(has_table) + (0 if cfg.tie_embeddings else 1))
    elif not cfg.tie_embeddings:
        total += cfg.vocab_size * d  # the untied LM head is a matmul, not a lookup
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True) -> float:
    """Model FLOPs per token for a causal sequence of `seq_len` tokens (see module docstring)."""
    matmul_params = cfg.n_layers * _layer_matmul_params(cfg) + cfg.vocab_size * cfg.d_model
    ctx = (seq_len + 1) / 2
    attn = 2 * 2 * cfg.n_layers * cfg.n_heads * cfg.resolved_head_dim * ctx
    forward = 2 * matmul_params + attn
    return 3 * forward if training else forward
