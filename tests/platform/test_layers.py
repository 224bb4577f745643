"""Layer strategies: every strategy copies exactly the layers its name says, and students
never share parameters with each other or the teacher (the study's two worst defects)."""

from __future__ import annotations

import pytest
import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from raydistill.platform.config import STRATEGY_NAMES, TeacherConfig
from raydistill.platform.errors import ConfigError
from raydistill.platform.layers import (
    STRATEGIES,
    LayerProvenance,
    build_student,
    hidden_layer_map,
    teacher_layer_indices,
)
from raydistill.platform.models import build_teacher

pytestmark = pytest.mark.unit

SHAPES = [(12, 6), (6, 3)]
CUSTOM = {(12, 6): [11, 0, 5, 5, 3, 8], (6, 3): [4, 1, 2]}
# The tables of DESIGN.md "Layer strategies".
EXPECTED = {
    ("bottom", 12, 6): [0, 1, 2, 3, 4, 5],
    ("top", 12, 6): [6, 7, 8, 9, 10, 11],
    ("even", 12, 6): [0, 2, 4, 6, 8, 10],
    ("odd", 12, 6): [1, 3, 5, 7, 9, 11],
    ("uniform", 12, 6): [0, 2, 4, 7, 9, 11],
    ("bottom", 6, 3): [0, 1, 2],
    ("top", 6, 3): [3, 4, 5],
    ("even", 6, 3): [0, 2, 4],
    ("odd", 6, 3): [1, 3, 5],
    ("uniform", 6, 3): [0, 3, 5],
}


@pytest.fixture(scope="module")
def teachers() -> dict[int, torch.nn.Module]:
    """Tiny teachers; seed 99 so no student seed reproduces the teacher's own initialisation."""
    def make(n: int) -> torch.nn.Module:
        cfg = TeacherConfig(num_layers=n, hidden_size=16, num_heads=2, intermediate_size=32)
        return build_teacher(cfg, num_labels=3, vocab_size=40, max_length=16, seed=99)

    return {n: make(n) for n, _ in SHAPES}


def _layer_params(model: torch.nn.Module, j: int) -> list[tuple[str, torch.Tensor]]:
    return list(model.base_model.encoder.layer[j].state_dict().items())


def _non_layer_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Embeddings, pooler and classifier head."""
    return {k: v for k, v in model.state_dict().items() if ".encoder.layer." not in k}


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(1, 40, (4, 10), generator=g), "labels": torch.tensor([0, 1, 2, 1])}


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class StrategyContract:
    """What every layer strategy guarantees; one subclass per strategy."""

    strategy: str

    @pytest.fixture(params=SHAPES, ids=lambda s: f"n{s[0]}k{s[1]}")
    def shape(self, request) -> tuple[int, int]:
        return request.param

    def indices(self, n: int, k: int) -> list[int] | None:
        return teacher_layer_indices(self.strategy, n, k, CUSTOM[(n, k)])

    def build(self, teachers, shape, seed: int = 0):
        n, k = shape
        return build_student(teachers[n], self.strategy, k, custom=CUSTOM[shape], seed=seed)

    def test_student_shape_and_provenance(self, teachers, shape):
        student, prov = self.build(teachers, shape)
        n, k = shape
        assert type(student) is type(teachers[n])
        assert len(student.base_model.encoder.layer) == k == student.config.num_hidden_layers
        assert teachers[n].config.num_hidden_layers == n  # the teacher's config was not touched
        assert prov == LayerProvenance(self.strategy, self.indices(n, k), n, k)
        assert prov.to_dict()["teacher_layers"] == self.indices(n, k)

    def test_students_share_no_storage(self, teachers, shape):
        a, _ = self.build(teachers, shape, seed=0)
        b, _ = self.build(teachers, shape, seed=1)
        ptrs = [{p.data_ptr() for p in m.parameters()} for m in (a, b, teachers[shape[0]])]
        assert not ptrs[0] & ptrs[1]
        assert not ptrs[0] & ptrs[2]
        assert not ptrs[1] & ptrs[2]

    def test_training_one_student_changes_nothing_else(self, teachers, shape):
        teacher = teachers[shape[0]]
        a, _ = self.build(teachers, shape, seed=0)
        b, _ = self.build(teachers, shape, seed=0)
        before = {"a": _snapshot(a), "b": _snapshot(b), "teacher": _snapshot(teacher)}
        opt = torch.optim.SGD(a.parameters(), lr=0.5)
        a(**_batch()).loss.backward()
        opt.step()
        assert not _equal_states(_snapshot(a), before["a"])
        assert _equal_states(_snapshot(b), before["b"])
        assert _equal_states(_snapshot(teacher), before["teacher"])


class CopyingStrategyContract(StrategyContract):
    """Strategies that copy layers: layer j is teacher layer idx[j], tensor for tensor."""

    def test_indices_match_design(self, shape):
        n, k = shape
        if (self.strategy, n, k) in EXPECTED:
            assert self.indices(n, k) == EXPECTED[(self.strategy, n, k)]

    def test_layers_copied_tensor_for_tensor(self, teachers, shape):
        n, k = shape
        student, _ = self.build(teachers, shape)
        idx = self.indices(n, k)
        assert len(idx) == k
        for j, t in enumerate(idx):
            s_params, t_params = _layer_params(student, j), _layer_params(teachers[n], t)
            assert [name for name, _ in s_params] == [name for name, _ in t_params]
            for (name, s), (_, tt) in zip(s_params, t_params):
                assert torch.equal(s, tt), f"student layer {j} {name} != teacher layer {t}"
            if j + 1 < k and idx[j + 1] != t:  # and not some other teacher layer
                other = _layer_params(teachers[n], idx[j + 1])
                assert not all(torch.equal(s, o) for (_, s), (_, o) in zip(s_params, other))

    def test_embeddings_pooler_head_copied(self, teachers, shape):
        student, _ = self.build(teachers, shape)
        s, t = _non_layer_params(student), _non_layer_params(teachers[shape[0]])
        assert any("classifier" in k for k in s) and any("pooler" in k for k in s)
        assert _equal_states(s, t)


class TestBottom(CopyingStrategyContract):
    strategy = "bottom"


class TestTop(CopyingStrategyContract):
    strategy = "top"


class TestEven(CopyingStrategyContract):
    strategy = "even"


class TestOdd(CopyingStrategyContract):
    strategy = "odd"


class TestUniform(CopyingStrategyContract):
    strategy = "uniform"


class TestCustom(CopyingStrategyContract):
    strategy = "custom"

    def test_custom_list_is_used_as_given(self, shape):
        assert self.indices(*shape) == CUSTOM[shape]


class TestRandom(StrategyContract):
    strategy = "random"

    def test_only_the_layers_are_fresh(self, teachers, shape):
        """The fair control: embeddings, pooler and head are the teacher's; no layer is."""
        student, prov = self.build(teachers, shape)
        assert prov.teacher_layers is None
        teacher = teachers[shape[0]]
        assert _equal_states(_non_layer_params(student), _non_layer_params(teacher))
        for key, value in _non_layer_params(student).items():
            assert value.data_ptr() != teacher.state_dict()[key].data_ptr(), key
        query = student.base_model.encoder.layer[0].attention.self.query.weight
        teacher_queries = [layer.attention.self.query.weight for layer in teacher.base_model.encoder.layer]
        assert not any(torch.equal(query, q) for q in teacher_queries)

    def test_seeded_init(self, teachers, shape):
        a, _ = self.build(teachers, shape, seed=3)
        b, _ = self.build(teachers, shape, seed=3)
        c, _ = self.build(teachers, shape, seed=4)
        assert _equal_states(a.state_dict(), b.state_dict())
        assert not _equal_states(a.state_dict(), c.state_dict())

    def test_hidden_map_falls_back_to_uniform(self, shape):
        assert hidden_layer_map("random", *shape) == teacher_layer_indices("uniform", *shape)


def test_registry_covers_config_names():
    assert set(STRATEGIES) == set(STRATEGY_NAMES)


def test_build_student_leaves_global_rng_alone(teachers):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_student(teachers[6], "random", 3, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [(12, 1, [0]), (12, 2, [0, 11]), (12, 12, list(range(12))), (5, 3, [0, 2, 4]), (4, 3, [0, 2, 3])],
)
def test_uniform_rounds_half_up(n, k, expected):
    assert teacher_layer_indices("uniform", n, k) == expected


def test_hidden_map_of_copying_strategy_is_its_indices():
    assert hidden_layer_map("top", 12, 6) == [6, 7, 8, 9, 10, 11]
    assert hidden_layer_map("custom", 6, 2, [5, 0]) == [5, 0]


@pytest.mark.parametrize(
    ("strategy", "n", "k", "custom", "message"),
    [
        ("odd", 6, 4, None, "gives 3 layers"),
        ("even", 5, 4, None, "gives 3 layers"),
        ("top", 6, 7, None, "between 1 and"),
        ("bottom", 6, 0, None, "between 1 and"),
        ("custom", 6, 3, None, "needs a list"),
        ("custom", 6, 3, [0, 1], "has 2 entries"),
        ("custom", 6, 3, [0, 1, 6], r"\[6\] outside"),
        ("custom", 6, 3, [0, -1, 2], r"\[-1\] outside"),
        ("custom", 6, 3, [0, 1.5, 2], "must be integers"),
    ],
)
def test_strategy_errors(strategy, n, k, custom, message):
    with pytest.raises(ConfigError, match=message):
        teacher_layer_indices(strategy, n, k, custom)


def test_unknown_strategy_lists_names_and_closest():
    with pytest.raises(ConfigError) as err:
        teacher_layer_indices("unifrom", 12, 6)
    assert "did you mean 'uniform'" in str(err.value)
    assert all(name in str(err.value) for name in STRATEGIES)


def test_non_bert_model_rejected():
    config = DistilBertConfig(vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                              max_position_embeddings=16)
    with pytest.raises(ConfigError, match="not a BERT-family encoder"):
        build_student(DistilBertForSequenceClassification(config), "bottom", 1)
