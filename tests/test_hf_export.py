"""Hugging Face export (`rocket.interop.save_hf`): round trips and what cannot be exported.

* every fixture family: load_hf -> save_hf -> load_hf is bit-identical (config, params, tokenizer);
* a rocket-trained dense byte model exports as a Llama with a byte-level tokenizer.json that
  encodes exactly like rocket's byte tokenizer, and reads back with the same logits;
* models HF cannot express (MoD, TokenFormer, mixed family options) are refused naming the field;
* only when `transformers` is importable: transformers loads each export and gives the reference
  logits (tests/fixtures/make_hf_fixtures.py's numbers) to 1e-4.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from rocket.data import ByteTokenizer
from rocket.interop import InteropError, family_of, load_hf, save_hf
from tests.helpers import positions_for, tiny_cfg, tiny_model
from tests.test_hf_import import FAMILIES, fixture, logits_of


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip_is_bit_identical(tmp_path, family):
    cfg, params, tok = load_hf(fixture(family)[0])
    save_hf(cfg, params, tok, str(tmp_path))
    cfg2, params2, tok2 = load_hf(str(tmp_path))
    assert cfg2 == cfg
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params2, params)
    assert tok2.model_proto == tok.model_proto and (tok2.bos_id, tok2.eos_id) == (tok.bos_id, tok.eos_id)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == ("llama" if family == "smollm" else family)


def test_a_rocket_byte_model_exports_as_llama(tmp_path):
    model, variables = tiny_model(tie_embeddings=False)
    save_hf(model.cfg, variables["params"], ByteTokenizer(), str(tmp_path))
    cfg, params, tok = load_hf(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    text = "déf f(x):\n\treturn x ** 2  # \u2581 ok"
    np.testing.assert_array_equal(tok.encode(text), ByteTokenizer().encode(text))
    assert tok.decode(tok.encode(text)) == text and (tok.bos_id, tok.pad_id) == (1, 1)
    np.testing.assert_array_equal(tok.token_num_bytes, ByteTokenizer().token_num_bytes)
    ids = ByteTokenizer().encode("hello world")[None]
    want = model.apply(variables, ids, positions_for(ids))[0]
    np.testing.assert_array_equal(logits_of(cfg, params, ids), want)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(mod=dict(pattern="dense,mod")), "model.mod.pattern"),
        (dict(projection=dict(kind="pattention")), "model.projection.kind"),
        (dict(attention=dict(kind="softplus")), "model.attention.kind"),
        (dict(arch=dict(qk_norm=True, qkv_bias=True)), "model.arch"),
        (dict(arch=dict(norm_offset=True)), "model.arch"),
    ],
)
def test_models_hf_cannot_express_are_refused(changes, field):
    with pytest.raises(InteropError, match=f"^{field.replace('.', '[.]')}"):
        family_of(tiny_cfg(**changes))


def test_sentencepiece_tokenizers_are_refused(tmp_path):
    model, variables = tiny_model()

    class Other:
        bos_id = 1

    with pytest.raises(InteropError, match="^tokenizer: .* cannot be written as a tokenizer.json"):
        save_hf(model.cfg, variables["params"], Other(), str(tmp_path))


def test_transformers_loads_the_export_with_the_same_logits(tmp_path):
    """Runs only where transformers (and torch) are installed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for family in FAMILIES:
        path, ref = fixture(family)
        cfg, params, tok = load_hf(path)
        out = tmp_path / family
        save_hf(cfg, params, tok, str(out))
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            out, dtype=torch.float32, attn_implementation="eager"
        )
        with torch.no_grad():
            logits = hf(torch.tensor(ref["input_ids"], dtype=torch.long)).logits.numpy()
        np.testing.assert_allclose(logits, ref["logits"], atol=1e-4, rtol=0, err_msg=family)
        fast = transformers.AutoTokenizer.from_pretrained(out)
        assert fast("def main(argv):")["input_ids"] == tok.encode("def main(argv):").tolist()
    model, variables = tiny_model(tie_embeddings=False)  # a rocket byte model, exported as a Llama
    save_hf(model.cfg, variables["params"], ByteTokenizer(), str(tmp_path / "byte"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "byte", dtype=torch.float32)
    ids = ByteTokenizer().encode("def main(argv):")[None]
    with torch.no_grad():
        logits = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(logits, model.apply(variables, ids, positions_for(ids))[0], atol=1e-4, rtol=0)
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "byte")
    assert fast("déf (x)")["input_ids"] == ByteTokenizer().encode("déf (x)").tolist()
