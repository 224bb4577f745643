"""The knowledge-distillation loss:

    alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)) + beta * (1 - cos(h_s, h_t))

CE runs only on the examples the active learner paid labels for; the KL term on every
example (the teacher's soft labels are free: that is what distillation buys). T^2 keeps the
soft-target gradients on the scale of the hard-label ones as T grows (Hinton et al., 2015).
Teacher tensors are detached: gradients reach the student only. Each term's weight name
(alpha, 1 - alpha, beta) is reported under its own metric key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from raydistill.platform.errors import RaydistillError
from raydistill.platform.metrics import LOSS_CE, LOSS_HIDDEN, LOSS_KD

IGNORE = -100  # F.cross_entropy's ignore_index: unlabelled rows are dropped without a branch


@dataclass
class KDLossOutput:
    """The weighted total (to backpropagate) and each unweighted term (to report)."""

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor
    hidden: torch.Tensor

    def as_metrics(self) -> dict[str, float]:
        return {LOSS_CE: self.ce.item(), LOSS_KD: self.kd.item(), LOSS_HIDDEN: self.hidden.item()}


def ce_term(
    student_logits: torch.Tensor, labels: torch.Tensor, labeled_mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean CE over labelled rows; 0 (still attached to the graph) when the batch has none."""
    if labeled_mask is None:
        labeled_mask = torch.ones_like(labels, dtype=torch.bool)
    targets = labels.masked_fill(~labeled_mask.bool(), IGNORE)  # (B,)
    total = F.cross_entropy(student_logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    return total / labeled_mask.sum().clamp(min=1)


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hidden_term(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    layer_map: Sequence[int],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over mapped layers of (1 - cosine) averaged over non-padded tokens.

    Student ``hidden_states[j+1]`` meets teacher ``hidden_states[layer_map[j]+1]`` (index 0 is
    the embeddings, as HF returns them).
    """
    if len(student_hidden) != len(layer_map) + 1:
        raise RaydistillError(
            f"hidden loss: {len(student_hidden)} student hidden states for {len(layer_map)} "
            "mapped layers (expected layers + 1: the embeddings come first)"
        )
    mask = (
        torch.ones(student_hidden[0].shape[:2], device=student_hidden[0].device)
        if attention_mask is None
        else attention_mask.float()
    )  # (B, L)
    tokens = mask.sum().clamp(min=1)
    terms = []
    for j, t in enumerate(layer_map):
        cos = F.cosine_similarity(
            student_hidden[j + 1].float(), teacher_hidden[t + 1].detach().float(), dim=-1
        )  # (B, L)
        terms.append(((1 - cos) * mask).sum() / tokens)
    return torch.stack(terms).mean()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    labeled_mask: torch.Tensor | None,
    temperature: float,
    alpha: float,
    beta: float = 0.0,
    student_hidden: Sequence[torch.Tensor] | None = None,
    teacher_hidden: Sequence[torch.Tensor] | None = None,
    layer_map: Sequence[int] | None = None,
    attention_mask: torch.Tensor | None = None,
) -> KDLossOutput:
    """The KD loss and its terms. ``labeled_mask`` None means every row is labelled.

    The hidden term is computed only when ``beta > 0``, and then needs both models' hidden
    states and the layer map. Raises RaydistillError otherwise.
    """
    if temperature <= 0:
        raise RaydistillError(f"temperature must be > 0, got {temperature}")
    ce = ce_term(student_logits, labels, labeled_mask)
    kd = kd_term(student_logits, teacher_logits, temperature)
    if beta > 0:
        if student_hidden is None or teacher_hidden is None or layer_map is None:
            raise RaydistillError(
                f"beta={beta} needs student_hidden, teacher_hidden and layer_map "
                "(run both models with output_hidden_states=True)"
            )
        hidden = hidden_term(student_hidden, teacher_hidden, layer_map, attention_mask)
    else:
        hidden = ce.new_zeros(())
    total = alpha * ce + (1 - alpha) * kd + beta * hidden
    return KDLossOutput(total=total, ce=ce, kd=kd, hidden=hidden)
