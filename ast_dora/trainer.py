"""The `Trainer` as the project uses it: the track-aware `GenreTrainer`, its construction from a run config,
evaluation of the held-out splits, and the checkpoints a killed run resumes from."""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile

import torch
from safetensors import SafetensorError, safe_open
from transformers import EarlyStoppingCallback, Trainer
from transformers.trainer import TRAINER_STATE_NAME

from .config import RunConfig
from .errors import ConfigError
from .evaluation import SPLIT_PREFIXES, make_compute_metrics, write_reports
from .models import base_model_of
from .models.factory import build_model
from .workers import start_method

logger = logging.getLogger(__name__)


def track_ids_of(dataset) -> list[str] | None:
    if dataset is None or "track_id" not in dataset.column_names:
        return None
    return list(dataset["track_id"])


def mixup_batch(inputs: dict, alpha: float, num_labels: int) -> dict:
    """Mixup: `input_values` and one-hot `labels` of a batch mixed with a shuffled copy of the batch, with one weight
    `lam ~ Beta(alpha, alpha)` for the batch (Zhang et al. 2018). Labels come back as float `(batch, num_labels)`
    target distributions, which every registered model's loss takes."""
    values, labels = inputs["input_values"], inputs["labels"]
    # Drawn from torch's global generator, which the Trainer seeds: the same seed gives the same mixes.
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    perm = torch.randperm(values.shape[0], device=values.device)
    targets = torch.nn.functional.one_hot(labels.long(), num_labels).to(torch.float32)
    mixed = dict(inputs)
    mixed["input_values"] = values * lam + values[perm] * (1.0 - lam)
    mixed["labels"] = targets * lam + targets[perm] * (1.0 - lam)
    return mixed


class GenreTrainer(Trainer):
    """`Trainer` whose metrics know which track each window came from, so evaluation reports
    track-level accuracy next to segment-level accuracy on whichever split it is given; with `mixup_alpha` > 0 it
    mixes training batches (`mixup_batch`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha = getattr(self.args, "mixup_alpha", 0.0)
        if alpha > 0 and model.training and "labels" in inputs:
            if "input_values" not in inputs:
                raise ConfigError(
                    "mixup_alpha mixes input_values, and these batches hold none (AST-DoRA's frozen-prefix cache "
                    "feeds hidden states): pass --prefix_cache false to use mixup."
                )
            inputs = mixup_batch(inputs, alpha, base_model_of(model).config.num_labels)
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def _get_dataloader(self, *args, **kwargs):
        # DataLoader workers start by fork only where no native thread pool (OpenVINO, ONNX Runtime) runs in this
        # process (`workers.py`); an explicit `dataloader_multiprocessing_context` is kept.
        if self.args.dataloader_num_workers and self.args.dataloader_multiprocessing_context is None:
            method = start_method()
            if method != "fork":
                self.args.dataloader_multiprocessing_context = method
        return super()._get_dataloader(*args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        self.compute_metrics = make_compute_metrics(track_ids_of(dataset))
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        self.compute_metrics = make_compute_metrics(track_ids_of(test_dataset))
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)


def build_trainer(
    run: RunConfig,
    data,
    feature_extractor,
    model=None,
    model_init=None,
    trainer_class=GenreTrainer,
    data_collator=None,
) -> GenreTrainer:
    callbacks = []
    if run.training.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run.training.early_stopping_patience))
    if model is None and model_init is None:
        model = build_model(run.model, data.labels, run.training, class_weights=data.class_weights)
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


def evaluate_splits(
    trainer: GenreTrainer, data, output_dir: str, splits=tuple(SPLIT_PREFIXES)
) -> dict[str, float]:
    """Predict each of `splits` once: metrics into all_results.json, reports and confusion matrices."""
    all_metrics = {}
    for split in splits:
        prefix = SPLIT_PREFIXES[split]
        dataset = data.datasets.get(split)
        if dataset is None or len(dataset) == 0:
            continue
        output = trainer.predict(dataset, metric_key_prefix=prefix)
        trainer.log_metrics(prefix, output.metrics)
        trainer.save_metrics(prefix, output.metrics)
        all_metrics.update(output.metrics)
        if trainer.is_world_process_zero():
            write_reports(
                output.predictions, output.label_ids, track_ids_of(dataset), data.labels, output_dir, prefix
            )
    return all_metrics


def resolve_checkpoint(training_args) -> str | None:
    """Resume a killed run from its last readable checkpoint when the same command is run again."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if training_args.overwrite_output_dir or not os.path.isdir(training_args.output_dir):
        return None
    last_checkpoint = last_complete_checkpoint(training_args.output_dir)
    if last_checkpoint is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir true to start afresh).", last_checkpoint)
    elif checkpoint_folders(training_args.output_dir):
        logger.warning(
            "No checkpoint in %s can be resumed from (see the warnings above): starting afresh; the run's new "
            "checkpoints replace the unreadable ones.",
            training_args.output_dir,
        )
    return last_checkpoint


def checkpoint_folders(output_dir: str) -> list[str]:
    """The `checkpoint-N` folders in `output_dir`, newest (highest N) first."""
    steps = sorted(
        (
            int(match.group(1))
            for name in os.listdir(output_dir)
            if (match := re.fullmatch(r"checkpoint-(\d+)", name))
        ),
        reverse=True,
    )
    return [os.path.join(output_dir, f"checkpoint-{step}") for step in steps]


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` that can be resumed from, warning about each newer one skipped: a run killed
    while saving leaves a folder without `trainer_state.json` (the Trainer writes it last), and a full disk or
    a copy cut short leaves files that are truncated."""
    for checkpoint in checkpoint_folders(output_dir):
        if not os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
            logger.warning("Skipping %s: incomplete (the run was stopped while saving it).", checkpoint)
            continue
        problem = unreadable_checkpoint_file(checkpoint)
        if problem is None:
            return checkpoint
        logger.warning("Skipping %s: %s", checkpoint, problem)
    return None


def unreadable_checkpoint_file(checkpoint: str) -> str | None:
    """What makes `checkpoint` unusable (a missing, truncated or unparsable file), or None when it looks whole.

    Cheap and safe: JSON files are parsed, safetensors files have their header checked against the file's
    length (what `safe_open` does), and the Trainer's `.pt` / `.pth` / `.bin` files are checked as the zip
    archives `torch.save` writes, without unpickling anything (the central directory sits at the end of the
    file, so a truncated one cannot be opened)."""
    names = sorted(os.listdir(checkpoint))
    if not any(name.endswith(".safetensors") for name in names):
        return "it holds no model weights (*.safetensors)."
    for name in names:
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            continue
        try:
            if name.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            elif name.endswith(".safetensors"):
                with safe_open(path, framework="pt"):
                    pass
            elif name.endswith((".pt", ".pth", ".bin")):
                with zipfile.ZipFile(path) as archive:
                    archive.infolist()
        except (OSError, ValueError, zipfile.BadZipFile, SafetensorError) as error:
            return f"{name} cannot be read ({type(error).__name__}: {error})."
    return None


__all__ = [
    "GenreTrainer",
    "build_trainer",
    "checkpoint_folders",
    "evaluate_splits",
    "last_complete_checkpoint",
    "mixup_batch",
    "resolve_checkpoint",
    "track_ids_of",
    "unreadable_checkpoint_file",
]
