"""Pallas kernels for rocket's hot paths; importable without rocket (only jax).

Families (each a sub-package with `reference.py`, the plain-jnp ground truth, and the kernels):
  flash_attention.attention(q, k, v, *, kind="softmax"|"softplus", mask, segment_ids, causal, power)
      flash attention, softmax or softplus (LSSA / LSSAR), forward + custom-VJP backward, GQA
  verify_attention.verify_attention(q, k_cache, v_cache, lengths, k_block, v_block, block_mask, ...)
      split-K decode / verify attention of an in-flight block (chain or token tree) over a cache
  pattention.pattention(x, k_p, v_p, *, tau, norm)
      fused TokenFormer Pattention, forward + custom-VJP backward
Every entry point takes `backend` ("auto" | "triton" | "tpu") and `interpret` (None = on CPU).
Design, measurements and expected performance: pallas_kernels/NOTES.md.
"""
