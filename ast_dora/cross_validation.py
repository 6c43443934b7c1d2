"""Cross-validation in one command: `--split folds --cross_validate true` trains every fold in turn.

    python finetune/run.py --config configs/smoke_vit_hybrid.yaml --split folds --num_folds 5 --cross_validate true

Fold k is the run the same command with `--fold k --output_dir OUTPUT_DIR/fold_k --cross_validate false` would be
(each fold is parsed from that command line, so its `run_config.yaml` reruns it alone). When a fold's run has
returned, `fold_k/cv_fold_done.json` marks it done. At the end `OUTPUT_DIR/cv_results.json` holds

    {"folds": [{"fold": 0, "test_track_accuracy": ..., "eval_accuracy": ..., ...}, ...],
     "mean": {"test_track_accuracy": ..., ...}, "std": {...}, ...}

(the `eval_*` / `test_*` keys of each fold's `all_results.json`; `std` is the sample standard deviation over folds,
ddof = 1) and `OUTPUT_DIR/cv_results.md` the same as a Markdown table.

A rerun of a killed cross-validation reads the finished folds back (after checking that their `run_config.yaml`
matches this config), resumes the interrupted fold from its last checkpoint (`ast_dora.trainer.resolve_checkpoint`)
and trains the rest. `--overwrite_output_dir true` starts every fold afresh.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, parse_config
from .evaluation import METRICS, SPLIT_PREFIXES
from .training import RUN_CONFIG_NAME, config_differences, prepare, setup_logging, train, write_run_config

logger = logging.getLogger(__name__)

DONE_MARKER = "cv_fold_done.json"
RESULTS_JSON = "cv_results.json"
RESULTS_MARKDOWN = "cv_results.md"
# all_results.json keys that describe the run's speed, not the model: left out of the summary.
_SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def fold_dir(output_dir: str | os.PathLike, fold: int) -> Path:
    return Path(output_dir) / f"fold_{fold}"


def fold_run(run: RunConfig, fold: int) -> RunConfig:
    """The run of one fold: the same command line with `--fold`, `--output_dir` and `--cross_validate` replaced."""
    folder = fold_dir(run.training.output_dir, fold)
    return parse_config([*run.argv, "--fold", str(fold), "--output_dir", str(folder), "--cross_validate", "false"])


def check_cross_validation(run: RunConfig) -> None:
    """Fail before any work on what a cross-validation cannot do."""
    if run.search is not None:
        raise ConfigError(
            "cross_validate runs every fold once with the given settings, and the config has a `search:` section: "
            "drop --cross_validate (a search tunes on one fold), or the `search:` section."
        )
    if "train" not in run.stages:
        raise ConfigError("cross_validate trains one model per fold: drop do_train: false, or --cross_validate.")
    if run.training.push_to_hub:
        raise ConfigError(
            "cross_validate trains one model per fold and push_to_hub would upload each of them: drop push_to_hub "
            "and push the fold you pick afterwards with `python -m ast_dora.hub push OUTPUT_DIR/fold_K`."
        )


def fold_metrics(folder: str | os.PathLike) -> dict[str, float]:
    """The `eval_*` / `test_*` numbers of a finished fold's `all_results.json` (speed figures left out)."""
    path = Path(folder) / "all_results.json"
    results = json.loads(path.read_text())
    return {
        key: float(value)
        for key, value in results.items()
        if key.startswith(tuple(f"{prefix}_" for prefix in SPLIT_PREFIXES.values()))
        and not key.endswith(_SPEED_SUFFIXES)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def summarize_folds(folds: list[dict[str, float]]) -> dict[str, Any]:
    """`{"folds", "mean", "std"}`: mean and sample standard deviation (ddof = 1) of each key all folds have."""
    keys = [key for key in folds[0] if key != "fold" and all(key in fold for fold in folds)]
    mean, std = {}, {}
    for key in keys:
        values = [fold[key] for fold in folds]
        mean[key] = sum(values) / len(values)
        std[key] = (
            math.sqrt(sum((v - mean[key]) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        )
    return {"folds": folds, "mean": mean, "std": std, "std_ddof": 1, "num_folds": len(folds)}


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per fold and a `mean ± sd` row, over the test metrics (`METRICS`) the folds have."""
    columns = [f"test_{name}" for name in METRICS if f"test_{name}" in summary["mean"]]
    lines = [
        "| fold | " + " | ".join(f"`{c}`" for c in columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for fold in summary["folds"]:
        lines.append(f"| {fold['fold']} | " + " | ".join(f"{fold[c]:.3f}" for c in columns) + " |")
    lines.append(
        "| mean ± sd | " + " | ".join(f"**{summary['mean'][c]:.3f} ± {summary['std'][c]:.3f}**" for c in columns) + " |"
    )
    return "\n".join(lines) + "\n\n(sd: sample standard deviation over the folds, ddof = 1.)\n"


def _finished(run: RunConfig, folder: Path) -> bool:
    """Whether fold `folder` is done and may be read back; refuses a fold finished with other settings."""
    if run.training.overwrite_output_dir or not (folder / DONE_MARKER).is_file():
        return False
    previous = parse_config(["--config", str(folder / RUN_CONFIG_NAME)])
    differences = config_differences(run, previous)
    if differences:
        raise ConfigError(
            f"{folder} is a finished fold of a cross-validation whose {RUN_CONFIG_NAME} differs from this config in "
            f"{', '.join(differences)}: its results would be mixed with this one's. Pass --overwrite_output_dir true "
            "to run every fold afresh, choose another output_dir, or restore the previous values."
        )
    return True


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_cross_validation(run: RunConfig) -> dict[str, Any]:
    """Train and evaluate every fold, then write `cv_results.json` and `cv_results.md` into `output_dir`."""
    check_cross_validation(run)
    setup_logging(run.training)
    output_dir = Path(run.training.output_dir)
    num_folds = run.data.num_folds
    main_process = run.training.process_index == 0
    if main_process:
        write_run_config(run, str(output_dir))  # the whole cross-validation, ready to rerun
    folds = []
    for k in range(num_folds):
        current = fold_run(run, k)
        folder = fold_dir(output_dir, k)
        if _finished(current, folder):
            logger.info("Cross-validation: fold %d/%d is done (%s); reading its results back", k + 1, num_folds, folder)
        else:
            logger.info("Cross-validation: fold %d/%d -> %s", k + 1, num_folds, folder)
            if main_process:  # a fold trained afresh (overwrite_output_dir) is not done until it has finished again
                (folder / DONE_MARKER).unlink(missing_ok=True)
            train(current, prepare(current))
            if main_process:
                _write(folder / DONE_MARKER, json.dumps({"fold": k, "num_folds": num_folds}) + "\n")
            gc.collect()
        folds.append({"fold": k, **fold_metrics(folder)})
    summary = summarize_folds(folds)
    if main_process:
        _write(output_dir / RESULTS_JSON, json.dumps(summary, indent=1) + "\n")
        _write(output_dir / RESULTS_MARKDOWN, markdown_table(summary))
        track = "test_track_accuracy"
        if track in summary["mean"]:
            logger.info("Cross-validation over %d folds: %s %.3f ± %.3f (sample sd)", num_folds, track,
                        summary["mean"][track], summary["std"][track])
        logger.info("Cross-validation results: %s, %s", output_dir / RESULTS_JSON, output_dir / RESULTS_MARKDOWN)
    return summary


__all__ = [
    "DONE_MARKER",
    "RESULTS_JSON",
    "RESULTS_MARKDOWN",
    "check_cross_validation",
    "fold_dir",
    "fold_metrics",
    "fold_run",
    "markdown_table",
    "run_cross_validation",
    "summarize_folds",
]
