"""One worker of a (possibly shared) study: the storage, the search's `Trainer`, and the loop that runs trials
until the study holds `n_trials` finished ones."""

from __future__ import annotations

import dataclasses
import gc
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
import torch
from optuna.trial import FrozenTrial, TrialState

from ..config import RunConfig
from ..models.factory import build_model
from ..trainer import GenreTrainer, build_trainer
from .processes import worker_index
from .settings import FAIL_REASON, PRUNERS, RETRY_OF, SAMPLERS, SearchSettings, _build_named

logger = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# How often a worker whose remaining trials are all running elsewhere looks at the study again.
WAIT_POLL_SECONDS = 2.0
STORAGE_ATTEMPTS = 5
# A trial whose worker died is run again this many times at most: parameters that kill their worker every time
# (the kernel's out-of-memory killer sends SIGKILL) would otherwise be retried for ever.
DEAD_TRIAL_RETRIES = 1
# A worker whose trials fail this many times in a row (at least; or n_trials times, if more) stops: something
# fails every trial (a config error, a full disk), and an endless loop of failing trials would hide it.
MIN_FAILURES_IN_A_ROW = 3


class _QuietStudyReuse(logging.Filter):
    # Every trial reopens the study; Optuna announces that each time ("Using an existing study ...").
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using an existing study")


class TrialSkipped(Exception):
    """A trial created after the study's `n_trials` were already finished or running (a race between workers)."""


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite: the trial diverged, and training on would waste its time."""


def retry_dead_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the parameters of a trial whose worker died (a `heartbeat_stale_trial_callback`), as Optuna's
    `RetryHeartbeatStaleTrialCallback` does, with the system attributes it reads (`failed_trial`,
    `retry_history`); the queued trial's only user attribute is `retry_of`, the dead trial's number, so that
    trials.csv shows the re-run instead of the dead trial's own attributes."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > DEAD_TRIAL_RETRIES:
        logger.warning(
            "Trial %d's worker died, as did those of trials %s with the same parameters: not run again.",
            trial.number,
            history[:-1],
        )
        return
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={RETRY_OF: trial.number},
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )
    logger.warning(
        "Trial %d's worker died mid-trial: its parameters %s are queued to run again.",
        trial.number,
        trial.params,
    )


def open_storage(settings: SearchSettings) -> optuna.storages.BaseStorage:
    """The study's storage. A database gets heartbeats, so that another worker marks the trials of a worker that
    died failed and runs their parameters again; the journal file (workers of one machine) needs none, since a
    dead worker's process id tells (`SearchWorker.fail_dead_local_trials`)."""
    from sqlalchemy.exc import SQLAlchemyError

    if settings.journal_file is not None:
        settings.journal_file.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(settings.journal_file)))
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
                    heartbeat_stale_trial_callback=retry_dead_trial,
                )
        except SQLAlchemyError:
            # Workers started together on an empty database all create Optuna's tables; the losers fail
            # with "already exists" and find the tables there on the next try.
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(1.0 + random.random())


def open_study(storage: optuna.storages.BaseStorage, settings: SearchSettings) -> optuna.Study:
    """The study, created on first use."""
    study = optuna.create_study(
        storage=storage, study_name=settings.study_name, direction="maximize", load_if_exists=True
    )
    # The metric's name becomes the value column of trials.csv and the legend of the plots.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([f"eval_{settings.metric}"])
    return study


class SearchTrainer(GenreTrainer):
    """The Trainer of a search's trials.

    Reports the objective to the pruner by evaluation count (1, 2, ...) instead of optimizer step, so
    trials with other batch sizes or gradient accumulation are compared evaluation for evaluation
    (the Trainer's own step numbers would rarely coincide, and the median pruner compares equal steps).

    Fails a trial whose training loss becomes NaN or infinite at the optimizer step it happens, and records
    why any trial failed in its `fail_reason` user attribute (trials.csv shows it)."""

    evaluations_in_trial = 0

    def _report_to_hp_search(self, trial, step, metrics):
        self.evaluations_in_trial += 1
        super()._report_to_hp_search(trial, self.evaluations_in_trial, metrics)

    def _maybe_log_save_evaluate(self, tr_loss, *args, **kwargs):
        # Called after every optimizer step with the loss summed since the last log: one NaN or inf step loss
        # makes the sum non-finite. On a GPU the check waits for the step to finish (one sync per step).
        if not torch.isfinite(tr_loss).all():
            raise NonFiniteLoss(
                f"the training loss became {tr_loss.sum().item()} by optimizer step {self.state.global_step} "
                f"(epoch {self.state.epoch:.2f}): the trial diverged."
            )
        super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        except (optuna.TrialPruned, TrialSkipped):
            raise
        except Exception as error:
            record_failure(trial, error)
            raise

    def evaluate(self, *args, **kwargs):
        # Reached outside `train` too: a trial without evaluations during training is scored afterwards.
        try:
            return super().evaluate(*args, **kwargs)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            record_failure(getattr(self, "_trial", None), error)
            raise


def record_failure(trial, error: BaseException) -> None:
    """Keep the first error of a failing trial in its `fail_reason` user attribute."""
    if not isinstance(trial, optuna.Trial) or FAIL_REASON in trial.user_attrs:
        return
    trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}"[:1000])


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
        self.study = open_study(self.storage, settings)
        self.pruner = _build_named(settings.pruner, "pruner", PRUNERS)
        sampler = dict(settings.sampler)
        if sampler.get("seed") is not None and worker_index():
            # Workers started together with one seed would draw the same first trials.
            sampler["seed"] += worker_index()
        self.sampler = _build_named(sampler, "sampler", SAMPLERS)
        self.failures_in_a_row = 0
        self.labels = data.labels
        self.class_weights = data.class_weights
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
        return build_model(model_args, self.labels, self.run.training, class_weights=self.class_weights)

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
        if RETRY_OF in trial.user_attrs:
            logger.info(
                "Trial %d runs the parameters of trial %d again (its worker died).",
                trial.number,
                trial.user_attrs[RETRY_OF],
            )
        self.trials_run.append(trial.number)
        self.best_in_trial = -math.inf
        self.trainer.evaluations_in_trial = 0
        for callback in self.trainer.callback_handler.callbacks:
            if hasattr(callback, "early_stopping_patience_counter"):
                callback.early_stopping_patience_counter = 0  # otherwise carried over from the previous trial

    def fail_dead_local_trials(self) -> None:
        """Mark RUNNING trials of killed processes on this machine as failed at once, and queue their parameters
        again; trials of other machines are failed by Optuna's heartbeat check once they are `grace_period`
        seconds silent (database storages only), which queues them the same way."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get("worker") or {}
            if worker.get("host") != self.worker_id["host"] or worker.get("pid") == os.getpid():
                continue
            if _process_alive(worker.get("pid")):
                continue
            try:
                self.storage.set_trial_user_attr(
                    trial._trial_id, FAIL_REASON, f"its worker (process {worker['pid']}) died mid-trial"
                )
                if not self.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
            logger.warning(
                "Trial %d was left running by process %s, which is gone: marked failed.",
                trial.number,
                worker["pid"],
            )
            retry_dead_trial(self.study, self.storage.get_trial(trial._trial_id))
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
        """One trial. An exception inside it (out of memory, a NaN loss, a combination the model refuses) fails
        that trial only: Optuna logs it and the trial keeps it as `fail_reason`."""
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
                catch=(Exception,),
            )
        except ValueError:
            # After its optimize call the integration reads `study.best_trial`, which raises while no trial of
            # the study has completed yet (the first ones pruned, failed or skipped); the trial itself is recorded.
            if self.current_trial is None or self.counts()[TrialState.COMPLETE] > 0:
                raise
            state = self.study._storage.get_trial(self.current_trial._trial_id).state
            if state not in (TrialState.PRUNED, TrialState.FAIL):
                raise
        finally:
            if self.current_trial is not None and self.run.training.should_save:
                self.remove_trial_dir(self.current_trial.number)
        if self.current_trial is not None:
            self.after_trial(self.study._storage.get_trial(self.current_trial._trial_id))

    def after_trial(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL or "skipped" in trial.user_attrs:
            self.failures_in_a_row = 0
            return
        # The integration frees the model and optimizer only after a trial that returned; after an out-of-memory
        # error the next trial needs that memory.
        self.trainer.model_wrapped = self.trainer.model = self.trainer.optimizer = (
            self.trainer.lr_scheduler
        ) = None
        self.trainer.accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.failures_in_a_row += 1
        limit = max(MIN_FAILURES_IN_A_ROW, self.settings.n_trials)
        reason = trial.user_attrs.get(FAIL_REASON, "see the log above")
        logger.warning("Trial %d failed (%s); the search goes on.", trial.number, reason)
        if self.failures_in_a_row >= limit:
            raise RuntimeError(
                f"{self.failures_in_a_row} trials in a row failed in this worker, the last ({trial.number}) with "
                f"{reason}. Something fails every trial: fix the config or the search space (the errors are in "
                "the log and in trials.csv's user_attrs_fail_reason), then rerun; finished trials are kept."
            )

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


__all__ = [
    "FAIL_REASON",
    "FINISHED_STATES",
    "RETRY_OF",
    "NonFiniteLoss",
    "SearchTrainer",
    "SearchWorker",
    "TrialSkipped",
    "open_storage",
    "open_study",
    "record_failure",
    "retry_dead_trial",
]
