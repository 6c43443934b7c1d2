"""Optuna search over training and model fields (`ast_dora.search`), run through the training pipeline's own `Trainer`.

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

import logging
from typing import Any

from optuna.trial import TrialState

from ..config import ConfigError, RunConfig, parse_config
from ..training import run_training
from .outputs import *  # noqa: F403 (the package's API: its modules' public names)
from .outputs import write_search_outputs
from .settings import *  # noqa: F403
from .settings import parse_search_settings
from .worker import *  # noqa: F403
from .worker import FINISHED_STATES, SearchWorker

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
        metrics.update(run_training(parse_config(["--config", str(paths["best_config"])])))
    return metrics
