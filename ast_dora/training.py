"""The one training pipeline: config -> datasets -> feature extractor -> model -> `Trainer` -> metrics -> save.

Every registered model goes through every line of it; `model_type` only changes what the registry builds
(`ast_dora.models`). Runs the same under `python` and `accelerate launch`. `prepare` is shared with the search
(`ast_dora.search`); the entry point (`ast_dora.cli`) chooses between the two.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import transformers
import yaml
from transformers import set_seed

from .config import (
    RESUME_NEUTRAL_FIELDS,
    ConfigError,
    RunConfig,
    build_parser,
    is_secret_key,
    parse_config,
    public_config,
)
from .data import GenreData, build_datasets
from .models import get_model_spec
from .models.factory import (
    build_feature_extractor,
    build_model,
    count_parameters,
    model_windows,
    save_trained_model,
    set_windows,
)
from .prefix_cache import apply_prefix_cache
from .trainer import build_trainer, checkpoint_folders, evaluate_splits, resolve_checkpoint

logger = logging.getLogger(__name__)

RUN_CONFIG_NAME = "run_config.yaml"


def setup_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # This project's own messages (data summary, caches, the smoke stand-in's pretraining) are few and say where
    # minutes go, so the main process shows them unless a log_level was chosen explicitly.
    own_level = (
        logging.INFO if training_args.log_level == "passive" and training_args.should_log else log_level
    )
    for library_logger in (logger, logging.getLogger(__package__)):
        library_logger.setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def write_run_config(run: RunConfig, output_dir: str) -> None:
    """The resolved config, ready to rerun; credentials are never written (output_dir gets uploaded)."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    config = public_config(run.raw)
    if run.search:
        config["search"] = run.search
    with open(Path(output_dir) / RUN_CONFIG_NAME, "w") as f:
        yaml.safe_dump(json.loads(json.dumps(config, default=str)), f, sort_keys=False)


def check_resumable(run: RunConfig) -> None:
    """Refuse to resume checkpoints in `output_dir` that a run with other settings wrote.

    A rerun into an `output_dir` with checkpoints resumes the newest one (`resolve_checkpoint`); if the config
    changed meanwhile in anything but `RESUME_NEUTRAL_FIELDS`, the result would be neither run. Effective values
    are compared (the previous `run_config.yaml` parsed like the new config), so a default written out or left
    out is no difference. An explicit `resume_from_checkpoint` is a deliberate choice and is not checked."""
    training_args = run.training
    output_dir = Path(training_args.output_dir)
    previous_path = output_dir / RUN_CONFIG_NAME
    if (
        "train" not in run.stages
        or training_args.overwrite_output_dir
        or training_args.resume_from_checkpoint
        or not output_dir.is_dir()
        or not previous_path.is_file()
    ):
        return
    checkpoints = checkpoint_folders(str(output_dir))
    if not checkpoints:
        return
    how = (
        "pass --overwrite_output_dir true to start afresh, choose another output_dir, or restore the previous "
        f"values; to continue these checkpoints with the new values on purpose, pass --resume_from_checkpoint "
        f"{checkpoints[0]}"
    )
    try:
        previous = parse_config(["--config", str(previous_path)])
    except ConfigError as error:
        raise ConfigError(
            f"{output_dir} holds checkpoints, and the config of the run that wrote them ({previous_path}) cannot be "
            f"read to check that this run continues it ({error}): {how}."
        ) from None
    differences = config_differences(run, previous)
    if differences:
        raise ConfigError(
            f"{output_dir} holds checkpoints of a run whose {RUN_CONFIG_NAME} differs from this config in "
            f"{', '.join(differences)}: resuming would mix the two. To proceed, {how}."
        )


def config_differences(run: RunConfig, previous: RunConfig) -> list[str]:
    """`name (value there, value now)` for each field, outside `RESUME_NEUTRAL_FIELDS` and credentials, in which
    `run` differs from `previous` (effective values: a default written out or left out is no difference)."""
    differences = []
    for now, before in zip(
        (run.model, run.data, run.training), (previous.model, previous.data, previous.training), strict=True
    ):
        for field in dataclasses.fields(type(now)):
            name = field.name
            if not field.init or name in RESUME_NEUTRAL_FIELDS or is_secret_key(name):
                continue
            if getattr(now, name) != getattr(before, name):
                differences.append(f"{name} ({getattr(before, name)!r} there, {getattr(now, name)!r} now)")
    return differences


@dataclass
class PreparedRun:
    """What training and a search share: the feature extractor and the window datasets."""

    feature_extractor: object
    data: GenreData
    push_to_hub: bool  # asked for; the Trainer's own per-checkpoint pushing is switched off


def prepare(run: RunConfig) -> PreparedRun:
    """Logging, seed, feature extractor, datasets and `run_config.yaml`: every step before the model."""
    training_args = run.training
    setup_logging(training_args)
    logger.info("model_type=%s, output_dir=%s", run.model.model_type, training_args.output_dir)
    check_resumable(run)  # before the data, which may take minutes to prepare
    set_seed(training_args.seed)
    # With push_to_hub the Trainer creates the repo at init and pushes every checkpoint; instead the finished run is
    # pushed once, at the end, with its model card (ast_dora.hub.push_run), so the Trainer's own pushing is off.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False

    spec = get_model_spec(run.model.model_type)
    with training_args.main_process_first(desc="feature extractor"):
        feature_extractor = build_feature_extractor(run.model)
    data = build_datasets(
        run.data,
        feature_extractor,
        # A model trained further keeps the windows it was trained on unless the config changes them.
        default_window=model_windows(feature_extractor, spec),
        seed=training_args.seed,
        output_dir=training_args.output_dir,
        main_process_first=training_args.main_process_first,
    )
    if training_args.should_save:
        write_run_config(run, training_args.output_dir)
    return PreparedRun(feature_extractor, data, push_to_hub)


def train(run: RunConfig, prepared: PreparedRun) -> dict[str, float]:
    """Train (`do_train`), evaluate on validation (`do_eval`) and test (`do_predict`), save and push."""
    training_args, feature_extractor = run.training, prepared.feature_extractor
    stages = run.stages  # do_train / do_eval / do_predict; all three when none is given
    model = build_model(
        run.model, prepared.data.labels, training_args, class_weights=prepared.data.class_weights
    )
    data, data_collator = prepared.data, None
    if get_model_spec(run.model.model_type).prefix_cache:
        # Without waveform augmentation every split becomes the frozen layers' output, computed once.
        data, data_collator = apply_prefix_cache(run, data, model, feature_extractor, training_args)
    trainer = build_trainer(run, data, feature_extractor, model=model, data_collator=data_collator)
    total, trainable = count_parameters(trainer.model)
    logger.info("Parameters: %.2f M total, %.3f M trainable", total / 1e6, trainable / 1e6)

    metrics: dict[str, float] = {}
    if "train" in stages:
        train_result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args))
        train_metrics = {**train_result.metrics, "model_parameters": total, "trainable_parameters": trainable}
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()

    splits = [split for split, stage in (("validation", "eval"), ("test", "predict")) if stage in stages]
    metrics.update(evaluate_splits(trainer, data, training_args.output_dir, splits=splits))
    if "train" not in stages:
        return metrics
    if trainer.is_world_process_zero():
        set_windows(feature_extractor, data.window_seconds, data.hop_seconds)
        save_trained_model(
            trainer.accelerator.unwrap_model(trainer.model), feature_extractor, training_args.output_dir
        )
    trainer.accelerator.wait_for_everyone()
    if prepared.push_to_hub and trainer.is_world_process_zero():
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


def run_training(run: RunConfig) -> dict[str, float]:
    return train(run, prepare(run))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train from `--config FILE` plus overrides; a config with a `search:` section goes to `ast_dora.cli`."""
    return run_training(parse_config(argv))


__all__ = [
    "RUN_CONFIG_NAME",
    "PreparedRun",
    "build_parser",
    "check_resumable",
    "config_differences",
    "main",
    "prepare",
    "run_training",
    "setup_logging",
    "train",
    "write_run_config",
]
