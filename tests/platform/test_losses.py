"""The KD loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raydistill.platform.errors import RaydistillError
from raydistill.platform.losses import hidden_term, kd_loss
from raydistill.platform.metrics import LOSS_CE, LOSS_HIDDEN, LOSS_KD

pytestmark = pytest.mark.unit


def _logits(seed: int, shape=(5, 3)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 2, 1, 1, 0])
ALL = torch.ones(5, dtype=torch.bool)


def test_kl_is_zero_when_logits_equal():
    s = _logits(0)
    out = kd_loss(s, s.clone(), LABELS, ALL, temperature=3.0, alpha=0.0)
    assert out.kd.item() == pytest.approx(0.0, abs=1e-6)
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)


def test_temperature_squared_factor_hand_computed():
    # Student [0, 0] is uniform at any T. Teacher [ln 3, 0] at T=2 is softmax([ln 3 / 2, 0]):
    # p = sqrt(3) / (sqrt(3) + 1) = 0.633975. KL(p || 1/2) = p ln(2p) + (1-p) ln(2(1-p))
    # = 0.036341, times T^2 = 4 -> 0.145363.
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert expected == pytest.approx(0.145363, abs=1e-6)
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(3), 0.0]])
    out = kd_loss(s, t, torch.tensor([0]), torch.tensor([True]), temperature=2.0, alpha=0.0)
    assert out.kd.item() == pytest.approx(expected, rel=1e-5)
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_kl_is_batch_mean():
    s, t = torch.zeros(2, 2), torch.tensor([[math.log(3), 0.0], [0.0, 0.0]])
    labels = torch.zeros(2, dtype=torch.long)
    one = kd_loss(s[:1], t[:1], labels[:1], ALL[:1], temperature=1.0, alpha=0.0).kd
    both = kd_loss(s, t, labels, ALL[:2], temperature=1.0, alpha=0.0).kd
    assert both.item() == pytest.approx(one.item() / 2)  # second row contributes 0


def test_alpha_one_is_cross_entropy():
    s, t = _logits(0), _logits(1)
    out = kd_loss(s, t, LABELS, ALL, temperature=4.0, alpha=1.0)
    assert out.total.item() == pytest.approx(F.cross_entropy(s, LABELS).item(), rel=1e-6)
    no_mask = kd_loss(s, t, LABELS, None, temperature=4.0, alpha=1.0)  # None: every row labelled
    assert no_mask.total.item() == pytest.approx(out.total.item())


def test_weights_combine_terms():
    s, t = _logits(0), _logits(1)
    out = kd_loss(s, t, LABELS, ALL, temperature=2.0, alpha=0.3)
    assert out.total.item() == pytest.approx(0.3 * out.ce.item() + 0.7 * out.kd.item(), rel=1e-6)
    assert out.hidden.item() == 0.0


def test_mask_excludes_unlabelled_from_ce():
    s, t = _logits(0), _logits(1)
    mask = torch.tensor([True, False, True, False, False])
    out = kd_loss(s, t, LABELS, mask, temperature=2.0, alpha=1.0)
    assert out.ce.item() == pytest.approx(F.cross_entropy(s[mask], LABELS[mask]).item(), rel=1e-6)
    other_labels = LABELS.masked_fill(~mask, -1)  # unlabelled rows may carry any placeholder
    assert kd_loss(s, t, other_labels, mask, temperature=2.0, alpha=1.0).ce.item() == out.ce.item()


def test_no_labelled_rows_gives_zero_ce_still_in_graph():
    s = _logits(0).requires_grad_()
    out = kd_loss(s, _logits(1), LABELS, torch.zeros(5, dtype=torch.bool), temperature=2.0, alpha=0.5)
    assert out.ce.item() == 0.0
    assert out.ce.requires_grad
    out.total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0  # the KL term still teaches


def test_gradients_reach_student_not_teacher():
    s, t = _logits(0).requires_grad_(), _logits(1).requires_grad_()
    kd_loss(s, t, LABELS, ALL, temperature=2.0, alpha=0.5).total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_as_metrics_uses_metric_names():
    out = kd_loss(_logits(0), _logits(1), LABELS, ALL, temperature=2.0, alpha=0.5)
    metrics = out.as_metrics()
    assert set(metrics) == {LOSS_CE, LOSS_KD, LOSS_HIDDEN}
    assert metrics[LOSS_KD] == pytest.approx(out.kd.item())
    assert all(isinstance(v, float) for v in metrics.values())


def _hidden(seed: int, layers: int, batch: int = 2, length: int = 4, dim: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, dim, generator=g) for _ in range(layers + 1)]


def test_hidden_zero_for_identical_states():
    h = _hidden(0, 3)
    assert hidden_term(h, [x.clone() for x in h], [0, 1, 2]).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_maps_student_j_to_teacher_layer_plus_one():
    student, teacher = _hidden(0, 2), _hidden(1, 6)
    teacher[4] = student[1].clone()  # teacher layer 3 (hidden_states[4]) = student layer 0
    teacher[6] = student[2].clone()  # teacher layer 5 = student layer 1
    assert hidden_term(student, teacher, [3, 5]).item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_term(student, teacher, [2, 5]).item() > 0.1


def test_hidden_hand_computed_and_padding_ignored():
    # Token 0: orthogonal (1 - cos = 1); token 1: opposite (2); token 2: padding (ignored).
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 3.0], [-2.0, 0.0], [-1.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0]])
    value = hidden_term([s, s], [t, t], [0], attention_mask=mask)
    assert value.item() == pytest.approx(1.5)


def test_beta_adds_hidden_term_and_keeps_teacher_detached():
    s_logits, t_logits = _logits(0, (2, 3)), _logits(1, (2, 3))
    student = [h.requires_grad_() for h in _hidden(0, 1)]
    teacher = [h.requires_grad_() for h in _hidden(1, 2)]
    out = kd_loss(
        s_logits, t_logits, LABELS[:2], ALL[:2], temperature=2.0, alpha=0.5, beta=0.25,
        student_hidden=student, teacher_hidden=teacher, layer_map=[1],
    )
    expected = 0.5 * out.ce + 0.5 * out.kd + 0.25 * hidden_term(student, teacher, [1])
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
    out.total.backward()
    assert student[1].grad is not None
    assert all(h.grad is None for h in teacher)


def test_beta_without_hidden_states_is_an_error():
    with pytest.raises(RaydistillError, match="output_hidden_states"):
        kd_loss(_logits(0), _logits(1), LABELS, ALL, temperature=2.0, alpha=0.5, beta=1.0)


def test_hidden_layer_count_mismatch_is_an_error():
    with pytest.raises(RaydistillError, match="expected layers \\+ 1"):
        hidden_term(_hidden(0, 2), _hidden(1, 6), [0, 1, 2])


def test_temperature_must_be_positive():
    with pytest.raises(RaydistillError, match="temperature"):
        kd_loss(_logits(0), _logits(1), LABELS, ALL, temperature=0.0, alpha=0.5)
