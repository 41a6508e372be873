"""The MEAP recall probe of experiments/repro_training.py: its masks never hide what the answer needs."""

import numpy as np

from experiments.repro_training import VOCAB, evidence, meap_mask_rows, shared_mask_hits
from rocket.data.synthetic import associative_recall


def test_recall_probe_masks_per_row_around_the_answers_evidence():
    batch = associative_recall(256, 8, seed=3)
    ev = evidence(batch)
    rows = np.arange(256)
    inputs = batch["inputs"]
    assert (inputs[rows, ev[:, 0]] == inputs[rows, ev[:, 2]]).all()  # the queried key, as in the body
    # the value after the queried key is the answer
    assert (inputs[rows, ev[:, 1]] == batch["targets"][rows, -1]).all()
    masked = meap_mask_rows(batch, 0.15, np.random.default_rng(0))
    hit = masked["inputs"] == VOCAB - 1
    assert (hit.sum(1) == int(34 * 0.15)).all() and not hit[:, -1].any()
    assert not np.take_along_axis(hit, ev, 1).any()  # never the key, value or query
    np.testing.assert_array_equal(masked["targets"], batch["targets"])
    assert len({tuple(np.flatnonzero(h)) for h in hit}) > 100  # per row, not shared by the batch
    # the official batch-shared positions would hide evidence in about 40% of rows:
    # 1 - C(30, 5) / C(33, 5) = 0.400 for 3 evidence positions among 33 maskable ones
    assert abs(shared_mask_hits(batch, 0.15, np.random.default_rng(1), draws=2000) - 0.400) < 0.02
