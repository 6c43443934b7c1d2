"""The one training pipeline: config -> datasets -> feature extractor -> model -> `Trainer` -> metrics -> save.

Both models go through every line of it; `model_type` only changes which model and feature extractor
`ast_dora.models.factory` builds. Runs the same under `python` and `accelerate launch`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import datasets
import transformers
import yaml
from transformers import EarlyStoppingCallback, Trainer, set_seed
from transformers.trainer import TRAINER_STATE_NAME

from .config import RunConfig, parse_config
from .data import build_datasets
from .evaluation import make_compute_metrics, write_reports
from .models.factory import (
    build_feature_extractor,
    build_model,
    count_parameters,
    default_window,
    save_trained_model,
)
from .prefix_cache import apply_prefix_cache

logger = logging.getLogger(__name__)

EVAL_SPLITS = {"validation": "eval", "test": "test"}  # split name -> metric prefix in all_results.json


def track_ids_of(dataset) -> list[str] | None:
    if dataset is None or "track_id" not in dataset.column_names:
        return None
    return list(dataset["track_id"])


class GenreTrainer(Trainer):
    """`Trainer` whose metrics know which track each window came from, so evaluation reports
    track-level accuracy next to segment-level accuracy on whichever split it is given."""

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        self.compute_metrics = make_compute_metrics(track_ids_of(dataset))
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        self.compute_metrics = make_compute_metrics(track_ids_of(test_dataset))
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)


def setup_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # This project's own messages (data summary, caches, the smoke stand-in's pretraining) are few and say where
    # minutes go, so the main process shows them unless a log_level was chosen explicitly.
    own_level = logging.INFO if training_args.log_level == "passive" and training_args.should_log else log_level
    for library_logger in (logger, logging.getLogger("ast_dora")):
        library_logger.setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def resolve_checkpoint(training_args) -> str | None:
    """Resume a killed run from its last checkpoint when the same command is run again."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if training_args.overwrite_output_dir or not os.path.isdir(training_args.output_dir):
        return None
    last_checkpoint = last_complete_checkpoint(training_args.output_dir)
    if last_checkpoint is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir true to start afresh).", last_checkpoint)
    return last_checkpoint


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` holding `trainer_state.json`, which the Trainer writes last: a run killed while
    saving leaves a newer, incomplete folder that cannot be resumed from."""
    steps = sorted(
        (int(match.group(1)) for name in os.listdir(output_dir) if (match := re.fullmatch(r"checkpoint-(\d+)", name))),
        reverse=True,
    )
    for step in steps:
        checkpoint = os.path.join(output_dir, f"checkpoint-{step}")
        if os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
            return checkpoint
        logger.warning("Skipping %s: incomplete (the run was stopped while saving it).", checkpoint)
    return None


def build_trainer(
    run: RunConfig, data, feature_extractor, model=None, model_init=None, trainer_class=GenreTrainer,
    data_collator=None,
) -> GenreTrainer:
    callbacks = []
    if run.training.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run.training.early_stopping_patience))
    if model is None and model_init is None:
        model = build_model(run.model, data.labels, run.training)
    return trainer_class(
        model=model,
        model_init=model_init,
        args=run.training,
        train_dataset=data.datasets["train"],
        eval_dataset=data.datasets["validation"],
        processing_class=feature_extractor,
        data_collator=data_collator,  # None: the Trainer pads with the feature extractor
        compute_metrics=make_compute_metrics(track_ids_of(data.datasets["validation"])),
        callbacks=callbacks,
    )


def evaluate_splits(trainer: GenreTrainer, data, output_dir: str) -> dict[str, float]:
    """Predict each evaluation split once: metrics into all_results.json, reports and confusion matrices."""
    all_metrics = {}
    for split, prefix in EVAL_SPLITS.items():
        dataset = data.datasets.get(split)
        if dataset is None or len(dataset) == 0:
            continue
        output = trainer.predict(dataset, metric_key_prefix=prefix)
        trainer.log_metrics(prefix, output.metrics)
        trainer.save_metrics(prefix, output.metrics)
        all_metrics.update(output.metrics)
        if trainer.is_world_process_zero():
            write_reports(output.predictions, output.label_ids, track_ids_of(dataset), data.labels, output_dir, prefix)
    return all_metrics


SECRET_FIELDS = ("token", "hub_token")


def write_run_config(run: RunConfig, output_dir: str) -> None:
    """The resolved config, ready to rerun; tokens are never written (output_dir gets uploaded)."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    config = {key: value for key, value in run.raw.items() if key not in SECRET_FIELDS}
    if run.search:
        config["search"] = run.search
    with open(Path(output_dir) / "run_config.yaml", "w") as f:
        yaml.safe_dump(json.loads(json.dumps(config, default=str)), f, sort_keys=False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    run = parse_config(argv)
    if run.search:
        from .hpo import parse_search_settings

        parse_search_settings(run)  # a bad search: section fails here, before any data is prepared
    training_args = run.training
    setup_logging(training_args)
    logger.info("model_type=%s, output_dir=%s", run.model.model_type, training_args.output_dir)
    set_seed(training_args.seed)
    # With push_to_hub the Trainer creates the repo at init and pushes every checkpoint; instead the finished run is
    # pushed once, at the end, with its model card (ast_dora.hub.push_run), so the Trainer's own pushing is off.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False

    with training_args.main_process_first(desc="feature extractor"):
        feature_extractor = build_feature_extractor(run.model)
    data = build_datasets(
        run.data,
        feature_extractor,
        default_window=default_window(run.model.model_type),
        seed=training_args.seed,
        output_dir=training_args.output_dir,
        main_process_first=training_args.main_process_first,
    )
    if training_args.should_save:
        write_run_config(run, training_args.output_dir)

    if run.search:
        if push_to_hub:
            logger.warning("push_to_hub is ignored by a search: push the run you pick with `python -m ast_dora.hub push`.")
        from .hpo import run_search

        return run_search(run, data, feature_extractor)

    model = build_model(run.model, data.labels, training_args)
    # ast_dora without waveform augmentation: every split becomes the frozen layers' output, computed once.
    data, data_collator = apply_prefix_cache(run, data, model, feature_extractor, training_args)
    trainer = build_trainer(run, data, feature_extractor, model=model, data_collator=data_collator)
    total, trainable = count_parameters(trainer.model)
    logger.info("Parameters: %.2f M total, %.3f M trainable", total / 1e6, trainable / 1e6)

    train_result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args))
    train_metrics = {**train_result.metrics, "model_parameters": total, "trainable_parameters": trainable}
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    trainer.save_state()

    metrics = evaluate_splits(trainer, data, training_args.output_dir)
    if trainer.is_world_process_zero():
        save_trained_model(trainer.accelerator.unwrap_model(trainer.model), feature_extractor, training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if push_to_hub and trainer.is_world_process_zero():
        from .hub import push_run

        push_run(
            training_args.output_dir,
            training_args.hub_model_id or Path(training_args.output_dir).absolute().name,
            merged=training_args.push_merged,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            revision=training_args.hub_revision,
        )
    return metrics


if __name__ == "__main__":
    main()
