"""Active-learning pool state: which pool indices are labelled after each round.

A plain class, tested without Ray; the ``ActiveLearner`` actor wraps one, persists
:meth:`PoolLearner.to_dict` atomically after every change and fans the scoring out. Round 0
is the seeded random initial set; round r (1-based) is the r-th acquisition. Querying a round
already done returns its stored picks, so a restarted worker never double-adds or loses one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raydistill.platform.acquisition import select_top_k
from raydistill.platform.errors import CheckpointError, PoolExhaustedError, RaydistillError

STATE_VERSION = 1


class PoolLearner:
    """Owns which pool indices are labelled after each round. Round 0 = the initial seeded random set."""

    def __init__(self, pool_size: int, initial_labeled: int, query_size: int, rounds: int, seed: int):
        if min(pool_size, initial_labeled, query_size) < 1 or rounds < 0:
            raise RaydistillError(
                f"pool_size={pool_size}, initial_labeled={initial_labeled}, query_size={query_size} "
                f"must be >= 1 and rounds={rounds} >= 0"
            )
        budget = initial_labeled + rounds * query_size
        if budget > pool_size:
            raise PoolExhaustedError(
                f"initial_labeled + rounds * query_size = {initial_labeled} + {rounds} * {query_size} "
                f"= {budget} labels, the pool has only {pool_size} examples"
            )
        self.pool_size, self.initial_labeled = pool_size, initial_labeled
        self.query_size, self.rounds, self.seed = query_size, rounds, seed
        initial = np.random.default_rng(seed).choice(pool_size, size=initial_labeled, replace=False)
        self._picks: list[np.ndarray] = [np.sort(initial).astype(np.int64)]

    @property
    def round(self) -> int:
        """Number of acquisitions done so far."""
        return len(self._picks) - 1

    def _check_round(self, round: int | None) -> int:
        round = self.round if round is None else round
        if not 0 <= round <= self.round:
            raise RaydistillError(f"round {round} is not done: rounds 0..{self.round} are")
        return round

    def labeled_indices(self, round: int | None = None) -> np.ndarray:
        """Sorted labelled pool indices after ``round`` acquisitions (default: the latest)."""
        round = self._check_round(round)
        return np.sort(np.concatenate(self._picks[: round + 1]))

    def unlabeled_indices(self, round: int | None = None) -> np.ndarray:
        """Sorted pool indices not yet labelled after ``round`` acquisitions."""
        return np.setdiff1d(np.arange(self.pool_size), self.labeled_indices(round), assume_unique=True)

    def picks(self, round: int) -> np.ndarray:
        """Indices added by acquisition ``round`` in selection order (round 0: the initial set)."""
        return self._picks[self._check_round(round)].copy()

    def query(self, round: int, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Select acquisition ``round``'s picks: the ``query_size`` best-scored candidates.

        A round already done returns its stored picks whatever the scores (idempotent).
        ``candidates`` (any order) must be exactly the pool still unlabelled before the round.
        Raises RaydistillError for a round out of order or wrong candidates.
        """
        if 1 <= round <= self.round:
            return self.picks(round)
        if round != self.round + 1 or round > self.rounds:
            raise RaydistillError(
                f"cannot query round {round}: {self.round} of {self.rounds} acquisitions are done, "
                f"the next is {self.round + 1}"
            )
        candidates = np.asarray(candidates, dtype=np.int64)
        expected = self.unlabeled_indices()
        if not np.array_equal(np.sort(candidates), expected):
            raise RaydistillError(
                f"round {round} candidates ({len(candidates)}) are not the {len(expected)} "
                "unlabelled pool indices"
            )
        self._picks.append(select_top_k(scores, candidates, self.query_size))
        return self.picks(round)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (what the actor persists after every change)."""
        return {
            "version": STATE_VERSION,
            "pool_size": self.pool_size,
            "initial_labeled": self.initial_labeled,
            "query_size": self.query_size,
            "rounds": self.rounds,
            "seed": self.seed,
            "picks": [p.tolist() for p in self._picks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PoolLearner":
        """Rebuild from :meth:`to_dict`. Raises CheckpointError when the state is inconsistent."""
        if d.get("version") != STATE_VERSION:
            raise CheckpointError(f"pool state version {d.get('version')!r}, expected {STATE_VERSION}")
        learner = cls(d["pool_size"], d["initial_labeled"], d["query_size"], d["rounds"], d["seed"])
        picks = [np.asarray(p, dtype=np.int64) for p in d["picks"]]
        if not picks or not np.array_equal(picks[0], learner._picks[0]):
            raise CheckpointError("pool state's initial set does not match its seed")
        sizes_ok = all(len(p) == learner.query_size for p in picks[1:]) and len(picks) <= learner.rounds + 1
        everything = np.concatenate(picks)
        in_pool = bool(((everything >= 0) & (everything < learner.pool_size)).all())
        if not (sizes_ok and in_pool) or len(np.unique(everything)) != len(everything):
            raise CheckpointError(f"pool state picks are inconsistent (sizes {[len(p) for p in picks]})")
        learner._picks = picks
        return learner
