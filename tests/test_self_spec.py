"""Self-speculative decoding: stages compose to the model, greedy == AR (chains and static token
trees), one exact cache, FLOPs.

The sampled law is checked in tests/test_self_spec_law.py (the chi-square harness with its power
check).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import ModelStep, SamplerConfig, commit_block, generate, new_cache
from rocket.decode.engine import Ctx
from rocket.decode.methods import METHODS, SelfExit, SelfMoD, SelfMoR, SelfSkip
from rocket.decode.methods.self_spec import verify_forward
from rocket.models.exits import DraftPlan, causal_mask, embed_tokens, model_stages, readout, run_stages
from tests.helpers import positions_for, tiny_model

DENSE3 = dict(n_layers=3)
MOD = dict(n_layers=3, mod=dict(pattern="dense,mod,dense"))
MOR_MIDDLE = dict(n_layers=4, mor=dict(sharing="middle_cycle", recursions=2))
MOR_CYCLE = dict(n_layers=3, mor=dict(sharing="cycle", recursions=3))
GREEDY = SamplerConfig(greedy=True)


@pytest.mark.parametrize(
    "changes", [DENSE3, MOD, MOR_MIDDLE, dict(scan_layers=True)], ids=["dense", "mod", "mor", "scan"]
)
def test_running_every_stage_is_the_model(changes):
    """Stages in order == Transformer.apply(routing="causal"), on a second block read from the cache."""
    model, params = tiny_model(**changes)
    cfg, p = model.cfg, params["params"]
    tok = jax.random.randint(jax.random.key(1), (2, 10), 0, cfg.vocab_size)
    pos = positions_for(tok)
    cache = new_cache(model, 2, 16)
    _, aux = model.apply(params, tok[:, :6], pos[:, :6], cache=cache, routing="causal")
    cache = commit_block(cache, aux["new_kv"], 6)
    want, aux = model.apply(params, tok[:, 6:], pos[:, 6:], cache=cache, routing="causal")
    h = embed_tokens(cfg, p, tok[:, 6:])
    h, _, kvs, valids = run_stages(
        cfg, p, model_stages(cfg), h, jnp.ones((2, 4), bool), pos[:, 6:], causal_mask(2, 4), cache.layer
    )
    np.testing.assert_allclose(readout(cfg, p, h)[0], want, atol=1e-5)
    np.testing.assert_allclose(jnp.stack([k for k, _ in kvs]), aux["new_kv"].k, atol=1e-5)
    if aux["new_kv"].valid is not None:
        np.testing.assert_array_equal(jnp.stack(valids), aux["new_kv"].valid)


def test_the_shared_prefix_ends_at_the_first_skipped_stage():
    model, _ = tiny_model(n_layers=4)
    plan = DraftPlan.of(model.cfg, (1, 3))  # Draft & Verify: layer 2 runs on a different input
    assert (plan.shared, plan.private) == (1, (2,))
    assert plan.cache_layers("shared") == (0,) and plan.cache_layers("suffix") == (1, 2, 3)
    mor, _ = tiny_model(**MOR_MIDDLE)
    plan = DraftPlan.of(mor.cfg, SelfMoR(recursions=1).skip_set(mor.cfg))
    assert [s.kind for s in plan.stages] == ["block", "recursion", "recursion", "block"]
    assert (plan.shared, plan.private) == (2, (3,))  # MoR's "last" block is the draft's own


CASES = {
    "dense_exit": (DENSE3, SelfExit(exit_layer=1)),
    "mor_first_recursion": (MOR_MIDDLE, SelfMoR(recursions=1)),
    "mod_skip_routed": (MOD, SelfMoD(gamma=3)),
    "tree_dense_exit": (DENSE3, SelfExit(exit_layer=1, branching=(2, 1))),
    "tree_skip_set": (DENSE3, SelfSkip(skip=(1,), branching=(3, 1))),  # a private stage
}
SLOW_CASES = {
    "dense_exit_2_gamma_2": (DENSE3, SelfExit(exit_layer=2, gamma=2)),
    "dense_skip_set": (DENSE3, SelfSkip(skip="1")),
    "dense_skip_first": (DENSE3, SelfSkip(skip=(0,))),
    "mor_cycle_two_recursions": (MOR_CYCLE, SelfMoR(recursions=2)),
    "tree_mor_first_recursion": (MOR_MIDDLE, SelfMoR(recursions=1, branching=(2, 2))),
    "tree_mod_skip_routed": (MOD, SelfMoD(branching=(2, 2, 1))),
}


def _greedy_equals_ar(changes, method):
    model, params = tiny_model(**changes)
    step = ModelStep(model, params)
    prompt = jax.random.randint(jax.random.key(3), (3, 5), 0, model.cfg.vocab_size)
    plen = jnp.array([5, 3, 4], jnp.int32)
    run = lambda m: generate(
        step, prompt, plen, jax.random.key(0), method=m, max_new_tokens=10, sampler=GREEDY
    )
    ref, out = run("ar"), run(method)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    assert int(out.rounds) <= 10


@pytest.mark.parametrize("name", sorted(CASES))
def test_greedy_self_speculation_is_greedy_ar(name):
    _greedy_equals_ar(*CASES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_greedy_self_speculation_is_greedy_ar_more_paths(name):
    _greedy_equals_ar(*SLOW_CASES[name])


def _assert_same_cache(got, want):
    np.testing.assert_array_equal(got.length, want.length)
    for layer in range(want.k.shape[0]):
        n = int(want.length[layer, 0])
        np.testing.assert_array_equal(got.slot_pos[layer, 0, :n], want.slot_pos[layer, 0, :n])
        np.testing.assert_allclose(got.k[layer, 0, :n], want.k[layer, 0, :n], atol=1e-5)
        np.testing.assert_allclose(got.v[layer, 0, :n], want.v[layer, 0, :n], atol=1e-5)


@pytest.mark.parametrize(
    "changes,method",
    [
        (MOR_MIDDLE, SelfMoR(recursions=1, gamma=3)),
        (MOR_MIDDLE, SelfMoR(recursions=1, branching=(2, 2))),
        pytest.param(dict(n_layers=4), SelfSkip(skip=(1, 3), gamma=3), marks=pytest.mark.slow),
    ],
    ids=["mor", "mor_tree", "skip_set"],
)
def test_cache_after_each_round_is_a_fresh_full_forward(changes, method):
    """Both caches hold exactly the accepted history: the model's equals a fresh full forward over
    it (every layer, per-layer lengths and positions), the draft's own layers a fresh draft forward.

    The references are one causal forward over the final history, committed up to each round's
    history length n (causal: its first n tokens' K/V are the forward over those n tokens), so the
    references compile once rather than once per round's length."""
    model, params = tiny_model(**changes)
    ctx = Ctx(ModelStep(model, params), None, SamplerConfig(), SamplerConfig(), 40)
    prompt = jax.random.randint(jax.random.key(5), (1, 5), 0, model.cfg.vocab_size)
    state = method.init(ctx, prompt, jnp.array([5], jnp.int32), jax.random.key(0), None)
    round_fn = jax.jit(lambda s, k: method.round(ctx, s, k, jnp.ones((1,), bool)))
    seq, states = list(np.asarray(prompt[0])), []
    for r in range(3):  # sampled (T = 1): rejections and acceptances both happen
        out = round_fn(state, jax.random.key(r))
        state = out.state
        seq += list(np.asarray(out.tokens[0, : int(out.n[0])]))
        states.append((state, len(seq) - 1))  # the history: all but the last emitted token
    hist = jnp.asarray(seq[:-1])[None]
    empty = new_cache(model, 1, 40)
    _, aux = model.apply(params, hist, positions_for(hist), cache=empty, routing="causal")
    _, _, kvs, _ = method._draft_body(
        model.cfg, params["params"], method.plan(model.cfg), hist, positions_for(hist), empty, state.private
    )
    own = jnp.stack([k for k, _ in kvs[1]])
    for s, n in states:
        _assert_same_cache(s.cache, commit_block(empty, aux["new_kv"], n))
        np.testing.assert_array_equal(s.private.length, n)
        np.testing.assert_allclose(s.private.k[:, 0, :n], own[:, 0, :n], atol=1e-5)


def _flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])


def test_the_verifier_does_no_work_for_the_shared_layers():
    """XLA's cost analysis: verifier FLOPs + the shared prefix's FLOPs == one full forward of the
    block, so the verifier computes none of the shared layers for the drafted tokens."""
    model, params = tiny_model(n_layers=4, d_model=128, n_heads=4)
    cfg, p = model.cfg, params["params"]
    plan = SelfExit(exit_layer=2).plan(cfg)
    b, t = 1, 5
    tok = jnp.zeros((b, t), jnp.int32)
    pos, act = positions_for(tok), jnp.ones((b, t), bool)
    cache = new_cache(model, b, 64)
    h = jnp.zeros((b, t, cfg.d_model), jnp.float32)
    full = _flops(lambda c, x: model.apply(params, x, pos, cache=c, routing="causal")[0], cache, tok)
    verify = _flops(lambda c, x: verify_forward(cfg, p, plan, x, act, pos, c)[0], cache, h)
    prefix = _flops(
        lambda c, x: run_stages(
            cfg, p, plan.stages[:2], embed_tokens(cfg, p, x), act, pos, causal_mask(b, t), c.layer
        )[0],
        cache,
        tok,
    )
    assert prefix > 0.3 * full
    assert verify == pytest.approx(full - prefix, rel=0.03)


@pytest.mark.parametrize(
    "changes,method,match",
    [
        (DENSE3, SelfExit(exit_layer=3), "exit_layer 3 is out of range"),
        (DENSE3, SelfExit(exit_layer=0), "out of range"),
        (DENSE3, SelfSkip(skip=(0, 1, 2)), "skips every one"),
        (DENSE3, SelfSkip(skip=(5,)), "outside the model"),
        (DENSE3, SelfMoD(), "no routed"),
        (DENSE3, SelfMoR(), "needs a Mixture-of-Recursions"),
        (MOR_MIDDLE, SelfMoR(recursions=2), "recursions 2 is out of range"),
        (dict(mor=dict(sharing="cycle", recursions=2, kv="share")), SelfMoR(), "mor.kv='recursion'"),
    ],
)
def test_bad_draft_paths_are_one_line_errors(changes, method, match):
    model, params = tiny_model(**changes)
    prompt = jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(ValueError, match=match) as err:
        generate(
            ModelStep(model, params),
            prompt,
            jnp.array([3]),
            jax.random.key(0),
            method=method,
            max_new_tokens=2,
        )
    assert "\n" not in str(err.value)


def test_gamma_must_be_positive_and_methods_are_registered():
    with pytest.raises(ValueError, match="gamma"):
        SelfExit(gamma=0)
    with pytest.raises(ValueError, match="branching"):
        SelfExit(branching=(2, 0))
    assert SelfExit(branching=(1, 1)) == SelfExit(gamma=2)  # an all-ones tree is the chain
    tree = SelfSkip(branching="3,2,1")
    assert (tree.gamma, tree.branching, tree.emit_width, tree.block_width) == (3, (3, 2, 1), 4, 16)
    assert {"self_exit", "self_skip", "self_mod", "self_mor"} <= set(METHODS)
    assert SelfSkip(skip="3, 1").skip == (1, 3)


def _cli(tmp_path, method: str):
    import os
    import subprocess
    import sys

    from tests.helpers import fast_compile_flags, save_tiny_run

    workdir = tmp_path / "run"
    save_tiny_run(workdir)
    cmd = [sys.executable, "-m", "rocket.generate", f"--checkpoint={workdir}", f"--method={method}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XLA_FLAGS": fast_compile_flags(os.environ.get("XLA_FLAGS", ""))}  # 8 tokens
    return subprocess.run(
        cmd + ["--max_new_tokens=8", "--prompt=def f"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_bad_draft_path_is_exit_2(tmp_path):
    res = _cli(tmp_path, "self_mod")  # a dense checkpoint has no routed layers
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: self_mod needs a Mixture-of-Depths model, but this model has no routed (MoD) layers"
    ], res.stderr[-2000:]


@pytest.mark.slow
def test_cli_decodes_with_a_self_draft(tmp_path):
    res = _cli(tmp_path, "self_exit")
    assert res.returncode == 0 and "mean_accepted_tokens" in res.stdout, res.stderr[-2000:]


def test_the_repro_claims_read_the_measured_speedup_not_the_modelled_one():
    """repro_selfspec's derive on a synthetic record: the verdicts follow the measured speedup
    (experiments/lib/verdicts.py `speed`, its rule tested in tests/test_verdicts.py), whatever the
    modelled one says, and every claim names its control."""
    from experiments.repro_selfspec import DRAFT_VERIFY, LAYERSKIP, derive

    runs = (LAYERSKIP, "exit at 2, EE-trained", "exit at 2, plain-trained", "separate 2-layer draft")
    runs += (DRAFT_VERIFY, "control: exit at 2, EE-trained, repeated")

    def record(layerskip, draft_verify, modelled):
        measured = {LAYERSKIP: layerskip, DRAFT_VERIFY: draft_verify}
        rows = [
            dict(seed=s, run=r, acceptance=0.5, mat=2.0, measured_speedup=measured.get(r, 0.3) + 0.02 * s - 0.01,
                 modelled_speedup=modelled)
            for s in (0, 1) for r in runs
        ]  # fmt: skip
        data = {f"seed{s}": {"mor_routing": {"mor/rec1/selected": 0.0}} for s in (0, 1)}
        return {"mode": "full", "rows": rows, "data": data}

    for (ls, dv, modelled), want in [
        ((0.25, 0.19, 5.0), ("not reproduced", "not reproduced")),  # slow, however fast the model says
        ((2.2, 1.3, 0.1), ("reproduced", "partly")),  # fast, however slow the model says
        ((9.0, 1.0, 1.0), ("implausible - see controls", "not reproduced")),  # > 3x the paper's 2.16x
    ]:
        claims, summary = derive(record(ls, dv, modelled))
        assert tuple(c.verdict for c in claims) == want
        assert all(c.control and not c.ours.endswith(" ") for c in claims)
        assert f"measured {ls:.2f} +- 0.01x" in claims[0].ours and "400 steps" in claims[0].our_setup
    assert "2-layer draft" in claims[0].control and "measured twice" in claims[1].control


def test_the_repro_has_no_paper_scale_preset_and_says_so():
    from experiments.repro_selfspec import main

    with pytest.raises(SystemExit, match="no paper-scale preset"):
        main(["--scale", "paper", "--plan"])
