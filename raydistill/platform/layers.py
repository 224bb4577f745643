"""Layer strategies: which teacher layer initialises which student layer.

Indices are 0-based teacher layers; ``n`` teacher layers, ``k`` student layers. Every
strategy copies exactly the layers its name says (the study this project generalises had
"top" copy the bottom layers and "odd" index layer -1), and every student is a new model
with its own storage (the study returned one global model to every trial).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import asdict, dataclass
from operator import index as as_int
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from transformers import PreTrainedModel

from raydistill.platform.errors import ConfigError

T = TypeVar("T")
Strategy = Callable[[int, int, Sequence[int] | None], list[int] | None]


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """``registry[name]``, or a ConfigError listing the valid names and the closest one."""
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(str(name), list(registry), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {kind} {name!r}: valid are {sorted(registry)}{hint}")


def _bottom(n: int, k: int, custom: Sequence[int] | None) -> list[int]:
    return list(range(k))


def _top(n: int, k: int, custom: Sequence[int] | None) -> list[int]:
    return list(range(n - k, n))


def _even(n: int, k: int, custom: Sequence[int] | None) -> list[int]:
    return list(range(0, n, 2))[:k]


def _odd(n: int, k: int, custom: Sequence[int] | None) -> list[int]:
    return list(range(1, n, 2))[:k]


def _uniform(n: int, k: int, custom: Sequence[int] | None) -> list[int]:
    """round(linspace(0, n-1, k)) rounding half up, in integers so no float error can flip one."""
    if k == 1:
        return [0]
    # floor(i*(n-1)/(k-1) + 1/2) == (2*i*(n-1) + (k-1)) // (2*(k-1))
    return [(2 * i * (n - 1) + (k - 1)) // (2 * (k - 1)) for i in range(k)]


def _custom(n: int, k: int, custom: Sequence[int] | None) -> list[int]:
    if custom is None:
        raise ConfigError("layer strategy 'custom' needs a list of teacher layers (sweep.custom_layers)")
    try:
        layers = [as_int(i) for i in custom]
    except TypeError:
        raise ConfigError(f"custom layers must be integers, got {list(custom)}") from None
    if len(layers) != k:
        raise ConfigError(f"custom layers {layers} has {len(layers)} entries, the student has {k} layers")
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ConfigError(f"custom layers {bad} outside the teacher's layers 0..{n - 1}")
    return layers


def _random(n: int, k: int, custom: Sequence[int] | None) -> None:
    """The control: no teacher layer is copied; the transformer layers keep their fresh
    initialisation (embeddings, pooler and head are still the teacher's)."""
    return None


STRATEGIES: dict[str, Strategy] = {
    "bottom": _bottom,
    "top": _top,
    "even": _even,
    "odd": _odd,
    "uniform": _uniform,
    "custom": _custom,
    "random": _random,
}


def teacher_layer_indices(
    strategy: str, n: int, k: int, custom: Sequence[int] | None = None
) -> list[int] | None:
    """The teacher layer copied into each student layer (``None`` for ``random``).

    ``custom`` is read only by the ``custom`` strategy. Raises ConfigError for an unknown
    strategy, k outside 1..n, or a strategy that cannot supply k layers (odd with n=6, k=4).
    """
    rule = lookup(STRATEGIES, strategy, "layer strategy")
    if not 1 <= k <= n:
        raise ConfigError(f"student layers k={k} must be between 1 and the teacher's n={n} layers")
    layers = rule(n, k, custom)
    if layers is not None and len(layers) != k:
        raise ConfigError(
            f"layer strategy {strategy!r} gives {len(layers)} layers {layers} of a {n}-layer "
            f"teacher, the student needs k={k}"
        )
    return layers


def hidden_layer_map(
    strategy: str, n: int, k: int, custom: Sequence[int] | None = None
) -> list[int]:
    """Teacher layer matched to each student layer by the hidden-state loss.

    ``random`` copies nothing, yet its hidden loss still needs a target: it uses ``uniform``.
    """
    layers = teacher_layer_indices(strategy, n, k, custom)
    return layers if layers is not None else _uniform(n, k, None)


@dataclass(frozen=True)
class LayerProvenance:
    """Where a student's layers came from; saved next to the student (``provenance.json``)."""

    strategy: str
    teacher_layers: list[int] | None
    teacher_num_layers: int
    student_num_layers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encoder_layers(model: PreTrainedModel) -> tuple[str, torch.nn.ModuleList]:
    """The encoder's layer list and its state-dict prefix (``bert.encoder.layer.``)."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"{type(model).__name__} is not a BERT-family encoder "
            "(no model.base_model.encoder.layer): layer strategies cannot map its layers"
        )
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return f"{prefix}.", layers


def _teacher_key(student_key: str, prefix: str, indices: Sequence[int]) -> str:
    """The teacher's state-dict key for a student key: layer j reads teacher layer indices[j]."""
    if not student_key.startswith(prefix):
        return student_key  # embeddings, pooler, classifier head: same name in both
    j, rest = student_key[len(prefix):].split(".", 1)
    return f"{prefix}{indices[int(j)]}.{rest}"


def build_student(
    teacher: PreTrainedModel,
    strategy: str,
    k: int,
    custom: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, LayerProvenance]:
    """A new k-layer model of the teacher's class, initialised by ``strategy``.

    Initialised from ``seed`` (the global RNG is left as it was); embeddings, pooler and head
    are then copied from the teacher for every strategy, and each transformer layer j from
    teacher layer ``indices[j]`` for every strategy but ``random``. The ``random`` control thus
    differs from the others only in its layers, so comparing them measures what the choice of
    layers is worth, not what pretrained embeddings are worth. ``load_state_dict`` copies into
    the student's own tensors, so no parameter storage is shared with the teacher or any other
    student. Raises ConfigError.
    """
    prefix, layers = _encoder_layers(teacher)
    n = len(layers)
    indices = teacher_layer_indices(strategy, n, k, custom)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = k
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = type(teacher)(config)
    source = teacher.state_dict()
    copied = {
        key: source[_teacher_key(key, prefix, indices)]
        for key in student.state_dict()
        if indices is not None or not key.startswith(prefix)
    }
    student.load_state_dict(copied, strict=indices is not None)
    return student, LayerProvenance(strategy, indices, n, k)
