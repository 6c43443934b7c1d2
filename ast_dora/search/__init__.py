"""Optuna search over training and model fields (`ast_dora.search`), run through the training pipeline's own `Trainer`.

A `search:` section in a config turns `python finetune/run.py --config FILE` from a training run into a
search; everything else in the file (data, model, `TrainingArguments`) is shared with training:

    search:
      n_trials: 35
      pruner: median                  # median | hyperband | none, or {name: median, n_startup_trials: 5, ...}
      sampler: {name: tpe, seed: 42}  # tpe | random, optional kwargs; leave the seed out with several workers
      storage: null                   # RDB URL; default sqlite:///<output_dir>/study.db (--storage URL wins)
      workers: 1                      # worker processes on this machine (--workers N); >1: study.journal
      heartbeat_interval: 20          # database storages: seconds between a running trial's heartbeats
      grace_period: 60                # ... and without one before another worker takes the trial for dead
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
run elsewhere, and stops when `n_trials` have finished.

Faults cost one trial, not the study. An exception inside a trial (out of memory, a combination the model
refuses) and a training loss that turns NaN or infinite (checked every optimizer step) fail that trial, with
the error in its `fail_reason` user attribute and the log, and the worker goes on with a new trial (it gives up
only after `max(3, n_trials)` failures in a row, where something fails every trial). A trial left running by a
killed worker is marked failed, at once on the same machine (its process is gone) and after `grace_period`
seconds without a heartbeat from elsewhere (Optuna's heartbeat, database storages), and its parameters are
queued to run once more (the new trial's `retry_of` names the dead one).

`search.workers: N` starts N worker processes on this machine (`ast_dora.search.processes`), one GPU each or
a share of the CPU cores; without `--storage` their study is Optuna's journal file `output_dir/study.journal`.

Outputs in `output_dir`: `best_config.yaml` (a complete config for `finetune/run.py` with the best values,
training into `output_dir/best`), `trials.csv`, `optuna_history.png`, `optuna_importances.png` and, with
the default storage, the study itself in `study.db` (one worker) or `study.journal` (several).
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState

from ..config import ConfigError, RunConfig, parse_config
from ..training import check_resumable, run_training
from .outputs import *  # noqa: F403 (the package's API: its modules' public names)
from .outputs import write_search_outputs
from .processes import *  # noqa: F403
from .processes import run_local_workers, worker_index
from .settings import *  # noqa: F403
from .settings import SearchSettings, parse_search_settings
from .worker import *  # noqa: F403
from .worker import FINISHED_STATES, SearchWorker, open_storage, open_study

logger = logging.getLogger(__name__)


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
            "multi-process `accelerate launch`, with search.workers: N (--workers N) for N workers on this "
            "machine, and add machines on one study with --storage URL."
        )
    settings = parse_search_settings(run, validation_has_track_ids="track_id" in validation.column_names)
    if run.training.log_level == "passive":
        logger.setLevel(logging.INFO)  # report the search's progress as Optuna reports its trials
    if run.training.eval_strategy == "no":
        logger.warning(
            "eval_strategy is 'no': each trial is scored once at its end and nothing can be pruned."
        )
    if settings.workers > 1 and settings.storage.startswith("sqlite:///"):
        logger.warning(
            "%d workers on one SQLite study: SQLite locks under concurrent writers. Leave --storage out to use "
            "the journal file in output_dir, or give a database server's URL.",
            settings.workers,
        )

    if settings.workers > 1:
        return run_local_search(run, settings)

    worker = SearchWorker(run, data, feature_extractor, settings)
    already_complete = sum(worker.counts()[s] for s in FINISHED_STATES) >= settings.n_trials
    worker.run_trials()
    if worker_index() is not None:
        # One of several workers started by run_local_workers: the command that started it writes the outputs.
        return summarise(worker.counts())
    # With several workers only the one that finished the study's last trial (or a rerun of a finished
    # study) retrains, so the best model is trained once.
    retrain = worker.ran_last_trial() or already_complete
    return finish_search(run, settings, worker.study, retrain)


def run_local_search(run: RunConfig, settings: SearchSettings) -> dict[str, Any]:
    """`search.workers` worker processes on this machine, then the outputs, written once."""
    # The study exists before the workers open it, so that they do not race to create it.
    study = open_study(open_storage(settings), settings)
    counts = summarise(study_counts(study))
    if counts["trials_complete"] + counts["trials_pruned"] >= settings.n_trials:
        logger.info(
            "Study %r already holds its %d finished trials: no workers to start.",
            settings.study_name,
            settings.n_trials,
        )
        exit_codes = []
    else:
        exit_codes = run_local_workers(run, settings)
        counts = summarise(study_counts(study))
    failed = {index: code for index, code in enumerate(exit_codes) if code != 0}
    if failed:
        message = ", ".join(f"worker {index + 1} exited with code {code}" for index, code in failed.items())
        if counts["trials_complete"] + counts["trials_pruned"] < settings.n_trials:
            raise RuntimeError(
                f"{message} (its error is in the log above) and the study is not complete: fix the cause and "
                "rerun the command to continue the study."
            )
        logger.warning("%s; the other workers completed the study.", message)
    return finish_search(run, settings, study, retrain=True)


def study_counts(study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {state: sum(t.state == state for t in trials) for state in TrialState}


def summarise(counts: dict[TrialState, int]) -> dict[str, Any]:
    return {
        "trials_complete": counts[TrialState.COMPLETE],
        "trials_pruned": counts[TrialState.PRUNED],
        "trials_failed": counts[TrialState.FAIL],
    }


def finish_search(run: RunConfig, settings: SearchSettings, study, retrain: bool) -> dict[str, Any]:
    """The outputs of a study that holds its `n_trials`, and the retraining of its best config if asked."""
    counts = study_counts(study)
    metric_key = f"eval_{settings.metric}"
    if counts[TrialState.COMPLETE] == 0:
        raise RuntimeError(
            f"No trial of study {settings.study_name!r} completed ({counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed): widen the space or relax the pruner, then rerun."
        )
    paths = write_search_outputs(study, run, settings)
    best = study.best_trial
    logger.info(
        "Best trial %d: %s=%.4f with %s. %d complete, %d pruned, %d failed. Best config: %s",
        best.number,
        metric_key,
        best.value,
        best.params,
        counts[TrialState.COMPLETE],
        counts[TrialState.PRUNED],
        counts[TrialState.FAIL],
        paths["best_config"],
    )
    metrics: dict[str, Any] = {
        "best_trial": best.number,
        f"best_{metric_key}": best.value,
        **summarise(counts),
    }
    if settings.retrain_best and retrain:
        logger.info("Retraining with the best values and evaluating once on test: %s", paths["best_config"])
        best_run = parse_config(["--config", str(paths["best_config"])])
        try:
            check_resumable(best_run)
        except ConfigError:
            # output_dir/best holds the checkpoints of an earlier best config (the study has grown since).
            logger.info(
                "The best config changed since %s was trained: retraining it afresh.",
                best_run.training.output_dir,
            )
            best_run = parse_config(["--config", str(paths["best_config"]), "--overwrite_output_dir", "true"])
        metrics.update(run_training(best_run))
    return metrics
