"""Optuna search over training and model fields, run through the training pipeline's own `Trainer`.

A `search:` section in a config turns `python finetune/run.py --config FILE` from a training run into a
search; everything else in the file (data, model, `TrainingArguments`) is shared with training:

    search:
      n_trials: 35
      pruner: median                  # median | hyperband | none, or {name: median, n_startup_trials: 5, ...}
      sampler: {name: tpe, seed: 42}  # tpe | random, optional kwargs; leave the seed out with several workers
      storage: null                   # RDB URL; default sqlite:///<output_dir>/study.db (--storage URL wins)
      study_name: null                # default: the name of output_dir's folder
      metric: track_accuracy          # validation metric to maximise (default track_accuracy, else accuracy)
      retrain_best: false             # afterwards train best_config.yaml once and evaluate it on test
      space:
        learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        per_device_train_batch_size: [2, 4]                 # a list is a categorical choice
        dora_rank: {type: int, low: 2, high: 16, log: true}

Each trial is one `Trainer.hyperparameter_search(backend="optuna", direction="maximize", n_trials=1)` call
on a persistent study (`load_if_exists=True`): `hp_space` samples the `TrainingArguments` fields and
`model_init(trial)` the `ModelArguments` fields, building the trial's model from
`dataclasses.replace(run.model, **sampled)`. The Trainer reports the validation metric to the pruner after
every evaluation. One call per trial, rather than one call for all trials, is what makes the study
resumable and shareable: the integration hands `n_trials` straight to `study.optimize` and takes no
callbacks, so it can neither stop at a study-wide count nor count trials other processes have finished.
This module keeps that count between calls (`SearchWorker.run_trials`): a worker starts a trial while
finished (complete or pruned) plus running trials are fewer than `n_trials`, waits while the missing ones
run elsewhere, and stops when `n_trials` have finished. A trial left running by a killed worker is marked
failed, at once on the same machine (its process is gone) and after `grace_period` seconds without a
heartbeat from elsewhere, and its place is taken by a new trial.

Outputs in `output_dir`: `best_config.yaml` (a complete config for `finetune/run.py` with the best values,
training into `output_dir/best`), `trials.csv`, `optuna_history.png`, `optuna_importances.png` and, with
the default storage, the study itself in `study.db`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import math
import os
import random
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from .config import ConfigError, RunConfig
from .models.factory import build_model
from .training import GenreTrainer, build_trainer
from .training import main as train

logger = logging.getLogger(__name__)

# Fields a space may search, with the type each value must have. Training fields go through `hp_space`
# onto `TrainingArguments`; model fields are sampled in `model_init(trial)`.
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
MODEL_SEARCH_FIELDS: dict[str, dict[str, type]] = {
    "ast_dora": {
        "dora_rank": int,
        "dora_alpha": float,
        "dora_dropout": float,
        "min_layer": int,
        "classifier_hidden_size": int,
        "classifier_dropout": float,
    },
    "vit_hybrid": {"hidden_dropout_prob": float, "drop_path_rate": float, "focal_gamma": float, "loss": str},
}
# What `evaluation.make_compute_metrics` returns; all are better when higher (the study maximises).
OBJECTIVE_METRICS = (
    "track_accuracy",
    "track_accuracy_vote",
    "accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc_macro",
)
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
)
SPEC_KEYS = ("type", "low", "high", "log", "step", "choices")
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
BEST_CONFIG_NAME = "best_config.yaml"
BEST_MODEL_SUBFOLDER = "best"
STUDY_DB_NAME = "study.db"
# How often a worker whose remaining trials are all running elsewhere looks at the study again.
WAIT_POLL_SECONDS = 2.0
STORAGE_ATTEMPTS = 5


class _QuietStudyReuse(logging.Filter):
    # Every trial reopens the study; Optuna announces that each time ("Using an existing study ...").
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using an existing study")


class TrialSkipped(Exception):
    """A trial created after the study's `n_trials` were already finished or running (a race between workers)."""


# --------------------------------------------------------------------------------------------------------
# the `search:` section
# --------------------------------------------------------------------------------------------------------


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
    model_fields = MODEL_SEARCH_FIELDS[model_type]
    training_space, model_space = {}, {}
    for name, spec in space.items():
        if name in TRAINING_SEARCH_FIELDS:
            training_space[name] = parse_param_spec(name, spec, TRAINING_SEARCH_FIELDS[name])
            _check_training_values(run, training_space[name])
        elif name in model_fields:
            model_space[name] = parse_param_spec(name, spec, model_fields[name])
            _check_model_values(run, model_space[name])
        else:
            other = [t for t, fields in MODEL_SEARCH_FIELDS.items() if name in fields]
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
    if metric.startswith("track_") and not validation_has_track_ids:
        raise ConfigError(
            f"search.metric={metric!r} needs track ids in the validation split; use 'accuracy'."
        )

    output_dir = Path(run.training.output_dir)
    storage = search.get("storage") or f"sqlite:///{(output_dir / STUDY_DB_NAME).resolve()}"
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
    )


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


def open_storage(settings: SearchSettings) -> optuna.storages.RDBStorage:
    """The study's database, with heartbeats so that trials of a worker that died are marked failed."""
    from sqlalchemy.exc import SQLAlchemyError

    if settings.storage.startswith("sqlite:///"):
        Path(settings.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    settings.storage,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.grace_period,
                )
        except SQLAlchemyError:
            # Workers started together on an empty database all create Optuna's tables; the losers fail
            # with "already exists" and find the tables there on the next try.
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(1.0 + random.random())


# --------------------------------------------------------------------------------------------------------
# one worker of a (possibly shared) study
# --------------------------------------------------------------------------------------------------------


class SearchTrainer(GenreTrainer):
    """Reports the objective to the pruner by evaluation count (1, 2, ...) instead of optimizer step, so
    trials with other batch sizes or gradient accumulation are compared evaluation for evaluation
    (the Trainer's own step numbers would rarely coincide, and the median pruner compares equal steps)."""

    evaluations_in_trial = 0

    def _report_to_hp_search(self, trial, step, metrics):
        self.evaluations_in_trial += 1
        super()._report_to_hp_search(trial, self.evaluations_in_trial, metrics)


class SearchWorker:
    """Runs trials of one study until it holds `n_trials` finished (complete or pruned) trials.

    Several workers, in this process's machine or others, may share the study through `--storage`.
    """

    def __init__(self, run: RunConfig, data, feature_extractor, settings: SearchSettings):
        self.run = run
        self.settings = settings
        self.storage = open_storage(settings)
        self.metric_key = f"eval_{settings.metric}"
        self.worker_id = {"host": socket.gethostname(), "pid": os.getpid()}
        study_logger = logging.getLogger("optuna.study.study")
        if not any(isinstance(f, _QuietStudyReuse) for f in study_logger.filters):
            study_logger.addFilter(_QuietStudyReuse())
        self.study = optuna.create_study(
            storage=self.storage, study_name=settings.study_name, direction="maximize", load_if_exists=True
        )
        # The metric's name becomes the value column of trials.csv and the legend of the plots.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names([self.metric_key])
        self.pruner = _build_named(settings.pruner, "pruner", PRUNERS)
        self.sampler = _build_named(settings.sampler, "sampler", SAMPLERS)
        self.labels = data.labels
        self.current_trial: optuna.Trial | None = None
        self.best_in_trial = -math.inf
        self.trials_run: list[int] = []
        # Trainer.__init__ already calls model_init() once (no trial): everything it reads is set above.
        self.trainer = build_trainer(
            run, data, feature_extractor, model_init=self.model_init, trainer_class=SearchTrainer
        )

    # --- the three hooks `Trainer.hyperparameter_search` calls ---

    def model_init(self, trial: optuna.Trial | None = None):
        if trial is not None:
            self.start_trial(trial)
        sampled = (
            {name: spec.suggest(trial) for name, spec in self.settings.model_space.items()} if trial else {}
        )
        model_args = dataclasses.replace(self.run.model, **sampled)
        return build_model(model_args, self.labels, self.run.training)

    def hp_space(self, trial: optuna.Trial) -> dict[str, Any]:
        return {name: spec.suggest(trial) for name, spec in self.settings.training_space.items()}

    def compute_objective(self, metrics: dict[str, float]) -> float:
        if self.metric_key not in metrics:
            available = ", ".join(sorted(k for k in metrics if k.startswith("eval_")))
            raise KeyError(
                f"search.metric {self.metric_key!r} is not among the evaluation metrics ({available})."
            )
        value = float(metrics[self.metric_key])
        if not self.run.training.load_best_model_at_end:
            return value
        # The model kept at the end is the best evaluation's, so the trial is worth its best evaluation.
        self.best_in_trial = max(self.best_in_trial, value)
        return self.best_in_trial

    # --- bookkeeping ---

    def start_trial(self, trial: optuna.Trial) -> None:
        """First thing in every trial (`Trainer.train` calls `model_init` before `hp_space`)."""
        self.current_trial = trial
        ahead = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED_STATES))
            if t.number < trial.number
        ]
        if len(ahead) >= self.settings.n_trials:
            # Another worker took the last place between our count and this trial's creation.
            trial.set_user_attr("skipped", "the study's n_trials were already finished or running")
            raise TrialSkipped(
                f"trial {trial.number} not run: {len(ahead)} of the study's {self.settings.n_trials} trials were "
                "already finished or running in other workers."
            )
        trial.set_user_attr("worker", self.worker_id)
        self.trials_run.append(trial.number)
        self.best_in_trial = -math.inf
        self.trainer.evaluations_in_trial = 0
        for callback in self.trainer.callback_handler.callbacks:
            if hasattr(callback, "early_stopping_patience_counter"):
                callback.early_stopping_patience_counter = 0  # otherwise carried over from the previous trial

    def fail_dead_local_trials(self) -> None:
        """Mark RUNNING trials of killed processes on this machine as failed at once; trials of other
        machines are failed by Optuna's heartbeat check once they are `grace_period` seconds silent."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get("worker") or {}
            if worker.get("host") != self.worker_id["host"] or worker.get("pid") == os.getpid():
                continue
            if _process_alive(worker.get("pid")):
                continue
            try:
                self.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            logger.warning(
                "Trial %d was left running by process %s, which is gone: marked failed.",
                trial.number,
                worker["pid"],
            )
            self.remove_trial_dir(trial.number)

    def counts(self) -> dict[TrialState, int]:
        trials = self.study.get_trials(deepcopy=False)
        return {state: sum(t.state == state for t in trials) for state in TrialState}

    def remove_trial_dir(self, number: int) -> None:
        # Trial checkpoints serve only `load_best_model_at_end` inside the trial; best_config.yaml retrains.
        shutil.rmtree(Path(self.run.training.output_dir) / f"run-{number}", ignore_errors=True)

    # --- the loop ---

    def run_trials(self) -> None:
        n_trials = self.settings.n_trials
        waiting_logged = False
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            self.fail_dead_local_trials()
            counts = self.counts()
            finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            running = counts[TrialState.RUNNING]  # enqueued (WAITING) trials are popped by the next trial
            if finished >= n_trials:
                logger.info(
                    "Study %r has %d finished trials (%d wanted): done.",
                    self.settings.study_name,
                    finished,
                    n_trials,
                )
                return
            if finished + running >= n_trials:
                if not waiting_logged:
                    logger.info(
                        "%d trials are running in other workers and complete the study: waiting for them.",
                        running,
                    )
                    waiting_logged = True
                time.sleep(WAIT_POLL_SECONDS)
                continue
            waiting_logged = False
            logger.info(
                "Study %r: %d of %d trials finished; starting one more.",
                self.settings.study_name,
                finished,
                n_trials,
            )
            self.run_one_trial()

    def run_one_trial(self) -> None:
        self.current_trial = None
        try:
            self.trainer.hyperparameter_search(
                hp_space=self.hp_space,
                compute_objective=self.compute_objective,
                n_trials=1,
                direction="maximize",
                backend="optuna",
                storage=self.storage,
                study_name=self.settings.study_name,
                load_if_exists=True,
                pruner=self.pruner,
                sampler=self.sampler,
                catch=(TrialSkipped,),
            )
        except ValueError:
            # After its optimize call the integration reads `study.best_trial`, which raises while no trial of
            # the study has completed yet (the first ones pruned or skipped); the trial itself is recorded.
            if self.current_trial is None or self.counts()[TrialState.COMPLETE] > 0:
                raise
            state = self.study._storage.get_trial(self.current_trial._trial_id).state
            if state != TrialState.PRUNED and "skipped" not in self.current_trial.user_attrs:
                raise
        finally:
            if self.current_trial is not None and self.run.training.should_save:
                self.remove_trial_dir(self.current_trial.number)

    def ran_last_trial(self) -> bool:
        finished = [
            t for t in self.study.get_trials(deepcopy=False, states=FINISHED_STATES) if t.datetime_complete
        ]
        return bool(finished) and max(finished, key=lambda t: t.datetime_complete).number in self.trials_run


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat check
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------------------


def _yaml_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _yaml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v) for v in value]
    return value


def best_config(run: RunConfig, best_trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The run's own flat config (command-line overrides included, `search:` left out) with the best trial's
    values, training into `output_dir/best`: ready for `finetune/run.py --config`."""
    config = {key: _yaml_value(value) for key, value in run.raw.items()}
    config.update({key: _yaml_value(value) for key, value in best_trial.params.items()})
    config["output_dir"] = os.path.join(str(run.training.output_dir), BEST_MODEL_SUBFOLDER)
    return config


def _describe_storage(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    # Several workers may share output_dir: each writes a whole file and renames it into place.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes the file private; give it a normal file's mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_search_outputs(study: optuna.Study, run: RunConfig, settings: SearchSettings) -> dict[str, Path]:
    output_dir = Path(run.training.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    best_trial = study.best_trial
    paths = {
        "best_config": output_dir / BEST_CONFIG_NAME,
        "trials": output_dir / "trials.csv",
        "history": output_dir / "optuna_history.png",
        "importances": output_dir / "optuna_importances.png",
    }

    header = (
        f"# Best trial {best_trial.number} of Optuna study {settings.study_name!r} in {_describe_storage(settings.storage)}:\n"
        f"# validation {settings.metric} = {best_trial.value:.4f}. Searched: {', '.join(best_trial.params)}.\n"
        f"# python finetune/run.py --config {paths['best_config']}\n"
    )
    body = yaml.safe_dump(best_config(run, best_trial), sort_keys=False)
    _atomic_write(paths["best_config"], lambda p: Path(p).write_text(header + body))
    _atomic_write(paths["trials"], lambda p: study.trials_dataframe().to_csv(p, index=False))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    # Optuna's matplotlib backend is marked experimental.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_optimization_history(study, target_name=f"validation {settings.metric}")
        _atomic_write(paths["history"], lambda p: axes.figure.savefig(p, format="png", bbox_inches="tight"))
        plt.close(axes.figure)
        try:
            axes = plot_param_importances(study)
        except (ValueError, RuntimeError) as error:
            # Importances need at least two completed trials; say so in the picture instead.
            logger.warning("Parameter importances not computed: %s", error)
            figure, axes = plt.subplots(figsize=(6, 2))
            axes.axis("off")
            axes.text(
                0.5,
                0.5,
                f"Hyperparameter importances not available yet:\n{error}",
                ha="center",
                va="center",
                wrap=True,
            )
        _atomic_write(
            paths["importances"], lambda p: axes.figure.savefig(p, format="png", bbox_inches="tight")
        )
        plt.close(axes.figure)
    if settings.storage.startswith("sqlite:///"):
        paths["study"] = Path(settings.storage.removeprefix("sqlite:///"))
    return paths


# --------------------------------------------------------------------------------------------------------
# entry point (called by `training.main` when the config has a `search:` section)
# --------------------------------------------------------------------------------------------------------


def run_search(run: RunConfig, data, feature_extractor) -> dict[str, Any]:
    validation = data.datasets.get("validation")
    if validation is None or len(validation) == 0:
        raise ConfigError(
            "A search scores trials on the validation split, and this data has none: pick a split "
            "protocol with a validation split (e.g. split: stratified)."
        )
    if run.training.world_size > 1:
        raise ConfigError(
            "A search runs one process per worker: start it with `python finetune/run.py` rather than a "
            "multi-process `accelerate launch`, and add workers on one study with --storage URL."
        )
    settings = parse_search_settings(run, validation_has_track_ids="track_id" in validation.column_names)
    if run.training.log_level == "passive":
        logger.setLevel(logging.INFO)  # report the search's progress as Optuna reports its trials
    if run.training.eval_strategy == "no":
        logger.warning(
            "eval_strategy is 'no': each trial is scored once at its end and nothing can be pruned."
        )

    worker = SearchWorker(run, data, feature_extractor, settings)
    already_complete = sum(worker.counts()[s] for s in FINISHED_STATES) >= settings.n_trials
    worker.run_trials()

    study = worker.study
    counts = worker.counts()
    if counts[TrialState.COMPLETE] == 0:
        raise RuntimeError(
            f"No trial of study {settings.study_name!r} completed ({counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed): widen the space or relax the pruner, then rerun."
        )
    paths = write_search_outputs(study, run, settings)
    best = study.best_trial
    logger.info(
        "Best trial %d: %s=%.4f with %s. %d complete, %d pruned. Best config: %s",
        best.number,
        worker.metric_key,
        best.value,
        best.params,
        counts[TrialState.COMPLETE],
        counts[TrialState.PRUNED],
        paths["best_config"],
    )
    metrics: dict[str, Any] = {
        "best_trial": best.number,
        f"best_{worker.metric_key}": best.value,
        "trials_complete": counts[TrialState.COMPLETE],
        "trials_pruned": counts[TrialState.PRUNED],
    }
    # With several workers only the one that finished the study's last trial (or a rerun of a finished
    # study) retrains, so the best model is trained once.
    if settings.retrain_best and (worker.ran_last_trial() or already_complete):
        logger.info("Retraining with the best values and evaluating once on test: %s", paths["best_config"])
        metrics.update(train(["--config", str(paths["best_config"])]))
    return metrics
