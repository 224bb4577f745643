"""Acquisition functions against hand-computed scores, and deterministic selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raydistill.platform.acquisition import (
    ACQUISITIONS,
    bald_scores,
    batch_seed,
    mc_dropout_probs,
    random_pool_scores,
    score_batches,
    score_logits,
    score_probs,
    select_top_k,
)
from raydistill.platform.config import ACQUISITION_NAMES, TeacherConfig
from raydistill.platform.errors import ConfigError, PoolExhaustedError, RaydistillError
from raydistill.platform.models import build_teacher
from raydistill.platform.text import Encoded

pytestmark = pytest.mark.unit

# Rows: confident, unsure, in between.
PROBS = np.array([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.6, 0.3, 0.1]])


class PointwiseContract:
    """What every [N, C] acquisition guarantees; one subclass per function."""

    name: str

    def test_one_finite_score_per_row(self):
        scores = score_probs(self.name, PROBS)
        assert scores.shape == (3,) and scores.dtype == np.float64 and np.isfinite(scores).all()

    def test_logits_numpy_and_torch_agree(self):
        logits, expected = np.log(PROBS), score_probs(self.name, PROBS)
        np.testing.assert_allclose(score_logits(self.name, logits), expected, atol=1e-12)
        as_torch = torch.tensor(logits, dtype=torch.float32)
        np.testing.assert_allclose(score_logits(self.name, as_torch), expected, atol=1e-6)

    def test_rows_scored_independently(self):
        """A shard gets the scores it gets inside the whole pool (what sharding relies on)."""
        whole = score_probs(self.name, PROBS)
        assert score_probs(self.name, PROBS[1:]) == pytest.approx(whole[1:])

    def test_unsure_beats_confident(self):
        scores = score_probs(self.name, PROBS)
        assert scores[1] > scores[2] > scores[0]

    def test_samples_rejected(self):
        with pytest.raises(RaydistillError, match="2-d"):
            score_probs(self.name, PROBS[None])


class TestEntropy(PointwiseContract):
    name = "entropy"

    def test_hand_computed(self):
        probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
        expected = [math.log(2), 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
        assert score_probs(self.name, probs) == pytest.approx(expected)


class TestMargin(PointwiseContract):
    name = "margin"

    def test_hand_computed(self):
        assert score_probs(self.name, PROBS) == pytest.approx([1 - 0.97, 1 - 0.01, 1 - 0.3])


class TestLeastConfidence(PointwiseContract):
    name = "least_confidence"

    def test_hand_computed(self):
        assert score_probs(self.name, PROBS) == pytest.approx([0.02, 0.66, 0.4])


class TestRandom:
    name = "random"

    def test_reproducible_with_seed_and_differs_across_seeds(self):
        a, b, c = (score_logits(self.name, np.zeros((50, 2)), seed=s) for s in (1, 1, 2))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        assert ((a >= 0) & (a < 1)).all()

    def test_ignores_the_model(self):
        scores = score_probs(self.name, PROBS, seed=4)
        np.testing.assert_array_equal(score_probs(self.name, PROBS[::-1], seed=4), scores)

    def test_pool_scores_seeded_by_seed_and_round_per_index(self):
        assert ACQUISITIONS[self.name].pool_scores is random_pool_scores
        scores = random_pool_scores(0, 1, 100)
        assert scores.shape == (100,)
        np.testing.assert_array_equal(random_pool_scores(0, 1, 100), scores)
        assert not np.array_equal(random_pool_scores(0, 2, 100), scores)
        assert not np.array_equal(random_pool_scores(5, 1, 100), scores)


class TestBald:
    def test_disagreeing_samples_score_ln2(self):
        # Sample 1 says class 0, sample 2 class 1: mean [0.5, 0.5] has entropy ln 2, each sample 0.
        samples = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
        assert bald_scores(samples) == pytest.approx([math.log(2)])

    def test_agreeing_samples_score_zero(self):
        samples = np.repeat(PROBS[None], 4, axis=0)
        assert bald_scores(samples) == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)

    def test_hand_computed_mixture(self):
        # Samples [0.9, 0.1] and [0.5, 0.5]: H([0.7, 0.3]) - (H([0.9, 0.1]) + ln 2) / 2.
        def h(p):
            return -sum(x * math.log(x) for x in p)

        samples = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]])
        expected = h([0.7, 0.3]) - (h([0.9, 0.1]) + math.log(2)) / 2
        assert score_probs("bald", samples) == pytest.approx([expected])
        assert score_logits("bald", samples.log()) == pytest.approx([expected])

    def test_needs_samples(self):
        assert ACQUISITIONS["bald"].mc_dropout
        with pytest.raises(RaydistillError, match=r"\[S, N, C\]"):
            score_probs("bald", PROBS)


def test_registry_covers_config_names():
    assert set(ACQUISITIONS) == set(ACQUISITION_NAMES)


def test_unknown_name_lists_names_and_closest():
    with pytest.raises(ConfigError) as err:
        score_logits("entropi", PROBS)
    assert "did you mean 'entropy'" in str(err.value)
    assert all(name in str(err.value) for name in ACQUISITIONS)


def test_mc_dropout_probs_samples_differ_and_mode_is_restored():
    cfg = TeacherConfig(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32, dropout=0.5)
    model = build_teacher(cfg, num_labels=3, vocab_size=30, max_length=8, seed=0).eval()
    batch = {"input_ids": torch.randint(1, 30, (4, 8)), "labels": torch.zeros(4, dtype=torch.long)}
    probs = mc_dropout_probs(model, batch, n_samples=5, seed=7)
    assert probs.shape == (5, 4, 3) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 4))
    assert not torch.allclose(probs[0], probs[1])
    assert not model.training
    assert (bald_scores(probs) > 0).all()


# ---------------------------------------------------------------- batch scoring


@pytest.fixture(scope="module")
def dropout_model():
    cfg = TeacherConfig(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32, dropout=0.5)
    return build_teacher(cfg, num_labels=3, vocab_size=30, max_length=16, seed=0).eval()


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    ids = [[2, *rng.integers(5, 30, size=rng.integers(2, 14)).tolist(), 3] for _ in range(40)]
    return Encoded.from_rows(ids, [[0] * len(row) for row in ids], rng.integers(0, 3, size=40))


POOL_BATCHES = [list(range(start, start + 8)) for start in range(0, 40, 8)]


def _score(model, pool, batches, name="bald", seed=0, round=1):
    indices, scores = score_batches(model, pool, batches, name, pad_token_id=0, mc_samples=4,
                                    seed=seed, round=round)
    return dict(zip(indices.tolist(), scores.tolist()))


def test_batch_seed_depends_on_seed_round_and_batch_only():
    base = batch_seed(0, 1, [8, 9, 10])
    assert batch_seed(0, 1, [8, 9, 10]) == base
    assert len({base, batch_seed(1, 1, [8, 9]), batch_seed(0, 2, [8, 9]), batch_seed(0, 1, [16, 17])}) == 4


@pytest.mark.parametrize("name", ["bald", "entropy"])
def test_scoring_a_batch_twice_gives_the_same_scores(dropout_model, pool, name):
    first = _score(dropout_model, pool, POOL_BATCHES[:1], name)
    torch.rand(3)  # the global RNG moving on between calls changes nothing
    assert _score(dropout_model, pool, POOL_BATCHES[:1], name) == first
    assert sorted(first) == POOL_BATCHES[0]


def test_bald_scores_do_not_depend_on_order_or_grouping(dropout_model, pool):
    """What 1 vs N scorers rely on: a batch gets its scores whoever scores it, after whatever."""
    whole = _score(dropout_model, pool, POOL_BATCHES)
    assert sorted(whole) == list(range(40)) and len(set(whole.values())) > 1
    reversed_order = _score(dropout_model, pool, POOL_BATCHES[::-1])
    dealt = {}
    for shard in (POOL_BATCHES[1::2], POOL_BATCHES[0::2]):  # two scorers, merged in another order
        dealt.update(_score(dropout_model, pool, shard))
    assert reversed_order == whole and dealt == whole
    assert _score(dropout_model, pool, POOL_BATCHES, round=2) != whole  # new round, new masks


def test_mc_dropout_leaves_the_global_rng_alone(dropout_model, pool):
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    _score(dropout_model, pool, POOL_BATCHES[:2])
    torch.testing.assert_close(torch.rand(5), expected)
    assert not dropout_model.training


def test_score_batches_refuses_model_free_rules(dropout_model, pool):
    with pytest.raises(RaydistillError, match="pool_scores"):
        score_batches(dropout_model, pool, POOL_BATCHES, "random", pad_token_id=0, mc_samples=2, seed=0, round=1)


def test_select_top_k_ties_broken_by_index():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    candidates = np.array([7, 3, 5, 1, 0])
    np.testing.assert_array_equal(select_top_k(scores, candidates, 3), [1, 3, 5])


def test_select_top_k_rounds_before_ranking():
    scores = np.array([0.1234564, 0.1234561, 0.2])
    np.testing.assert_array_equal(select_top_k(scores, np.array([9, 4, 6]), 2), [6, 4])
    np.testing.assert_array_equal(select_top_k(scores, np.array([9, 4, 6]), 2, decimals=7), [6, 9])


def test_sharded_and_unsharded_selection_agree():
    rng = np.random.default_rng(0)
    candidates = np.sort(rng.choice(1000, size=300, replace=False))
    scores = np.round(rng.random(300), 3)  # many ties
    whole = select_top_k(scores, candidates, 40)
    shards = np.array_split(np.arange(300), 4)[::-1]  # merged in another order, with float noise
    merged_scores = np.concatenate([scores[s] + 1e-9 for s in shards])
    merged_candidates = np.concatenate([candidates[s] for s in shards])
    np.testing.assert_array_equal(select_top_k(merged_scores, merged_candidates, 40), whole)


def test_select_top_k_errors():
    with pytest.raises(PoolExhaustedError, match="asked for 4 examples, only 3"):
        select_top_k(np.zeros(3), np.arange(3), 4)
    with pytest.raises(RaydistillError, match="NaN"):
        select_top_k(np.array([0.1, np.nan]), np.arange(2), 1)
    with pytest.raises(RaydistillError, match="must be equal"):
        select_top_k(np.zeros(3), np.arange(2), 1)
