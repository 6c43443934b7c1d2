"""The `search:` section of a config: which fields a space may search, and its validation into `SearchSettings`."""

from __future__ import annotations

import dataclasses
import difflib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..config import ConfigError, RunConfig
from ..evaluation import METRICS
from ..models import get_model_spec, model_types

# Fields a space may search, with the type each value must have. Training fields go through `hp_space`
# onto `TrainingArguments`; model fields (each model's spec lists its own) are sampled in `model_init(trial)`.
TRAINING_SEARCH_FIELDS: dict[str, type] = {
    "learning_rate": float,
    "warmup_ratio": float,
    "warmup_steps": float,
    "num_train_epochs": float,
    "weight_decay": float,
    "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int,
    "lr_scheduler_type": str,
    "max_grad_norm": float,
    "adam_beta1": float,
    "adam_beta2": float,
    "adam_epsilon": float,
    "label_smoothing_factor": float,
}
# What `evaluation.make_compute_metrics` returns; all are better when higher (the study maximises).
OBJECTIVE_METRICS = tuple(METRICS)
PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
}
SEARCH_KEYS = (
    "n_trials",
    "space",
    "pruner",
    "sampler",
    "storage",
    "study_name",
    "metric",
    "retrain_best",
    "heartbeat_interval",
    "grace_period",
    "workers",
)
SPEC_KEYS = ("type", "low", "high", "log", "step", "choices")
STUDY_DB_NAME = "study.db"
# Optuna's journal file, the default study of several worker processes on one machine: appends under a file
# lock are safe between processes, where SQLite's locking fails under concurrent writers. `storage` names it as
# `journal:///` + its path, like an SQLite URL (`journal:////abs/path/study.journal`).
STUDY_JOURNAL_NAME = "study.journal"
JOURNAL_URL_PREFIX = "journal:///"
# Trial user attributes (columns user_attrs_* of trials.csv): why a trial failed, and which dead trial's
# parameters a trial runs again.
FAIL_REASON = "fail_reason"
RETRY_OF = "retry_of"


@dataclass(frozen=True)
class ParamSpec:
    """One searched field: a float or int range (optionally log-scaled or stepped) or a categorical choice."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def candidate_values(self) -> list[Any]:
        """The values to check against the field's own validation: the range ends, or every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


@dataclass
class SearchSettings:
    n_trials: int
    training_space: dict[str, ParamSpec]
    model_space: dict[str, ParamSpec]
    pruner: dict[str, Any]
    sampler: dict[str, Any]
    storage: str
    study_name: str
    metric: str
    retrain_best: bool = False
    heartbeat_interval: int = 20
    grace_period: int = 60
    workers: int = 1  # worker processes this command starts on this machine

    @property
    def journal_file(self) -> Path | None:
        """The journal file holding the study, or None when `storage` is a database URL."""
        if self.storage.startswith(JOURNAL_URL_PREFIX):
            return Path(self.storage.removeprefix(JOURNAL_URL_PREFIX))
        return None


def _unknown_key_message(key: str, valid, where: str) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(valid)}."


def _number(value: Any, where: str) -> float | int:
    # PyYAML reads `1e-5` (no dot) as a string; accept it rather than make users write `1.0e-5`.
    if isinstance(value, bool):
        raise ConfigError(f"{where}={value!r} must be a number.")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}={value!r} must be a number.")


def parse_param_spec(name: str, spec: Any, value_type: type) -> ParamSpec:
    """`{type: float, low, high, log, step}`, `{type: int, ...}`, `{type: categorical, choices}` or a list."""
    where = f"search.space.{name}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping such as {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}, "
            f"{{type: int, low: 2, high: 16}} or {{type: categorical, choices: [2, 4]}} (or a list of choices); "
            f"got {spec!r}."
        )
    for key in spec:
        if key not in SPEC_KEYS:
            raise ConfigError(_unknown_key_message(key, SPEC_KEYS, where))
    kind = spec.get("type")
    if kind not in ("float", "int", "categorical"):
        raise ConfigError(f"{where}.type={kind!r} must be one of 'float', 'int', 'categorical'.")

    if kind == "categorical":
        if set(spec) - {"type", "choices"}:
            raise ConfigError(
                f"{where}: a categorical space takes only `choices`, got {sorted(set(spec) - {'type'})}."
            )
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices must be a non-empty list, got {choices!r}.")
        if value_type is str:
            bad = [c for c in choices if not isinstance(c, str)]
        elif value_type is int:
            bad = [c for c in choices if isinstance(c, bool) or not isinstance(c, int)]
        else:
            bad = [c for c in choices if isinstance(c, bool) or not isinstance(c, (int, float))]
        if bad:
            raise ConfigError(
                f"{where}.choices {bad} are not {value_type.__name__} values, which {name} takes."
            )
        return ParamSpec(name, "categorical", choices=tuple(choices))

    if value_type is str:
        raise ConfigError(
            f"{where}: {name} takes a string; search it with {{type: categorical, choices: [...]}}."
        )
    if kind == "float" and value_type is int:
        raise ConfigError(f"{where}: {name} is an integer; use type: int or categorical.")
    if "choices" in spec:
        raise ConfigError(f"{where}: `choices` belongs to type: categorical, not type: {kind}.")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a {kind} range needs both `low` and `high`.")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    step = _number(spec["step"], f"{where}.step") if spec.get("step") is not None else None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log={log!r} must be true or false.")
    if kind == "int" and any(float(v) != int(v) for v in (low, high, step or 1)):
        raise ConfigError(
            f"{where}: an int range needs whole numbers, got low={low}, high={high}, step={step}."
        )
    if not low <= high:
        raise ConfigError(f"{where}: low={low} is above high={high}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low={low}.")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.step={step} must be positive.")
    if log and step is not None and (kind == "float" or step != 1):
        raise ConfigError(
            f"{where}: `log` and `step` cannot be combined (Optuna samples either on a log scale or on a grid)."
        )
    return ParamSpec(
        name, kind, low=float(low), high=float(high), log=log, step=None if step is None else float(step)
    )


def _check_model_values(run: RunConfig, spec: ParamSpec) -> None:
    # ModelArguments validates its own fields (ranks positive, dropouts in [0, 1), ...): try every end.
    for value in spec.candidate_values():
        try:
            dataclasses.replace(run.model, **{spec.name: value})
        except (ConfigError, ValueError) as error:
            raise ConfigError(
                f"search.space.{spec.name} allows {value!r}, which the model refuses: {error}"
            ) from None


def _check_training_values(run: RunConfig, spec: ParamSpec) -> None:
    current = getattr(run.training, spec.name)
    for value in spec.candidate_values():
        if isinstance(current, enum.Enum):
            # The Trainer casts each sampled value to the field's type, e.g. SchedulerType("cosine").
            try:
                type(current)(value)
            except ValueError:
                allowed = ", ".join(repr(member.value) for member in type(current))
                raise ConfigError(f"search.space.{spec.name}: {value!r} is not one of {allowed}.") from None
        elif isinstance(value, (int, float)) and value < 0:
            raise ConfigError(f"search.space.{spec.name} allows {value}, but {spec.name} cannot be negative.")
    if spec.name == "warmup_ratio" and not all(0 <= value < 1 for value in spec.candidate_values()):
        raise ConfigError(
            f"search.space.warmup_ratio must stay within [0, 1), got {spec.candidate_values()}."
        )


def parse_search_settings(run: RunConfig, validation_has_track_ids: bool = True) -> SearchSettings:
    """Validate `run.search` and fill in its defaults. Raises `ConfigError` naming what is wrong."""
    search = dict(run.search or {})
    for key in search:
        if key not in SEARCH_KEYS:
            raise ConfigError(_unknown_key_message(key, SEARCH_KEYS, "the search: section"))

    n_trials = search.get("n_trials")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(
            f"search.n_trials={n_trials!r} must be a positive integer (the number of finished trials wanted)."
        )

    space = search.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            "search.space must map the fields to search to their ranges, e.g. "
            "{learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}}."
        )
    model_type = run.model.model_type
    model_fields = get_model_spec(model_type).search_fields
    training_space, model_space = {}, {}
    for name, spec in space.items():
        if name in TRAINING_SEARCH_FIELDS:
            training_space[name] = parse_param_spec(name, spec, TRAINING_SEARCH_FIELDS[name])
            _check_training_values(run, training_space[name])
        elif name in model_fields:
            model_space[name] = parse_param_spec(name, spec, model_fields[name])
            _check_model_values(run, model_space[name])
        else:
            other = [t for t in model_types() if name in get_model_spec(t).search_fields]
            why = (
                f"it is a field of model_type {other[0]}, and this config trains {model_type}"
                if other
                else "it is not a searchable field"
            )
            searchable = list(TRAINING_SEARCH_FIELDS) + list(model_fields)
            close = difflib.get_close_matches(name, searchable, n=2)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close and not other else ""
            raise ConfigError(
                f"search.space.{name}: {why}.{hint} A space for {model_type} may search the TrainingArguments "
                f"fields {', '.join(TRAINING_SEARCH_FIELDS)} and the model fields {', '.join(model_fields)}."
            )

    pruner = _named_options(search.get("pruner", "median"), "pruner", PRUNERS)
    sampler = _named_options(search.get("sampler", "tpe"), "sampler", SAMPLERS)

    metric = search.get("metric") or ("track_accuracy" if validation_has_track_ids else "accuracy")
    metric = metric.removeprefix("eval_")
    if metric not in OBJECTIVE_METRICS:
        raise ConfigError(
            f"search.metric={metric!r} is not a validation metric the search can maximise; use one of "
            f"{', '.join(OBJECTIVE_METRICS)}."
        )
    if METRICS[metric].needs_track_ids and not validation_has_track_ids:
        raise ConfigError(
            f"search.metric={metric!r} needs track ids in the validation split; use 'accuracy'."
        )

    workers = search.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"search.workers={workers!r} must be a positive whole number: the worker processes to start on this "
            "machine (one per GPU, or a share of the CPU cores each)."
        )
    output_dir = Path(run.training.output_dir)
    storage = search.get("storage") or default_storage(output_dir, workers)
    if not isinstance(storage, str) or "://" not in storage:
        raise ConfigError(
            f"search.storage={storage!r} is not a database URL: use e.g. sqlite:///path/study.db or "
            "postgresql+psycopg2://user:password@host:5432/dbname."
        )
    study_name = search.get("study_name") or output_dir.resolve().name
    retrain_best = search.get("retrain_best", False)
    if not isinstance(retrain_best, bool):
        raise ConfigError(f"search.retrain_best={retrain_best!r} must be true or false.")
    heartbeat_interval = search.get("heartbeat_interval", 20)
    grace_period = search.get(
        "grace_period", 3 * heartbeat_interval if isinstance(heartbeat_interval, int) else 60
    )
    for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"search.{name}={value!r} must be a positive whole number of seconds.")
    if grace_period <= heartbeat_interval:
        raise ConfigError(
            f"search.grace_period={grace_period} must be longer than search.heartbeat_interval={heartbeat_interval}, "
            "or live trials would be taken for dead ones."
        )
    return SearchSettings(
        n_trials=n_trials,
        training_space=training_space,
        model_space=model_space,
        pruner=pruner,
        sampler=sampler,
        storage=storage,
        study_name=study_name,
        metric=metric,
        retrain_best=retrain_best,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        workers=workers,
    )


def default_storage(output_dir: Path, workers: int) -> str:
    """The study in `output_dir` when no storage is given: the one already there, else SQLite for one worker
    and the journal file for several."""
    journal, database = (output_dir / STUDY_JOURNAL_NAME).resolve(), (output_dir / STUDY_DB_NAME).resolve()
    if journal.is_file():
        return f"{JOURNAL_URL_PREFIX}{journal}"
    if database.is_file() and workers > 1:
        raise ConfigError(
            f"{output_dir} holds a single-worker study in {database}, and SQLite is not safe for {workers} worker "
            "processes writing at once: continue it with search.workers: 1 (--workers 1), put it on a database "
            "server with --storage URL, or start a new study in another output_dir."
        )
    if workers > 1:
        return f"{JOURNAL_URL_PREFIX}{journal}"
    return f"sqlite:///{database}"


def _named_options(value: Any, what: str, registry: dict[str, Callable]) -> dict[str, Any]:
    """`'median'` or `{name: median, n_startup_trials: 2}` -> `{'name': 'median', 'n_startup_trials': 2}`."""
    options = {"name": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if options is None or options.get("name") not in registry:
        raise ConfigError(
            f"search.{what}={value!r}: give one of {', '.join(registry)}, or a mapping with `name` and its "
            f"options, e.g. {{name: {next(iter(registry))}, ...}}."
        )
    try:
        _build_named(options, what, registry)
    except TypeError as error:
        raise ConfigError(f"search.{what}: {error}") from None
    return options


def _build_named(options: dict[str, Any], what: str, registry: dict[str, Callable]):
    kwargs = {k: v for k, v in options.items() if k != "name"}
    factory = registry[options["name"]]
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise TypeError(f"{options['name']} {what} options {kwargs} are not accepted ({error}).") from None


__all__ = [
    "FAIL_REASON",
    "OBJECTIVE_METRICS",
    "RETRY_OF",
    "PRUNERS",
    "SAMPLERS",
    "JOURNAL_URL_PREFIX",
    "STUDY_DB_NAME",
    "STUDY_JOURNAL_NAME",
    "TRAINING_SEARCH_FIELDS",
    "ParamSpec",
    "SearchSettings",
    "default_storage",
    "parse_param_spec",
    "parse_search_settings",
]
