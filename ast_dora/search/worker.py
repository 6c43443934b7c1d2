"""One worker of a (possibly shared) study: the storage, the search's `Trainer`, and the loop that runs trials
until the study holds `n_trials` finished ones."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import RunConfig
from ..models.factory import build_model
from ..trainer import GenreTrainer, build_trainer
from .settings import PRUNERS, SAMPLERS, SearchSettings, _build_named

logger = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# How often a worker whose remaining trials are all running elsewhere looks at the study again.
WAIT_POLL_SECONDS = 2.0
STORAGE_ATTEMPTS = 5


class _QuietStudyReuse(logging.Filter):
    # Every trial reopens the study; Optuna announces that each time ("Using an existing study ...").
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using an existing study")


class TrialSkipped(Exception):
    """A trial created after the study's `n_trials` were already finished or running (a race between workers)."""


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



__all__ = ["FINISHED_STATES", "SearchTrainer", "SearchWorker", "TrialSkipped", "open_storage"]
