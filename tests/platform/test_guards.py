"""Guard rails for a user's own study: sizes that fit, suggested before Ray starts."""

from __future__ import annotations

import pytest

from raydistill.platform.config import config_from_dict
from raydistill.platform.errors import ConfigError, PoolExhaustedError
from raydistill.platform.guards import check_sizes, smallest_validation, suggested_sizes

pytestmark = pytest.mark.unit


def test_a_budget_the_pool_cannot_supply_is_refused_with_sizes_that_fit() -> None:
    cfg = config_from_dict({})  # the defaults: 1,000 + 3 x 500 labels
    with pytest.raises(PoolExhaustedError, match=r"= 2500 labels, the pool has only 210 examples; sizes that fit it: "
                                                r"--set al.initial_labeled=52 --set al.query_size=26 --set al.rounds=2 "
                                                r"--set student.transfer_size=null"):
        check_sizes(cfg, pool_size=210, validation_size=5000)
    sizes = suggested_sizes(210)
    fits = config_from_dict({"al": {k.split(".")[1]: v for k, v in sizes.items() if k.startswith("al.")}})
    assert check_sizes(fits, 210, 50_000) == []


def test_a_transfer_set_larger_than_the_pool_is_refused_saying_which() -> None:
    cfg = config_from_dict({"al": {"initial_labeled": 50, "query_size": 20, "rounds": 1},
                            "student": {"transfer_size": 2400}})
    with pytest.raises(ConfigError, match="student.transfer_size = 2400 exceeds the pool's 210 examples: set it to at most 210"):
        check_sizes(cfg, 210, 50_000)


def test_a_validation_split_too_small_for_the_margin_is_a_warning_naming_the_size() -> None:
    cfg = config_from_dict({"al": {"initial_labeled": 50, "query_size": 20, "rounds": 1}})
    assert smallest_validation(0.01) == 9375 and smallest_validation(0.02) == 2344
    (warning,) = check_sizes(cfg, 4000, 60)
    assert warning.startswith("the validation split has 60 examples: with report.margin = 1 point(s)")
    assert "about 9,375 examples would do, or a wider margin" in warning
    wide = config_from_dict({"al": {"initial_labeled": 50, "query_size": 20, "rounds": 1}, "report": {"margin": 2.0}})
    assert check_sizes(wide, 4000, 2542) == []
