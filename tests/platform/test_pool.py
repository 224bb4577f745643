"""The active-learning pool state, without Ray: seeded initial set, idempotent rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raydistill.platform.errors import CheckpointError, PoolExhaustedError, RaydistillError
from raydistill.platform.pool import PoolLearner

pytestmark = pytest.mark.unit


def _learner(seed: int = 0) -> PoolLearner:
    return PoolLearner(pool_size=100, initial_labeled=10, query_size=5, rounds=3, seed=seed)


def _query(learner: PoolLearner, round: int, seed: int = 0) -> np.ndarray:
    candidates = learner.unlabeled_indices(round - 1)
    scores = np.random.default_rng([seed, round]).random(len(candidates))
    return learner.query(round, scores, candidates)


def test_initial_set_size_and_seeded():
    a, b, c = _learner(0), _learner(0), _learner(1)
    assert a.round == 0
    labeled = a.labeled_indices()
    assert len(labeled) == 10 and len(np.unique(labeled)) == 10 and np.all(np.diff(labeled) > 0)
    assert ((labeled >= 0) & (labeled < 100)).all()
    np.testing.assert_array_equal(a.picks(0), labeled)
    np.testing.assert_array_equal(b.labeled_indices(), labeled)
    assert not np.array_equal(c.labeled_indices(), labeled)
    np.testing.assert_array_equal(np.union1d(labeled, a.unlabeled_indices()), np.arange(100))


def test_each_query_adds_query_size_new_indices():
    learner = _learner()
    for r in (1, 2, 3):
        before = learner.labeled_indices()
        picks = _query(learner, r)
        assert learner.round == r
        assert len(picks) == 5 and not np.isin(picks, before).any()
        np.testing.assert_array_equal(learner.labeled_indices(), np.union1d(before, picks))
        np.testing.assert_array_equal(learner.labeled_indices(r - 1), before)
    assert len(learner.labeled_indices()) == 25 and len(learner.unlabeled_indices()) == 75


def test_query_picks_the_highest_scores():
    learner = _learner()
    candidates = learner.unlabeled_indices()
    scores = np.zeros(len(candidates))
    scores[[3, 40, 7, 60, 12]] = [0.9, 0.8, 0.7, 0.6, 0.5]
    np.testing.assert_array_equal(learner.query(1, scores, candidates), candidates[[3, 40, 7, 60, 12]])


def test_requery_is_idempotent_whatever_the_scores():
    learner = _learner()
    first = _query(learner, 1, seed=0)
    _query(learner, 2, seed=0)
    again = learner.query(1, np.zeros(3), np.arange(3))
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(_query(learner, 2, seed=9), learner.picks(2))
    assert learner.round == 2 and len(learner.labeled_indices()) == 20


def test_out_of_order_rounds_rejected():
    learner = _learner()
    with pytest.raises(RaydistillError, match="the next is 1"):
        learner.query(2, np.zeros(90), learner.unlabeled_indices())
    with pytest.raises(RaydistillError, match="cannot query round 0"):
        learner.query(0, np.zeros(90), learner.unlabeled_indices())
    for r in (1, 2, 3):
        _query(learner, r)
    with pytest.raises(RaydistillError, match="3 of 3 acquisitions are done"):
        learner.query(4, np.zeros(75), learner.unlabeled_indices())
    with pytest.raises(RaydistillError, match="round 4 is not done"):
        learner.labeled_indices(4)


def test_candidates_must_be_the_unlabelled_pool():
    learner = _learner()
    candidates = learner.unlabeled_indices()
    with pytest.raises(RaydistillError, match="not the 90 unlabelled"):
        learner.query(1, np.zeros(89), candidates[1:])
    labeled_one = np.concatenate([candidates[1:], learner.labeled_indices()[:1]])
    with pytest.raises(RaydistillError, match="not the 90 unlabelled"):
        learner.query(1, np.zeros(90), labeled_one)
    shuffled = np.random.default_rng(0).permutation(candidates)  # any order is fine
    assert len(learner.query(1, np.zeros(90), shuffled)) == 5


def test_to_dict_from_dict_round_trip():
    learner = _learner(seed=3)
    _query(learner, 1)
    _query(learner, 2)
    state = json.loads(json.dumps(learner.to_dict()))
    restored = PoolLearner.from_dict(state)
    assert restored.round == 2
    for r in (0, 1, 2):
        np.testing.assert_array_equal(restored.picks(r), learner.picks(r))
    np.testing.assert_array_equal(restored.labeled_indices(), learner.labeled_indices())
    np.testing.assert_array_equal(_query(restored, 3), _query(learner, 3))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d.update(version=99), "version"),
        (lambda d: d["picks"][0].reverse(), "initial set"),
        (lambda d: d["picks"][1].pop(), "inconsistent"),
        (lambda d: d["picks"][1].__setitem__(0, d["picks"][0][0]), "inconsistent"),
        (lambda d: d["picks"][1].__setitem__(0, 1000), "inconsistent"),
    ],
)
def test_from_dict_rejects_inconsistent_state(corrupt, message):
    learner = _learner()
    _query(learner, 1)
    state = learner.to_dict()
    corrupt(state)
    with pytest.raises(CheckpointError, match=message):
        PoolLearner.from_dict(state)


def test_exhausted_pool_error_gives_both_numbers():
    with pytest.raises(PoolExhaustedError, match=r"= 31 labels, the pool has only 30"):
        PoolLearner(pool_size=30, initial_labeled=10, query_size=7, rounds=3, seed=0)
    PoolLearner(pool_size=31, initial_labeled=10, query_size=7, rounds=3, seed=0)  # exactly fits


def test_invalid_sizes_rejected():
    with pytest.raises(RaydistillError, match="must be >= 1"):
        PoolLearner(pool_size=10, initial_labeled=0, query_size=1, rounds=1, seed=0)
