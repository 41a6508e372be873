"""The two-sided verdict rules of the reproductions (experiments/lib/verdicts.py) on synthetic numbers."""

from experiments.lib import verdicts
from experiments.lib.verdicts import IMPLAUSIBLE, INCONCLUSIVE, NOT, PARTLY, REPRODUCED


def test_at_most_is_two_sided_against_the_papers_effect():
    paper = 0.011  # a paper's 1.1% gain
    assert verdicts.at_most(-0.01, 0.002, 0.01, paper=paper) == REPRODUCED  # about the paper's gain
    assert verdicts.at_most(0.005, 0.0, 0.01, paper=paper) == REPRODUCED  # matches within tolerance
    assert verdicts.at_most(0.02, 0.0, 0.01, paper=paper) == PARTLY
    assert verdicts.at_most(0.05, 0.0, 0.01, paper=paper) == NOT
    assert verdicts.at_most(0.05, 0.02, 0.01) == PARTLY  # the seed spread widens the tolerance
    # MoR-like: -9.7% +- 0.8% against the paper's -1.1%: far beyond 3x the paper's effect
    assert verdicts.at_most(-0.097, 0.008, 0.01, paper=paper) == IMPLAUSIBLE
    # just inside 3x beyond the spread is still plausible; the spread can pull it back inside
    assert verdicts.at_most(-0.03, 0.0, 0.01, paper=paper) == REPRODUCED
    assert verdicts.at_most(-0.05, 0.03, 0.01, paper=paper) == REPRODUCED
    assert verdicts.at_most(-0.5, 0.0, 0.01) == REPRODUCED  # no paper number: no upper bound


def test_beats_needs_a_gain_beyond_the_noise_and_below_the_implausible_bound():
    assert verdicts.beats(0.05, 0.01, 0.01) == REPRODUCED
    assert verdicts.beats(0.015, 0.01, 0.01) == INCONCLUSIVE  # within 2 x spread
    assert verdicts.beats(-0.05, 0.01, 0.01) == NOT
    assert verdicts.beats(0.5, 0.01, 0.01, paper=0.1) == IMPLAUSIBLE
    assert verdicts.beats(0.25, 0.01, 0.01, paper=0.1) == REPRODUCED
    assert not verdicts.implausible(1.0, 0.0, None) and not verdicts.implausible(1.0, 0.0, 0.0)


def test_a_modelled_speedup_never_upgrades_a_measured_one():
    assert verdicts.speed(0.17, 2.0) == NOT  # 0.17x measured is a slowdown, whatever a model says
    assert verdicts.speed(1.3, 2.0) == PARTLY
    assert verdicts.speed(2.1, 2.0, paper_high=3.0) == REPRODUCED
    assert verdicts.speed(10.0, 2.0, paper_high=3.0) == IMPLAUSIBLE


def test_faster_needs_a_ratio_beyond_the_timing_noise():
    assert verdicts.faster(0.7, 0.6) == REPRODUCED
    assert verdicts.faster(0.9, 0.6) == verdicts.faster(1.1, 0.6) == INCONCLUSIVE
    assert verdicts.faster(1.3, 1.1) == NOT
    assert verdicts.faster(0.9, 0.6, noise=0.05) == REPRODUCED
    assert verdicts.faster(0.5, 0.83) == INCONCLUSIVE  # faster than its FLOPs allow: timing noise


def test_decoding_verdicts_read_the_measured_t1_speedup():
    """repro_decoding's derive on synthetic rows: a measured 0.17x with a modelled 5x is not
    reproduced, and T=1 (not the looping greedy regime) decides."""
    from experiments.repro_decoding import derive

    def row(temp, method, draft=None, gamma=None, speedup=1.0, flat=1.0, mat=1.0):
        r = {"name": method, "temperature": temp, "method": method, "target_bpb": 2.0, "speedup": speedup}
        r |= {
            "flat_speedup": flat,
            "mean_accepted_tokens": mat,
            "target_calls_per_token": 1 / mat,
            "acceptance": 0.5,
        }
        if draft:
            r |= {"draft": draft, "gamma": gamma, "theory_mat": mat}
        if temp == 0.0 and method != "ar":
            r["greedy_equals_ar"] = 1
        return r

    rows = [
        row(0.0, "ar"),
        row(0.0, "speculative", "1L", 4, speedup=2.5, flat=3.0, mat=4.6),
        row(0.0, "token_recycling", speedup=0.17, flat=5.2, mat=5.5),
        row(1.0, "ar"),
        row(1.0, "speculative", "1L", 4, speedup=0.9, flat=1.9, mat=3.0),
        row(1.0, "token_recycling", speedup=0.09, flat=2.0, mat=2.1),
    ]
    settings = {"steps": 10, "drafts": {"1L": 1}, "prompts": 1, "max_new": 8, "repeats": 1}
    claims, summary = derive({"rows": rows, "data": {"settings": settings, "greedy_sample": "aaaa"}})
    by_claim = {c.claim.split(" ")[0]: c.verdict for c in claims}
    assert by_claim["Speculative"] == NOT  # 2.5x at T=0 does not count: T=1 measured 0.9x
    assert by_claim["Token"] == NOT
    assert "T=1 is the primary regime" in summary
