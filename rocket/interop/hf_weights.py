"""Hugging Face tensor names <-> rocket parameters, read and written one tensor at a time.

Every rocket parameter of a dense `Transformer` has one HF tensor (`tensor_table`). HF linear
weights are [out, in]; rocket's are [in, ...] with the heads split out:

  wq  [D, H, D_h]   = q_proj.weight [H D_h, D]^T reshaped      (wk, wv likewise with H_kv)
  wo  [H, D_h, D]   = o_proj.weight [D, H D_h]^T reshaped
  w_gate, w_up [D, F] = gate_proj / up_proj.weight^T;  w_down [F, D] = down_proj.weight^T
  wq_bias [H, D_h]  = q_proj.bias reshaped (Qwen2);  q_norm / k_norm scale [D_h] (Qwen3)
  unembed [D, V]    = lm_head.weight^T (absent when tied)

RoPE needs no permutation: rocket rotates channel pairs (i, i + D_h/2), as transformers does.
Loading opens one tensor at a time (`safetensors.safe_open(...).get_slice`), checks its shape and
places it with its sharding (`jax.make_array_from_callback`): each device's block is read from the
file as the HF slice that holds it (`TensorSpec.hf_index`), so a host reads only what its devices
keep and the model never materialises whole on one host.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from rocket.config import ModelConfig
from rocket.interop.hf_config import InteropError

Path = tuple[str, ...]  # a parameter's path in the params tree


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One parameter: its rocket path and shape, its HF name and shape, and whether HF stores it
    transposed (an [out, in] linear weight)."""

    path: Path
    shape: tuple[int, ...]
    hf_name: str
    hf_shape: tuple[int, ...]
    transposed: bool = False

    def to_rocket(self, x: np.ndarray) -> np.ndarray:
        return (x.T if self.transposed else x).reshape(self.shape)

    def hf_index(self, idx: tuple[slice, ...]) -> tuple[slice, ...] | None:
        """The HF slice that holds the rocket block `idx` (one slice per rocket axis), or None when
        the block cuts inside an axis HF merges (e.g. part of a head's D_h: read the whole tensor).

        Rocket axes group into HF's ([D, H, D_h] -> [D, H D_h] before the transpose); a group's slice
        is contiguous in HF when only its first axis is cut."""
        target = self.hf_shape[::-1] if self.transposed else self.hf_shape
        out, axis = [], 0
        for n in target:
            first, size = axis, 1
            while axis < len(self.shape) and (size < n or axis == first):
                size, axis = size * self.shape[axis], axis + 1
            bounds = [idx[i].indices(self.shape[i]) for i in range(first, axis)]
            if size != n or any(
                b != (0, self.shape[i], 1) for b, i in zip(bounds[1:], range(first + 1, axis))
            ):
                return None
            inner = n // self.shape[first]
            out.append(slice(bounds[0][0] * inner, bounds[0][1] * inner))
        if axis != len(self.shape):
            return None
        return tuple(out[::-1]) if self.transposed else tuple(out)

    def read(self, view: Any, dtype: str, idx: tuple[slice, ...]) -> np.ndarray:
        """The rocket block `idx` in `dtype`, read from a safetensors slice `view` of this tensor."""
        block = tuple(len(range(*s.indices(n))) for s, n in zip(idx, self.shape))
        hf_idx = self.hf_index(idx)
        if hf_idx is None:
            x = self.to_rocket(view[tuple(slice(None) for _ in self.hf_shape)])[idx]
        else:
            x = view[hf_idx]
            x = (x.T if self.transposed else x).reshape(block)
        return x.astype(jax.numpy.dtype(dtype))

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        if self.transposed:
            return np.ascontiguousarray(x.reshape(self.hf_shape[::-1]).T)
        return x.reshape(self.hf_shape)


def tensor_table(cfg: ModelConfig) -> list[TensorSpec]:
    """Every parameter of the dense model `cfg` with its HF tensor (see the module docstring)."""
    d, h, kv, dh, f, v = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.resolved_head_dim,
        cfg.resolved_d_ff,
        cfg.vocab_size,
    )
    table = [TensorSpec(("embed", "embedding"), (v, d), "model.embed_tokens.weight", (v, d))]
    for i in range(cfg.n_layers):
        hf, at = f"model.layers.{i}.", (f"layers_{i}", "attn")
        lin = lambda path, shape, name, hf_shape, hf=hf: TensorSpec(path, shape, hf + name, hf_shape, True)
        norm = lambda path, name, n, hf=hf: TensorSpec(path + ("scale",), (n,), hf + name, (n,))
        table += [
            lin((*at, "wq"), (d, h, dh), "self_attn.q_proj.weight", (h * dh, d)),
            lin((*at, "wk"), (d, kv, dh), "self_attn.k_proj.weight", (kv * dh, d)),
            lin((*at, "wv"), (d, kv, dh), "self_attn.v_proj.weight", (kv * dh, d)),
            lin((*at, "wo"), (h, dh, d), "self_attn.o_proj.weight", (d, h * dh)),
            lin((f"layers_{i}", "mlp", "w_gate"), (d, f), "mlp.gate_proj.weight", (f, d)),
            lin((f"layers_{i}", "mlp", "w_up"), (d, f), "mlp.up_proj.weight", (f, d)),
            lin((f"layers_{i}", "mlp", "w_down"), (f, d), "mlp.down_proj.weight", (d, f)),
            norm((f"layers_{i}", "attn_norm"), "input_layernorm.weight", d),
            norm((f"layers_{i}", "mlp_norm"), "post_attention_layernorm.weight", d),
        ]
        if cfg.arch.qkv_bias:
            table += [
                TensorSpec((*at, f"w{p}_bias"), (n, dh), f"{hf}self_attn.{p}_proj.bias", (n * dh,))
                for p, n in (("q", h), ("k", kv), ("v", kv))
            ]
        if cfg.arch.qk_norm:
            table += [norm((*at, f"{p}_norm"), f"self_attn.{p}_norm.weight", dh) for p in ("q", "k")]
    table.append(TensorSpec(("final_norm", "scale"), (d,), "model.norm.weight", (d,)))
    if not cfg.tie_embeddings:
        table.append(TensorSpec(("unembed",), (d, v), "lm_head.weight", (v, d), True))
    return table


def weight_files(directory: str) -> dict[str, str]:
    """HF tensor name -> the safetensors file holding it (`model.safetensors`, or the shards listed
    by `model.safetensors.index.json`). Pickled `pytorch_model*.bin` weights are refused, unread."""
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
        try:
            with open(index) as fh:
                weight_map = json.load(fh)["weight_map"]
        except (ValueError, KeyError) as e:
            raise InteropError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        return {name: os.path.join(directory, file) for name, file in weight_map.items()}
    if os.path.isfile(single):
        from safetensors import safe_open

        try:
            with safe_open(single, "np") as fh:
                return dict.fromkeys(fh.keys(), single)
        except Exception as e:  # safetensors raises its own SafetensorError on a corrupt header
            raise InteropError(f"{single}: not a readable safetensors file ({e})") from None
    pickled = [
        f for f in sorted(os.listdir(directory)) if f.startswith("pytorch_model") and f.endswith(".bin")
    ]
    if pickled:
        raise InteropError(
            f"{os.path.join(directory, pickled[0])}: pickled PyTorch weights are not read (unsafe); convert "
            "them once with transformers: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, "
            "safe_serialization=True)"
        )
    raise InteropError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def read_tensors(
    cfg: ModelConfig, directory: str, dtype: str
) -> Iterator[tuple[TensorSpec, Callable[[tuple[slice, ...]], np.ndarray]]]:
    """(spec, read) for every parameter, one tensor open at a time: `read(idx)` is the rocket-layout
    block `idx` in `dtype`, read from the file (valid until the next tensor)."""
    from safetensors import SafetensorError, safe_open

    files = weight_files(directory)
    for spec in tensor_table(cfg):
        file = files.get(spec.hf_name)
        if file is None:
            raise InteropError(f"{directory}: tensor {spec.hf_name!r} is missing from the checkpoint")
        try:
            fh = safe_open(file, "np")
            view = fh.get_slice(spec.hf_name)
        except (SafetensorError, OSError, ValueError) as e:
            raise InteropError(f"{file}: cannot read tensor {spec.hf_name!r} ({e})") from None
        if tuple(view.get_shape()) != spec.hf_shape:
            raise InteropError(
                f"{file}: tensor {spec.hf_name!r} has shape {tuple(view.get_shape())}, config.json implies "
                f"{spec.hf_shape}"
            )
        yield spec, functools.partial(spec.read, view, dtype)
        del view, fh


def place(
    shape: tuple[int, ...],
    read: Callable[[tuple[slice, ...]], np.ndarray],
    sharding: jax.sharding.Sharding | None,
) -> jax.Array:
    """The array of `shape` on its devices, each device's block read with `read(idx)` (no sharding:
    the whole array on the default device)."""
    if sharding is None:
        return jax.numpy.asarray(read(tuple(slice(None) for _ in shape)))
    return jax.make_array_from_callback(shape, sharding, read)


def set_path(tree: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def get_path(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def write_tensors(cfg: ModelConfig, params: Any, directory: str) -> None:
    """Writes `params` as `model.safetensors` in HF layout (tied models omit lm_head.weight)."""
    from safetensors.numpy import save_file

    tensors = {
        spec.hf_name: spec.to_hf(np.asarray(jax.device_get(get_path(params, spec.path))))
        for spec in tensor_table(cfg)
    }
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
