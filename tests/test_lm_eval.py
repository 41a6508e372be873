"""The lm-evaluation-harness adapter (`rocket.interop.lm_eval.RocketLM`), called directly with
request objects shaped like lm_eval's (`.args`), so no lm_eval install is needed:

  * loglikelihood equals rocket's own scoring (`rocket_next_token_logprobs`, one context at a time),
    and its greedy flag is the argmax check;
  * loglikelihood_rolling of a text that fits equals loglikelihood with an empty context, and with
    a short max_length every token is still scored exactly once (the window sums cover the text);
  * generate_until returns the engine's greedy text cut at the first stop string, the same for
    `ar` and greedy speculative decoding with a draft.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from rocket.decode import generate
from rocket.decode.tools.byte_probs import rocket_next_token_logprobs
from rocket.interop.decoding import load_hf_steps
from rocket.interop.lm_eval import RocketLM, encode_pair
from tests.test_hf_import import fixture


@dataclasses.dataclass
class Request:
    args: tuple


@pytest.fixture(scope="module")
def llama():
    return load_hf_steps(fixture("llama")[0], fixture("smollm")[0])


def own_loglikelihood(step, tok, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    lm = rocket_next_token_logprobs(step.module, step.variables, tok.bos_id, bucket=16, batch=4)
    rows = lm([tuple(context + continuation[:j]) for j in range(len(continuation))])
    picked = [rows[j, t] for j, t in enumerate(continuation)]
    return float(np.sum(picked)), all(rows[j].argmax() == t for j, t in enumerate(continuation))


def test_loglikelihood_equals_rockets_own_scoring(llama):
    target, _, tok = llama
    lm = RocketLM(target, tok, batch_size=2)
    pairs = [
        ("The quick brown", " fox jumps"),
        ("def main(argv):\n    ", "return sorted(argv)"),
        ("Spec", "ulative"),
    ]
    got = lm.loglikelihood([Request(p) for p in pairs])
    for (context, continuation), (logp, greedy) in zip(pairs, got):
        ctx, cont = encode_pair(tok, context, continuation)
        want_logp, want_greedy = own_loglikelihood(target, tok, ctx, cont)
        assert logp == pytest.approx(want_logp, abs=1e-4) and greedy == want_greedy
        assert tok.decode(ctx + cont) == context + continuation
    assert encode_pair(tok, "a fox ", "jumps") == encode_pair(tok, "a fox", " jumps")  # trailing space moves


def test_loglikelihood_rolling_scores_every_token_once(llama):
    target, _, tok = llama
    text = "The quick brown fox jumps over the lazy dog. def main(argv): return sorted(argv)"
    full = RocketLM(target, tok, batch_size=2)
    (rolling,) = full.loglikelihood_rolling([Request((text,))])
    ((whole, _),) = full.loglikelihood([Request(("", text))])
    assert rolling == pytest.approx(whole, abs=1e-4)
    short = RocketLM(target, tok, batch_size=2, max_length=12)
    ids = [tok.bos_id] + tok.encode(text).tolist()
    assert len(ids) > 3 * 12
    (windowed,) = short.loglikelihood_rolling([Request((text,))])
    want = 0.0
    for start in range(1, len(ids), 11):  # windows of 12 tokens predict 11 new ones each
        end = min(start + 11, len(ids))
        lo = max(0, end - 12)  # the window's first token plays BOS for rocket's own scoring
        lm = rocket_next_token_logprobs(target.module, target.variables, ids[lo], bucket=16, batch=16)
        rows = lm([tuple(ids[lo + 1 : j]) for j in range(start, end)])
        want += sum(rows[k, ids[j]] for k, j in enumerate(range(start, end)))
    assert (
        windowed == pytest.approx(want, abs=1e-3) and abs(windowed - rolling) > 0.1
    )  # the windows cut context


def test_generate_until_is_the_engines_greedy_text_cut_at_until(llama):
    target, draft, tok = llama
    ar = RocketLM(target, tok, batch_size=2)
    (text,) = ar.generate_until([Request(("def main", {"max_gen_toks": 10}))])
    prompt = np.array([[tok.bos_id, *tok.encode("def main")]], np.int32)
    out = generate(target, prompt, np.array([prompt.shape[1]]), jax.random.key(0), max_new_tokens=10)
    assert text == tok.decode(np.asarray(out.tokens[0]))
    stop = text[3:5]
    (cut,) = ar.generate_until([Request(("def main", {"max_gen_toks": 10, "until": [stop]}))])
    assert cut == text[: text.find(stop)]
    spec = RocketLM(target, tok, draft=draft, method="speculative")
    assert spec.generate_until([Request(("def main", {"max_gen_toks": 10}))]) == [text]


def test_from_args_needs_one_model():
    with pytest.raises(ValueError, match="exactly one of pretrained"):
        RocketLM.from_args()
    lm = RocketLM.from_args(pretrained=fixture("qwen2")[0], batch_size=4)
    assert lm.max_length == 128 and lm.batch_size == 4
