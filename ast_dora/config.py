"""Run configuration: dataclass arguments read from a YAML file plus command-line overrides.

A config file is a flat mapping of `ModelArguments`, `DataArguments` and `GenreTrainingArguments` fields
(the `TrainingArguments` users know), plus an optional nested `search:` section for Optuna. The YAML is
turned into command-line arguments and parsed by `HfArgumentParser` together with the real command
line, so a value in the file and the same value typed on the command line are checked the same way,
and the command line wins.

`base: OTHER.yaml` (a path relative to the file that names it, or absolute) makes a file an override of
another one. The base is loaded first (it may have a base of its own; a cycle is an error naming the chain),
then the file's own keys replace the base's, one field at a time. `search:` is one key like the others: a
file's `search:` replaces its base's wholesale (no key-by-key merge, so a file shows its whole search
space), a file without one keeps the base's, and `search: null` drops it. `null` resets any field to its
default (the key is removed from the merged mapping). Unknown keys fail naming the file they are in.
`RunConfig.raw` is the merged mapping, without `base:`, so a config written back is self-contained.

`do_train` / `do_eval` / `do_predict` choose the stages (train; evaluate on validation; predict on test), as
in transformers' example scripts, with one difference: a config that gives none of them runs all three (see
`RunConfig.stages`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool
from transformers.utils import is_torch_bf16_gpu_available

from .data import DataArguments
from .errors import ConfigError
from .hardware import bf16_probe_result
from .models import get_model_spec, model_types

logger = logging.getLogger(__name__)

# Config keys holding credentials (`token`, `hub_token`, ...): never written to run_config.yaml, a card or an upload.
SECRET_KEY_PARTS = ("token", "password", "secret")
# Fields that choose where the data comes from: one given on the command line replaces the config's source.
SOURCE_FIELDS = ("dataset_name", "data_dir", "synthetic")
# The key by which a config file names the file it overrides.
BASE_KEY = "base"
# Pipeline stage -> the TrainingArguments field that asks for it.
STAGE_FIELDS = {"train": "do_train", "eval": "do_eval", "predict": "do_predict"}
# Fields that may differ between a run and the rerun that resumes its checkpoints: they change where things are
# written, what is logged, how fast data is loaded, or what is uploaded, never the weights or metrics. Any other
# difference refuses the resume (`ast_dora.training.check_resumable`). Credentials are never compared.
RESUME_NEUTRAL_FIELDS = frozenset(
    {
        # where the run writes and whether it resumes
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "save_total_limit",
        "save_on_each_node",
        "enable_jit_checkpoint",
        # logging and reporting
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "disable_tqdm",
        "report_to",
        "run_name",
        "project",
        "trackio_space_id",
        "trackio_bucket_id",
        "trackio_static_space_id",
        "skip_memory_metrics",
        # data loading speed and caches
        "dataloader_num_workers",
        "dataloader_prefetch_factor",
        "dataloader_persistent_workers",
        "dataloader_pin_memory",
        "dataloader_multiprocessing_context",
        "preprocessing_num_workers",
        "cache_features",
        "features_cache_dir",
        "cache_dir",
        "torch_empty_cache_steps",
        "ddp_timeout",
        # a cross-validation's comparison with another run (read after training)
        "compare",
        # the Hub upload at the end
        "push_to_hub",
        "push_merged",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
    }
)


def is_secret_key(key: str) -> bool:
    return any(part in key.lower() for part in SECRET_KEY_PARTS)


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config mapping without its credentials."""
    return {key: value for key, value in config.items() if not is_secret_key(key)}


@dataclass
class ModelArguments:
    """Which model to train and how it is built. `model_type` is the one switch between the models."""

    model_type: str = field(
        default=model_types()[0],
        metadata={"help": f"Which model to train: one of {', '.join(model_types())}."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to start from (Hub id or local folder). Empty: the model's default checkpoint "
            "(ast_dora: the AudioSet AST); a model without one (vit_hybrid) trains from scratch."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Override model config fields when building a model, as in transformers' run_mlm.py: "
            "'hidden_size=64,num_hidden_layers=2'."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded checkpoints are stored."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private checkpoints."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code shipped with a checkpoint."})
    make_tiny_checkpoint: bool = field(
        default=False,
        metadata={
            "help": "ast_dora smoke runs: first write a tiny AST, briefly pretrained on synthetic genres, to "
            "model_name_or_path unless it is there (offline stand-in for the AudioSet AST; see "
            "ast_dora/models/tiny_ast.py)."
        },
    )
    # ViT-hybrid fields left empty keep the model config's defaults (the published architecture).
    loss: str | None = field(default=None, metadata={"help": "vit_hybrid: 'focal' or 'cross_entropy'."})
    focal_gamma: float | None = field(default=None, metadata={"help": "vit_hybrid: focal loss gamma (2.5)."})
    hidden_dropout_prob: float | None = field(default=None, metadata={"help": "vit_hybrid: dropout (0.3)."})
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "vit_hybrid: final DropPath rate (0.2)."}
    )
    # AST + DoRA.
    dora_rank: int = field(default=2, metadata={"help": "ast_dora: DoRA rank."})
    dora_alpha: float = field(
        default=4.25, metadata={"help": "ast_dora: DoRA alpha (scaling = alpha / rank)."}
    )
    dora_dropout: float = field(default=0.0, metadata={"help": "ast_dora: dropout on the adapter input."})
    min_layer: int = field(
        default=10,
        metadata={"help": "ast_dora: first encoder layer whose FFN (fc1, fc2) gets DoRA adapters."},
    )
    classifier_hidden_size: int = field(
        default=200, metadata={"help": "ast_dora: hidden size of the MLP head."}
    )
    classifier_dropout: float = field(
        default=0.1, metadata={"help": "ast_dora: dropout before each head linear."}
    )
    prefix_cache: bool = field(
        default=True,
        metadata={
            "help": "ast_dora: compute the hidden states entering layer min_layer once per window (cached, bf16) and "
            "train the top layers and head from them; musicnn (frozen backbone): its penultimate features once per "
            "window, the head trained from them. Off by itself when waveform augmentation is on."
        },
    )

    def __post_init__(self):
        spec = get_model_spec(
            self.model_type
        )  # an unknown model_type fails here, listing the registered ones
        if not self.model_name_or_path and spec.default_checkpoint:
            self.model_name_or_path = spec.default_checkpoint
        if self.make_tiny_checkpoint and (
            spec.tiny_checkpoint is None or self.model_name_or_path == spec.default_checkpoint
        ):
            with_stand_in = [t for t in model_types() if get_model_spec(t).tiny_checkpoint is not None]
            raise ConfigError(
                f"make_tiny_checkpoint writes an offline stand-in checkpoint for smoke runs of {', '.join(with_stand_in)}: "
                "set model_type to one of them and model_name_or_path to a local folder (e.g. data/tiny_ast)."
            )
        if self.loss is not None and self.loss not in ("focal", "cross_entropy"):
            raise ConfigError(f"loss={self.loss!r} is not supported; use 'focal' or 'cross_entropy'.")
        for name in ("dora_rank", "classifier_hidden_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive integer.")
        if self.min_layer < 0:
            raise ConfigError(f"min_layer={self.min_layer} must be >= 0 (the first adapted encoder layer).")
        for name in ("dora_dropout", "classifier_dropout", "hidden_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}={value} must be in [0, 1).")

    def parsed_config_overrides(self) -> dict[str, Any]:
        """`'a=1,b=x,c=[16,32]'` -> `{'a': 1, 'b': 'x', 'c': [16, 32]}` with YAML values, so numbers, booleans and
        lists keep their type (commas inside brackets belong to the value)."""
        if not self.config_overrides:
            return {}
        items, depth, current = [], 0, ""
        for char in self.config_overrides:
            depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
            if char == "," and depth == 0:
                items.append(current)
                current = ""
            else:
                current += char
        items.append(current)
        overrides = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"config_overrides item {item!r} is not of the form 'name=value'.")
            overrides[key.strip()] = yaml.safe_load(value.strip())
        return overrides


@dataclass
class GenreTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the few run-level switches the pipeline adds."""

    # `auto` is the project's own value (TrainingArguments' `bf16` is a bool): resolved to a bool in
    # `__post_init__`, before transformers reads it (`resolve_training_bf16`); `bf16_choice` says how.
    bf16: str = field(
        default=False,
        metadata={
            "help": "bf16 mixed precision: true (forced), false (fp32) or auto (bf16 on a GPU with bf16; on the "
            "CPU where a measured bf16-vs-fp32 matmul probe finds bf16 faster, fp32 elsewhere).",
            "nargs": "?",
            "const": "true",
        },
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement (needs eval)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh instead of resuming from the last checkpoint in output_dir."},
    )
    push_merged: bool = field(
        default=False,
        metadata={"help": "ast_dora with push_to_hub: push the merged model instead of the adapter."},
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "Replace nan/inf step losses in the logs by the running mean. Off by default: checking costs a "
            "device-to-host sync every step on GPU (transformers' default is on)."
        },
    )
    mixup_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Mixup (Zhang et al. 2018) of training batches: each batch is mixed with a shuffled copy of itself, "
            "inputs and one-hot labels alike, with a weight drawn from Beta(alpha, alpha) (0 = off). Every model's "
            "loss takes the mixed (float) labels. Evaluation is never mixed."
        },
    )
    warmup_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of training steps spent warming up. transformers 5 folded it into a float "
            "`warmup_steps`; kept because the AST + DoRA report (sbajamy/Music-Genre-Classification-Using-"
            "Audio-Spectrogram-Transformer on GitHub) and Optuna spaces speak of a ratio."
        },
    )

    def __post_init__(self):
        if not (
            isinstance(self.mixup_alpha, (int, float))
            and math.isfinite(self.mixup_alpha)
            and self.mixup_alpha >= 0
        ):
            raise ConfigError(f"mixup_alpha={self.mixup_alpha} must be >= 0 (0 turns mixup off).")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1).")
        setting = bf16_setting(self.bf16)
        if setting is True and not self.use_cpu and not is_torch_bf16_gpu_available():
            # One config for GPU and CPU: with no bf16 GPU, forced bf16 autocast runs on the CPU.
            self.use_cpu = True
        if not self.use_cpu and not torch.accelerator.is_available():
            # Without it, processes started by `accelerate launch --multi_gpu` / torchrun on a machine with no GPU
            # would each train alone on all the data: the Trainer only sets up gloo DDP when told it runs on CPU.
            self.use_cpu = True
        self.bf16_choice = resolve_training_bf16(setting, self.use_cpu)
        self.bf16 = self.bf16_choice["bf16"]
        super().__post_init__()
        super().__post_init__()

    def get_warmup_steps(self, num_training_steps: int) -> int:
        # Read at scheduler creation, so a ratio set later (an Optuna trial) still counts.
        if self.warmup_ratio is not None:
            return math.ceil(num_training_steps * self.warmup_ratio)
        return super().get_warmup_steps(num_training_steps)


def bf16_setting(value) -> bool | str:
    """A config's `bf16` as given: True, False or "auto" (YAML booleans and the strings true/false/yes/no/1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return string_to_bool(value.strip() if isinstance(value, str) else value)
    except Exception:
        raise ConfigError(f"bf16={value!r}: use true, false or auto.") from None


def resolve_training_bf16(setting: bool | str, use_cpu: bool) -> dict:
    """What training computes in: `{"bf16": bool, "setting": True | False | "auto", "reason": str, "probe": ...}`.

    An explicit true / false forces. `auto`: on a GPU, bf16 where it supports it; on the CPU, bf16 only where the
    measured probe (`hardware.bf16_probe_result`, cached per machine) finds torch's bf16 matmul faster than fp32's:
    a CPU with native bf16 can still run torch's bf16 at half fp32's speed. `probe` holds its figures (CPU only).
    """
    if setting == "auto" and not use_cpu:
        bf16 = bool(is_torch_bf16_gpu_available())
        return {
            "bf16": bf16,
            "setting": setting,
            "probe": None,
            "reason": "auto: the GPU " + ("supports" if bf16 else "does not support") + " bf16",
        }
    if setting is False:
        return {"bf16": False, "setting": False, "probe": None, "reason": "bf16 false (forced)"}
    probe = bf16_probe_result("torch") if use_cpu else None
    if setting is True:
        if probe is not None and not probe["faster"]:
            logger.warning(
                "bf16 is forced on the CPU, where it is measured slower than fp32 (%s): `bf16: auto` "
                "would train in fp32 here.",
                describe_probe(probe),
            )
        return {"bf16": True, "setting": True, "probe": probe, "reason": "bf16 true (forced)"}
    bf16 = bool(probe["faster"])
    return {
        "bf16": bf16,
        "setting": "auto",
        "probe": probe,
        "reason": f"auto: the CPU's bf16 is {'faster' if bf16 else 'not faster'} than fp32 ({describe_probe(probe)})",
    }


def describe_probe(probe: dict) -> str:
    """`bf16 0.21 vs fp32 0.40 TFLOP/s (probe)`, or where it came from when nothing was timed."""
    if "fp32" in probe and "bf16" in probe:
        return f"bf16 {probe['bf16']:.2f} vs fp32 {probe['fp32']:.2f} TFLOP/s, {probe['source']}"
    return probe["source"]  # "no native bf16" or "forced" (AST_DORA_BF16_PROBE)


ARGUMENT_CLASSES = (ModelArguments, DataArguments, GenreTrainingArguments)


@dataclass
class RunConfig:
    model: ModelArguments
    data: DataArguments
    training: GenreTrainingArguments
    search: dict[str, Any] | None
    config_path: str | None
    raw: dict[str, Any]  # the merged flat mapping, for writing ready-to-run configs back out
    # The command line it was parsed from: a search's worker processes run it again (`ast_dora.search.processes`).
    argv: list[str] = field(default_factory=list)

    @property
    def stages(self) -> frozenset[str]:
        """The stages to run, a subset of `{"train", "eval", "predict"}`: train; evaluate on validation; predict
        on test. If none of `do_train` / `do_eval` / `do_predict` is given (in the config, its bases or on the
        command line; `null` counts as not given), all three; if any is given, exactly those given true.

        Read from `raw` (what the user wrote), never from `training.do_*`: `TrainingArguments` sets `do_eval`
        itself whenever `eval_strategy` is not "no". `eval_strategy` still decides evaluation *during* training
        (for `load_best_model_at_end`, early stopping); the "eval" stage is the evaluation after it.
        """
        given = {
            stage: bool(self.raw[name])
            for stage, name in STAGE_FIELDS.items()
            if self.raw.get(name) is not None
        }
        if not given:
            return frozenset(STAGE_FIELDS)
        return frozenset(stage for stage, on in given.items() if on)

    def runs_stage(self, stage: str) -> bool:
        """Whether `stage` ("train", "eval" or "predict") is one of `stages`."""
        if stage not in STAGE_FIELDS:
            raise ValueError(f"Unknown stage {stage!r}; the stages are {tuple(STAGE_FIELDS)}.")
        return stage in self.stages


def known_fields() -> set[str]:
    return {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init}


def load_yaml_config(path: str | os.PathLike, referenced_by: str | None = None) -> dict[str, Any]:
    """One config file as a mapping, as written (its `base:` not followed; see `load_config`)."""
    path = Path(path)
    if not path.is_file():
        if referenced_by is not None:
            raise ConfigError(
                f"Config file {str(path)!r}, named as `base:` by {referenced_by!r}, does not exist."
            )
        raise ConfigError(f"Config file {str(path)!r} does not exist. Pass one of the files in configs/.")
    with open(path) as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"Config file {str(path)!r} must be a mapping of field: value, got {type(config).__name__}."
        )
    return config


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """A config file with its `base:` chain merged in (see the module docstring): a flat mapping of fields, plus
    `search` if any, without `base` and without null values. Each file's keys are checked in that file."""
    return _load_with_bases(Path(path), chain=())


def _load_with_bases(path: Path, chain: tuple[tuple[Path, str], ...]) -> dict[str, Any]:
    # chain: (resolved path, path as named) of the files that led here, the first one first.
    name, resolved = str(path), path.resolve()
    if any(seen == resolved for seen, _ in chain):
        cycle = " -> ".join(repr(shown) for _, shown in (*chain, (resolved, name)))
        raise ConfigError(f"Config files name each other as `base:` in a cycle: {cycle}.")
    config = load_yaml_config(path, referenced_by=chain[-1][1] if chain else None)
    source = repr(name)
    base = config.pop(BASE_KEY, None)
    check_keys(config, source)
    if config.get("search") is not None and not isinstance(config["search"], dict):
        raise ConfigError(f"`search:` in {source} must be a mapping (n_trials, pruner, storage, space).")
    merged: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"`base:` in {source} must be the path of another config file, got {base!r}.")
        merged = _load_with_bases(path.parent / base, (*chain, (resolved, name)))
    merged.update(config)  # the file's own keys win, `search` included (wholesale)
    return {key: value for key, value in merged.items() if value is not None}  # null: the field's default


def check_keys(config: dict[str, Any], source: str) -> None:
    valid = known_fields()
    for key in config:
        if key == "search":
            continue
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"Unknown config key {key!r} in {source}.{hint} Valid keys are the fields of ModelArguments, "
                "DataArguments and TrainingArguments (see `python finetune/run.py --help`), plus `base:` and "
                "`search:` in a file."
            )


def config_to_argv(config: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in config.items():
        if value is None:
            continue  # null keeps the field's default
        argv.append(f"--{key}")
        if isinstance(value, bool):
            argv.append(str(value).lower())
        elif isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))  # TrainingArguments turns JSON strings into its dict fields
        else:
            argv.append(str(value))
    return argv


def cli_flags(argv: list[str]) -> set[str]:
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def given_stage_values(argv: list[str]) -> dict[str, bool]:
    """The `do_train` / `do_eval` / `do_predict` values typed in `argv`, as typed (`--do_eval` alone is true)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for name in STAGE_FIELDS.values():
        parser.add_argument(f"--{name}", type=string_to_bool, nargs="?", const=True, default=None)
    known, _ = parser.parse_known_args(argv)
    return {name: value for name, value in vars(known).items() if value is not None}


def check_stages(run: RunConfig) -> None:
    """Fail on a choice of stages that cannot make sense (see `RunConfig.stages`)."""
    stages = run.stages
    if not stages:
        raise ConfigError(
            "do_train, do_eval and do_predict are all false: nothing to run. Set the stages to run to true "
            "(e.g. do_eval: true to evaluate a trained model_name_or_path), or give none of them to run all three."
        )
    if "train" in stages:
        return
    if run.search is not None:
        raise ConfigError("A search trains its trials: drop do_train: false, or the `search:` section.")
    model = run.model
    spec = get_model_spec(model.model_type)
    if not model.model_name_or_path:
        raise ConfigError(
            f"do_train false evaluates model_name_or_path, and {model.model_type} has none (it trains from scratch): "
            "set model_name_or_path to a trained run's output_dir, or do_train: true."
        )
    if model.model_name_or_path == spec.default_checkpoint or model.make_tiny_checkpoint:
        # The default checkpoint is a pretrained base: its genre head would be untrained.
        raise ConfigError(
            f"do_train false evaluates model_name_or_path, and {model.model_name_or_path!r} is a base checkpoint "
            "without a trained genre head: set model_name_or_path to a trained run's output_dir (and make_tiny_checkpoint "
            "false), or do_train: true."
        )


def parse_config(argv: list[str] | None = None) -> RunConfig:
    """Parse `--config FILE` plus overrides. Raises `ConfigError` naming any unknown key or bad value."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--storage", default=None)  # Optuna storage URL, overrides search.storage
    pre.add_argument(
        "--workers", default=None
    )  # worker processes of a search on this machine, overrides search.workers
    known, rest = pre.parse_known_args(argv)

    config = load_config(known.config) if known.config else {}
    source = repr(known.config) if known.config else "the command line"
    search = config.pop("search", None)
    if search is None and (known.storage or known.workers is not None):
        flag = "--storage" if known.storage else "--workers"
        raise ConfigError(
            f"{flag} applies to an Optuna search, and {source} has no `search:` section: drop {flag}, or use a "
            "search config (e.g. configs/hpo_smoke_vit_hybrid.yaml)."
        )
    if known.storage:
        search = {**(search or {}), "storage": known.storage}
    if known.workers is not None:
        try:
            workers = int(known.workers)
        except ValueError:
            raise ConfigError(
                f"--workers {known.workers!r} must be a whole number of worker processes."
            ) from None
        search = {**(search or {}), "workers": workers}
    given_on_cli = cli_flags(rest)
    check_keys({k: None for k in given_on_cli if k not in ("help", "h")}, "the command line")
    if given_on_cli & set(SOURCE_FIELDS):
        # A data source on the command line replaces the config's source instead of adding a second one.
        for key in SOURCE_FIELDS:
            config.pop(key, None)

    parser = HfArgumentParser(ARGUMENT_CLASSES, exit_on_error=False)
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(
            args=config_to_argv(config) + rest
        )
    except ConfigError:
        raise
    except (ValueError, argparse.ArgumentError) as error:
        raise ConfigError(f"Bad value in {source} or on the command line: {error}") from None

    raw = dict(config)
    for name in given_on_cli & known_fields():
        parsed = next(args for args in (model_args, data_args, training_args) if hasattr(args, name))
        raw[name] = getattr(parsed, name)
    raw.update(given_stage_values(rest))  # as typed: TrainingArguments turns do_eval on by itself
    run = RunConfig(model_args, data_args, training_args, search, known.config, raw, argv)
    check_stages(run)
    check_compatible(run)
    return run


def check_compatible(run: RunConfig) -> None:
    """Refuse, before any data or model is built, settings that cannot train together."""
    spec = get_model_spec(run.model.model_type)
    frozen = run.model.parsed_config_overrides().get(
        "freeze_backbone", True
    )  # musicnn: a trained backbone has no cache
    cache_on = spec.prefix_cache and run.model.prefix_cache and not run.data.augmentation_enabled and frozen
    if run.training.mixup_alpha > 0 and cache_on:
        raise ConfigError(
            f"mixup_alpha={run.training.mixup_alpha} mixes input_values, and {run.model.model_type} with prefix_cache "
            "true trains from cached frozen-layer outputs (there are no input_values to mix): pass --prefix_cache "
            "false to use mixup (every epoch then runs the frozen layers), or --mixup_alpha 0."
        )


class RunConfigParser(argparse.ArgumentParser):
    """The command line of `finetune/run.py` (and `python -m ast_dora.cli`) as an argparse parser: `parse_args(argv)`
    is `parse_config(argv)`, so it reads the `--config` file (with its `base:` chain) and validates the overrides
    exactly as a run does, and returns the `RunConfig` without running anything (the docs check uses it)."""

    def parse_args(self, args=None, namespace=None) -> RunConfig:  # type: ignore[override]
        return parse_config(args)


def build_parser() -> RunConfigParser:
    """The entry point's parser, by the project's CLI convention (every CLI module has a `build_parser()`)."""
    parser = RunConfigParser(
        prog="finetune/run.py",
        add_help=False,
        description="Train, cross-validate or search from one YAML config plus overrides.",
    )
    parser.add_argument("--config", help="The YAML config (its `base:` files are read first).")
    parser.add_argument("--storage", help="Optuna storage URL of a search (overrides search.storage).")
    parser.add_argument(
        "--workers", help="Worker processes of a search on this machine (overrides search.workers)."
    )
    return parser
