"""Hugging Face import (`rocket.interop.load_hf`) against references computed by `transformers`.

The fixtures (tests/fixtures/hf/<family>/, written by tests/fixtures/make_hf_fixtures.py) are tiny
random checkpoints saved by `transformers` with perturbed norm scales and biases, plus the logits
of a fixed batch and a greedy continuation computed by `transformers` in float32:

  * logits equal the reference to 1e-4 per family (measured: <= 1.4e-6);
  * greedy decoding through rocket's cache and engine reproduces the reference continuation, and
    greedy speculative decoding with another fixture as the draft does too;
  * sharded safetensors with an index load to the same params; the tensor table covers exactly the
    parameters the model declares; old-style configs (rope_theta + rope_scaling) read the same;
  * bad inputs are one-line `InteropError`s naming the file or field.
"""

from __future__ import annotations

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.interop import InteropError, load_hf
from rocket.interop.hf_weights import tensor_table
from rocket.models import Transformer
from tests.helpers import positions_for

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
FAMILIES = ("llama", "smollm", "mistral", "qwen2", "qwen3", "gemma")


def fixture(name: str) -> tuple[str, dict[str, np.ndarray]]:
    path = os.path.join(FIXTURES, name)
    return path, dict(np.load(os.path.join(path, "reference.npz")))


def logits_of(cfg, params, ids) -> np.ndarray:
    ids = jnp.asarray(ids)
    return np.asarray(Transformer(cfg).apply({"params": params}, ids, positions_for(ids))[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(family):
    path, ref = fixture(family)
    cfg, params, tok = load_hf(path)
    np.testing.assert_allclose(logits_of(cfg, params, ref["input_ids"]), ref["logits"], atol=1e-4, rtol=0)
    assert tok.vocab_size == cfg.vocab_size == 288


def test_family_options_are_what_the_configs_say():
    arch = {f: load_hf(fixture(f)[0])[0].arch for f in ("llama", "mistral", "qwen2", "qwen3", "gemma")}
    assert arch["llama"].rope_scaling == "llama3" and arch["llama"].rope_original_max_len == 16
    assert arch["mistral"].sliding_window == 6
    assert arch["qwen2"].qkv_bias and arch["qwen3"].qk_norm
    assert (arch["gemma"].norm_offset, arch["gemma"].embed_scale, arch["gemma"].mlp_activation) == (
        True,
        True,
        "gelu_tanh",
    )


def test_each_family_option_changes_the_logits():
    """Turning a family's option off moves the logits far from the reference (the fixtures exercise
    it: the window is shorter than the batch, norms and biases are perturbed)."""
    import dataclasses

    off = {
        "llama": dict(rope_scaling="none"),
        "mistral": dict(sliding_window=None),
        "gemma": dict(embed_scale=False),
    }
    for family, change in off.items():
        path, ref = fixture(family)
        cfg, params, _ = load_hf(path)
        cfg = dataclasses.replace(cfg, arch=dataclasses.replace(cfg.arch, **change))
        assert np.abs(logits_of(cfg, params, ref["input_ids"]) - ref["logits"]).max() > 1e-2, family


@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_table_covers_exactly_the_models_params(family):
    cfg, _, _ = load_hf(fixture(family)[0])
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.key(0), tokens, tokens))["params"]
    shapes = nn.meta.unbox(boxed)
    leaves = {tuple(k.key for k in kp): v.shape for kp, v in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    assert leaves == {spec.path: spec.shape for spec in tensor_table(cfg)}


def _greedy(method: str, target: str, draft: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    from rocket.decode import ModelStep, generate

    path, ref = fixture(target)
    cfg, params, _ = load_hf(path)
    step = lambda c, p: ModelStep(Transformer(c), {"params": p})
    draft_step = None if draft is None else step(*load_hf(fixture(draft)[0])[:2])
    prompt = jnp.asarray(ref["prompt"])[None]
    out = generate(
        step(cfg, params),
        prompt,
        jnp.array([prompt.shape[1]]),
        jax.random.key(0),
        max_new_tokens=len(ref["greedy"]),
        method=method,
        draft=draft_step,
    )
    return np.asarray(out.tokens[0]), ref["greedy"]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_through_the_engine_matches(family):
    got, want = _greedy("ar", family)
    np.testing.assert_array_equal(got, want)


def test_greedy_speculative_decoding_with_another_checkpoint_as_draft_matches():
    got, want = _greedy("speculative", "llama", draft="smollm")
    np.testing.assert_array_equal(got, want)


def test_sharded_safetensors_with_index_load_the_same_params(tmp_path):
    from safetensors.numpy import load_file, save_file

    src, ref = fixture("qwen3")
    tensors = load_file(os.path.join(src, "model.safetensors"))
    names = sorted(tensors)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(shards):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, tmp_path / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(src, f), tmp_path / f)
    cfg, params, _ = load_hf(str(tmp_path))
    _, want, _ = load_hf(src)
    jax.tree.map(np.testing.assert_array_equal, params, want)
    np.testing.assert_allclose(logits_of(cfg, params, ref["input_ids"]), ref["logits"], atol=1e-4, rtol=0)


def test_old_style_rope_config_reads_the_same(tmp_path):
    src, _ = fixture("llama")
    shutil.copytree(src, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert load_hf(str(tmp_path / "m"))[0] == load_hf(src)[0]


def _broken(tmp_path, family="llama", config=None, drop=(), write=None) -> str:
    """A copy of a fixture with config fields changed, files dropped or overwritten."""
    dst = tmp_path / family
    shutil.copytree(fixture(family)[0], dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    for name in drop:
        os.remove(dst / name)
    for name, data in (write or {}).items():
        (dst / name).write_bytes(data)
    return str(dst)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(config={"model_type": "gpt2"}), r"config\.json: model_type 'gpt2' is not supported"),
        (
            dict(config={"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}),
            r"config\.json: rope scaling type 'yarn' is not supported",
        ),
        (dict(config={"attention_bias": True}), r"config\.json: field 'attention_bias'"),
        (dict(config={"hidden_act": "relu"}), r"config\.json: field 'hidden_act'"),
        (
            dict(config={"intermediate_size": 64}),
            r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(48, 32\), config\.json implies \(64, 32\)",
        ),
        (dict(config={"vocab_size": 100}), r"has shape \(288, 32\), config\.json implies \(100, 32\)"),
        (dict(drop=["config.json"]), r"config\.json: missing"),
        (dict(drop=["tokenizer.json"]), r"tokenizer\.json: no such tokenizer file"),
        (dict(drop=["model.safetensors"]), r"no model\.safetensors or model\.safetensors\.index\.json"),
        (
            dict(drop=["model.safetensors"], write={"pytorch_model.bin": b"\x80\x02}q\x00."}),
            r"pytorch_model\.bin: pickled PyTorch weights are not read",
        ),
        (
            dict(write={"model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"}),
            r"model\.safetensors: not a readable safetensors file",
        ),
        (
            dict(write={"tokenizer.json": b"{"}),
            r"tokenizer\.json: tokenizer\.json cannot be parsed|tokenizer\.json.*cannot be parsed",
        ),
        (
            dict(config={"num_hidden_layers": 3}),
            r"tensor 'model\.layers\.2\.self_attn\.q_proj\.weight' is missing",
        ),
    ],
)
def test_bad_inputs_are_one_line_errors_naming_the_file_or_field(tmp_path, change, message):
    path = _broken(tmp_path, **change)
    with pytest.raises(InteropError, match=message) as e:
        load_hf(path)
    assert "\n" not in str(e.value)


def test_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    """A model whose embedding table is smaller than its tokenizer (a truncated vocabulary)."""
    from safetensors.numpy import load_file, save_file

    path = _broken(tmp_path, "smollm", config={"vocab_size": 280})
    tensors = load_file(os.path.join(path, "model.safetensors"))
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:280]
    save_file(tensors, os.path.join(path, "model.safetensors"))
    with pytest.raises(
        InteropError, match=r"tokenizer\.json: 288 tokens, more than config\.json's vocab_size=280"
    ):
        load_hf(path)


def test_hub_ids_need_huggingface_hub_or_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network (read when the hub client loads)
    with pytest.raises(InteropError, match=r"^no/such-model: ") as e:
        load_hf("no/such-model")  # offline: not installed, or the download fails
    assert "\n" not in str(e.value)
    with pytest.raises(InteropError, match=r"no-such-dir: no such model directory"):
        load_hf("no-such-dir")


def test_bfloat16_load_stores_and_computes_in_bfloat16():
    path, ref = fixture("gemma")
    cfg, params, _ = load_hf(path, dtype="bfloat16")
    assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "bfloat16")
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    err = np.abs(logits_of(cfg, params, ref["input_ids"]) - ref["logits"]).max()
    assert 1e-4 < err < 0.1 * np.abs(ref["logits"]).max()  # bf16 rounding, not a mapping error


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_every_block_reads_as_the_slice_of_the_whole_tensor(family):
    """What a device reads (`TensorSpec.read`: the HF slice that holds its block) equals its block of
    the whole converted tensor, for halves and quarters of every axis (cuts inside a head's D_h
    fall back to reading the whole tensor)."""
    from safetensors import safe_open

    path, _ = fixture(family)
    cfg, _, _ = load_hf(path)
    with safe_open(os.path.join(path, "model.safetensors"), "np") as fh:
        for spec in tensor_table(cfg):
            whole = spec.to_rocket(fh.get_tensor(spec.hf_name))
            view = fh.get_slice(spec.hf_name)
            for axis, n in enumerate(spec.shape):
                for parts in (2, 4):
                    if n % parts:
                        continue
                    idx = [slice(None)] * len(spec.shape)
                    idx[axis] = slice(n // parts, 2 * n // parts)
                    np.testing.assert_array_equal(spec.read(view, "float32", tuple(idx)), whole[tuple(idx)])
