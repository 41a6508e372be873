"""Dataset Decomposition: binary chunking, fixed tokens per step, no cross-document rows, curriculum, resume."""

import numpy as np
import pytest

from rocket.config import ConfigError, DataConfig
from rocket.data.decomposition import DecompositionIterator, binary_decompose
from rocket.data.packing import DataError
from rocket.data.tokens import TokenizedSplit


def _split(seed=0, n_docs=300):
    """Documents of log-uniform lengths; token i of the flat array has value i (so every token
    names its own place and a row must be a contiguous slice of one document)."""
    lengths = np.exp(np.random.default_rng(seed).uniform(np.log(3), np.log(400), n_docs)).astype(np.int64)
    doc_starts = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.arange(doc_starts[-1], dtype=np.int32)
    return TokenizedSplit(tokens, doc_starts, int(doc_starts[-1]))


def _iterator(split, **kw):
    args = dict(max_log2=6, min_log2=3, batch_size=2, seed=0)
    return DecompositionIterator(split, np.ones(split.vocab_size, np.int32), **{**args, **kw})


def test_binary_decompose_follows_the_binary_expansion_and_drops_short_tails():
    doc_starts = np.array([0, 14, 14 + 9, 14 + 9 + 3])  # 13, 8 and 2 targets
    out = binary_decompose(doc_starts, min_log2=1, max_log2=5, rng=np.random.default_rng(0))
    assert out[3].tolist() == [0, 14] and out[2].tolist() == [8] and out[1].tolist() == [23]
    # 13 = 8 + 4 + (1 dropped); 8 = 8; 2 = 2. Chunks overlap by one token: 8 then 4 starts at 0 + 8.
    long = binary_decompose(np.array([0, 2001]), min_log2=2, max_log2=4, rng=np.random.default_rng(0))
    chunks = sorted((int(s), k) for k, v in long.items() for s in v)
    starts = np.array([s for s, _ in chunks])
    ends = starts + 2 ** np.array([k for _, k in chunks])
    np.testing.assert_array_equal(starts[1:], ends[:-1])  # back to back, sharing one token
    assert starts[0] == 0 and 2000 - ends[-1] < 4  # everything but a tail shorter than 2**min_log2
    assert {k for _, k in chunks} == {2, 3, 4}  # long remainders draw random sizes in [min, max]


def _official_get_binary_lengths(n_targets, min_log2, max_log2, rng):
    """Chunk sizes (targets) of the official `get_binary` (apple/ml-dataset-decomposition,
    scripts/make_dd_buckets.py) on one document of n_targets + 1 tokens, re-stated as a loop:
    ps = 2**arange(max - min + 1), drawn over k = max, max - 1, ..., min."""
    ps = 2.0 ** np.arange(max_log2 + 1 - min_log2)
    ps /= ps.sum()
    left, out = n_targets, []
    while left >= 1:
        k = int(np.log2(left))
        if k < min_log2:
            break
        if k > max_log2:
            k = int(rng.choice(np.arange(max_log2, min_log2 - 1, -1), p=ps))
        out.append(k)
        left -= 2**k
    return out


def test_long_documents_put_equal_token_mass_in_every_bucket_as_the_official_rule():
    """Documents far longer than the largest bucket: the random chunk sizes give every bucket the
    same share of tokens (p_k ~ 2**(max - k)), 25% each for buckets 16..128, like the official code
    (a p_k ~ 2**k draw would give about 1% / 5% / 19% / 75%)."""
    min_log2, max_log2, n = 4, 7, 2**18
    ours = binary_decompose(
        np.array([0, n + 1]), min_log2=min_log2, max_log2=max_log2, rng=np.random.default_rng(0)
    )
    share = np.array([len(ours[k]) * 2**k for k in range(min_log2, max_log2 + 1)], float)
    share /= share.sum()
    ks = np.array(_official_get_binary_lengths(n, min_log2, max_log2, np.random.default_rng(1)))
    official = np.array([np.sum(ks == k) * 2**k for k in range(min_log2, max_log2 + 1)], float)
    official /= official.sum()
    np.testing.assert_allclose(official, 0.25, atol=0.02)
    np.testing.assert_allclose(share, official, atol=0.03)
    assert sum(len(v) * 2**k for k, v in ours.items()) > n - 2**max_log2 * 2  # everything but the tail


def test_every_step_has_the_promised_tokens_and_rows_never_cross_documents():
    split = _split()
    it = _iterator(split)
    doc_of = np.searchsorted(split.doc_starts, np.arange(split.doc_starts[-1]), side="right") - 1
    seen, sizes = set(), []
    for _ in range(len(it._schedule)):  # one epoch
        batch = next(it)
        b, t = batch["inputs"].shape
        assert b * t == 2 * 2**6 and t in (8, 16, 32, 64)
        assert batch["weights"].sum() == b * t and (batch["segment_ids"] == 1).all()
        np.testing.assert_array_equal(batch["positions"], np.broadcast_to(np.arange(t), (b, t)))
        rows = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], 1)  # the 2**k + 1 tokens
        assert (np.diff(rows, axis=1) == 1).all()  # a contiguous slice of the token array ...
        assert (doc_of[rows] == doc_of[rows[:, :1]]).all()  # ... inside one document
        for r in rows[:, 0].tolist():
            assert r not in seen  # no chunk twice in an epoch
            seen.add(r)
        sizes.append(t)
    third = len(sizes) // 3
    assert np.mean(np.log2(sizes[:third])) < np.mean(np.log2(sizes[-third:]))  # short to long


def test_uniform_curriculum_has_no_short_to_long_trend_and_cycles_repeat_it():
    split = _split()
    means = []
    for cycles in (1, 2):
        it = _iterator(split, curriculum="grow_p2", cycles=cycles)
        sizes = np.log2([k for k, _ in it._schedule])
        half = len(sizes) // 2
        means.append((sizes[: half // 2].mean(), sizes[half // 2 : half].mean()))
    assert means[1][0] < means[1][1]  # each cycle restarts short to long: the first half rises too
    trend = {}
    for curriculum in ("uniform", "grow_p2"):
        sizes = np.array([k for k, _ in _iterator(split, curriculum=curriculum)._schedule], float)
        third = len(sizes) // 3
        trend[curriculum] = sizes[-third:].mean() - sizes[:third].mean()
    assert abs(trend["uniform"]) < 0.3 < trend["grow_p2"], trend


def test_resume_is_exact_across_an_epoch_boundary_and_shards_agree():
    split = _split(n_docs=120)
    it = _iterator(split)
    n = len(it._schedule)
    for _ in range(n - 2):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(5)]  # crosses into epoch 1
    other = _iterator(split)
    other.set_state(state)
    for a, b in zip(want, [next(other) for _ in range(5)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(DataError, match="saved for"):
        _iterator(split, seed=1).set_state(state)
    full = _iterator(split, batch_size=2)
    halves = [_iterator(split, batch_size=1, shard_index=i, shard_count=2) for i in range(2)]
    for _ in range(4):
        g, h0, h1 = next(full), next(halves[0]), next(halves[1])
        np.testing.assert_array_equal(
            np.sort(np.concatenate([h0["inputs"], h1["inputs"]]), 0), np.sort(g["inputs"], 0)
        )


def test_bad_decomposition_input_is_rejected():
    with pytest.raises(DataError, match="full batch"):
        _iterator(_split(n_docs=3), batch_size=64)
    with pytest.raises(ConfigError, match="'data.seq_len'"):
        DataConfig(seq_len=96, decomposition=True)
    with pytest.raises(ConfigError, match="'data.dd_min_log2'"):
        DataConfig(seq_len=64, decomposition=True, dd_min_log2=7)
    with pytest.raises(ConfigError, match="'data.dd_curriculum'"):
        DataConfig(dd_curriculum="long_to_short")
