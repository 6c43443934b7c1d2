"""Cross-validation in one command: `--split folds --cross_validate true` trains every fold in turn.

    python finetune/run.py --config configs/smoke_vit_hybrid.yaml --split folds --num_folds 5 --cross_validate true

Fold k is the run the same command with `--fold k --output_dir OUTPUT_DIR/fold_k --cross_validate false` would be
(each fold is parsed from that command line, so its `run_config.yaml` reruns it alone). When a fold's run has
returned, `fold_k/cv_fold_done.json` marks it done. At the end `OUTPUT_DIR/cv_results.json` holds

    {"folds": [{"fold": 0, "test_track_accuracy": ..., "eval_accuracy": ..., ...}, ...],
     "mean": {"test_track_accuracy": ..., ...}, "std": {...}, ...}

(the `eval_*` / `test_*` keys of each fold's `all_results.json`; `std` is the sample standard deviation over folds,
ddof = 1) and `OUTPUT_DIR/cv_results.md` the same as a Markdown table.

`--split_seeds 42 7 13` repeats the folds for each split seed (seed s, fold k under `OUTPUT_DIR/seed_s/fold_k/`):
with few test tracks per fold one seed's folds cannot rank models that differ by less than their sd. Each fold's
entry then carries its `split_seed`, `mean` / `std` are over all folds, and `"seeds"` holds each seed's mean and sd.
`--compare OTHER_RUN` (a finished cross-validation of another model on the same splits: same data, number of folds
and seeds) adds `"compare"`: per fold the paired difference of each test metric (this run minus that one), their
mean and sample sd, and the folds won / tied / lost on test track accuracy.

An ensemble of finished cross-validations on the same splits (each fold's test tracks scored by the weighted mean
of the runs' track probabilities, `test_track_probabilities.json`) is evaluated without training anything:

    python -m ast_dora.cross_validation ensemble runs/cv_musicnn runs/cv_mfcc_baseline --output_dir runs/cv_ensemble \
        [--weights 0.5 0.5] [--compare runs/cv_mfcc_baseline]

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


COMPARED_METRIC = "test_track_accuracy"  # what folds won / tied / lost are counted on


def fold_dir(output_dir: str | os.PathLike, fold: int, split_seed: int | None = None) -> Path:
    """`output_dir/fold_k`, or `output_dir/seed_s/fold_k` for one of several split seeds."""
    root = Path(output_dir) if split_seed is None else Path(output_dir) / f"seed_{split_seed}"
    return root / f"fold_{fold}"


def fold_run(run: RunConfig, fold: int, split_seed: int | None = None) -> RunConfig:
    """The run of one fold: the same command line with `--fold`, `--output_dir` and `--cross_validate` replaced (and
    `--split_seed`, for one of several seeds; `split_seeds` and `compare` then mean nothing)."""
    folder = fold_dir(run.training.output_dir, fold, split_seed)
    seed = [] if split_seed is None else ["--split_seed", str(split_seed)]
    return parse_config(
        [*run.argv, *seed, "--fold", str(fold), "--output_dir", str(folder), "--cross_validate", "false"]
    )


def seeds_of(run: RunConfig) -> list[int | None]:
    """The split seeds to run: `split_seeds`, or [None] for the single `split_seed` (folders without seed_s/)."""
    return list(run.data.split_seeds) if run.data.split_seeds else [None]


def _other_results(path: str | os.PathLike) -> dict[str, Any]:
    results = Path(path) / RESULTS_JSON
    if not results.is_file():
        raise ConfigError(
            f"--compare {str(path)!r} has no {RESULTS_JSON}: give the output_dir of a finished cross-validation of "
            "another model on the same splits (run it first, with the same --num_folds and --split_seeds)."
        )
    return json.loads(results.read_text())


def paired_comparison(
    folds: list[dict[str, float]], other: dict[str, Any], other_path: str
) -> dict[str, Any]:
    """Per fold (matched by split seed and fold) this run's test metrics minus the other run's; their mean, sample
    sd, and folds won / tied / lost on `COMPARED_METRIC`. Refuses folds the other run does not have."""
    theirs = {(fold.get("split_seed"), fold["fold"]): fold for fold in other["folds"]}
    rows = []
    for fold in folds:
        key = (fold.get("split_seed"), fold["fold"])
        if key not in theirs:
            have = ", ".join(f"seed {s} fold {k}" for s, k in sorted(theirs, key=str))
            raise ConfigError(
                f"--compare {other_path!r} has no seed {key[0]} fold {key[1]} (it has {have}): compare runs made "
                "on the same splits (same --num_folds, --split_seed / --split_seeds and data)."
            )
        metrics = [m for m in fold if m.startswith("test_") and m in theirs[key]]
        rows.append({"split_seed": key[0], "fold": key[1], **{m: fold[m] - theirs[key][m] for m in metrics}})
    summary = summarize_folds(rows)
    differences = [row[COMPARED_METRIC] for row in rows if COMPARED_METRIC in row]
    return {
        "other": str(other_path),
        "differences": rows,
        "mean": summary["mean"],
        "std": summary["std"],
        "metric": COMPARED_METRIC,
        "won": sum(d > 1e-9 for d in differences),
        "tied": sum(abs(d) <= 1e-9 for d in differences),
        "lost": sum(d < -1e-9 for d in differences),
    }


def check_cross_validation(run: RunConfig) -> None:
    """Fail before any work on what a cross-validation cannot do."""
    if run.search is not None:
        raise ConfigError(
            "cross_validate runs every fold once with the given settings, and the config has a `search:` section: "
            "drop --cross_validate (a search tunes on one fold), or the `search:` section."
        )
    if "train" not in run.stages:
        raise ConfigError(
            "cross_validate trains one model per fold: drop do_train: false, or --cross_validate."
        )
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
    keys = [
        key for key in folds[0] if key not in ("fold", "split_seed") and all(key in fold for fold in folds)
    ]
    mean, std = {}, {}
    for key in keys:
        values = [fold[key] for fold in folds]
        mean[key] = sum(values) / len(values)
        std[key] = (
            math.sqrt(sum((v - mean[key]) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else 0.0
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
        name = (
            fold["fold"]
            if fold.get("split_seed") is None
            else f"seed {fold['split_seed']} fold {fold['fold']}"
        )
        lines.append(f"| {name} | " + " | ".join(f"{fold[c]:.3f}" for c in columns) + " |")
    for seed, seed_summary in summary.get("seeds", {}).items():
        lines.append(
            f"| seed {seed} mean ± sd | "
            + " | ".join(f"{seed_summary['mean'][c]:.3f} ± {seed_summary['std'][c]:.3f}" for c in columns)
            + " |"
        )
    lines.append(
        "| mean ± sd | "
        + " | ".join(f"**{summary['mean'][c]:.3f} ± {summary['std'][c]:.3f}**" for c in columns)
        + " |"
    )
    text = "\n".join(lines) + "\n\n(sd: sample standard deviation over the folds, ddof = 1.)\n"
    compare = summary.get("compare")
    if compare:
        metric = compare["metric"]
        text += (
            f"\nPaired against `{compare['other']}` ({metric}, this run minus that one, per fold): mean "
            f"{compare['mean'][metric]:+.3f} (sd {compare['std'][metric]:.3f}); folds won / tied / lost: "
            f"{compare['won']} / {compare['tied']} / {compare['lost']}.\n"
        )
    return text


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
    other = (
        _other_results(run.data.compare) if run.data.compare else None
    )  # a bad --compare fails before any work
    setup_logging(run.training)
    output_dir = Path(run.training.output_dir)
    num_folds = run.data.num_folds
    main_process = run.training.process_index == 0
    if main_process:
        write_run_config(run, str(output_dir))  # the whole cross-validation, ready to rerun
    folds = []
    for seed in seeds_of(run):
        for k in range(num_folds):
            current = fold_run(run, k, seed)
            folder = fold_dir(output_dir, k, seed)
            where = f"fold {k + 1}/{num_folds}" + ("" if seed is None else f" of split seed {seed}")
            if _finished(current, folder):
                logger.info("Cross-validation: %s is done (%s); reading its results back", where, folder)
            else:
                logger.info("Cross-validation: %s -> %s", where, folder)
                if (
                    main_process
                ):  # a fold trained afresh (overwrite_output_dir) is not done until it has finished again
                    (folder / DONE_MARKER).unlink(missing_ok=True)
                train(current, prepare(current))
                if main_process:
                    _write(folder / DONE_MARKER, json.dumps({"fold": k, "num_folds": num_folds}) + "\n")
                gc.collect()
            folds.append({"split_seed": current.data.split_seed, "fold": k, **fold_metrics(folder)})
    summary = summarize_folds(folds)
    if run.data.split_seeds:
        summary["split_seeds"] = list(run.data.split_seeds)
        summary["seeds"] = {
            str(seed): {
                key: value
                for key, value in summarize_folds([f for f in folds if f["split_seed"] == seed]).items()
                if key in ("mean", "std", "num_folds")
            }
            for seed in run.data.split_seeds
        }
    if other is not None:
        summary["compare"] = paired_comparison(folds, other, run.data.compare)
    if main_process:
        _write(output_dir / RESULTS_JSON, json.dumps(summary, indent=1) + "\n")
        _write(output_dir / RESULTS_MARKDOWN, markdown_table(summary))
        track = "test_track_accuracy"
        if track in summary["mean"]:
            logger.info(
                "Cross-validation over %d folds: %s %.3f ± %.3f (sample sd)",
                len(folds),
                track,
                summary["mean"][track],
                summary["std"][track],
            )
        if "compare" in summary:
            compare = summary["compare"]
            logger.info(
                "Paired with %s: %+.3f (sd %.3f), folds won / tied / lost %d / %d / %d",
                compare["other"],
                compare["mean"].get(track, float("nan")),
                compare["std"].get(track, float("nan")),
                compare["won"],
                compare["tied"],
                compare["lost"],
            )
        logger.info(
            "Cross-validation results: %s, %s", output_dir / RESULTS_JSON, output_dir / RESULTS_MARKDOWN
        )
    return summary


def _run_fold_folders(run_dir: Path) -> list[tuple[int | None, int, Path]]:
    """(split seed, fold, folder) of each fold of a finished cross-validation, from its cv_results.json."""
    results = _other_results(run_dir)
    several = bool(results.get("split_seeds"))
    return [
        (
            fold.get("split_seed"),
            fold["fold"],
            fold_dir(run_dir, fold["fold"], fold.get("split_seed") if several else None),
        )
        for fold in results["folds"]
    ]


def ensemble_cross_validations(
    runs: list[str], output_dir: str, weights: list[float] | None = None, compare: str | None = None
) -> dict[str, Any]:
    """Score every fold's test tracks by the weighted mean of `runs`' track probabilities; write cv_results.json /
    .md into `output_dir` (with the paired comparison to `compare`, if given) and return the summary."""
    if len(runs) < 2:
        raise ConfigError("An ensemble needs at least two finished cross-validations.")
    weights = [1.0 / len(runs)] * len(runs) if not weights else [float(w) for w in weights]
    if len(weights) != len(runs) or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"--weights needs one non-negative weight per run ({len(runs)}), got {weights}.")
    folds_of = [_run_fold_folders(Path(run)) for run in runs]
    other = _other_results(compare) if compare else None
    folds = []
    for seed, k, _ in folds_of[0]:
        mixed, labels, names = None, None, None
        for run, run_folds, weight in zip(runs, folds_of, weights, strict=True):
            folder = next((f for s, j, f in run_folds if (s, j) == (seed, k)), None)
            if folder is None:
                raise ConfigError(
                    f"{run} has no split seed {seed} fold {k}: ensemble runs made on the same splits."
                )
            path = folder / "test_track_probabilities.json"
            if not path.is_file():
                raise ConfigError(
                    f"{path} is missing: rerun that cross-validation with this version (it writes it)."
                )
            tracks = json.loads(path.read_text())
            if names is None:
                names, labels = tracks["labels"], {t: e["label"] for t, e in tracks["tracks"].items()}
                mixed = {t: [0.0] * len(names) for t in labels}
            if tracks["labels"] != names or set(tracks["tracks"]) != set(labels):
                raise ConfigError(
                    f"{folder} holds other test tracks or labels than {runs[0]}'s fold: not the same splits."
                )
            for track, entry in tracks["tracks"].items():
                mixed[track] = [
                    m + weight * p for m, p in zip(mixed[track], entry["probabilities"], strict=True)
                ]
        correct = [max(range(len(names)), key=mixed[t].__getitem__) == labels[t] for t in labels]
        folds.append({"split_seed": seed, "fold": k, "test_track_accuracy": sum(correct) / len(correct)})
    summary = summarize_folds(folds)
    seeds = sorted({f["split_seed"] for f in folds if f["split_seed"] is not None})
    if len(seeds) > 1:
        summary["split_seeds"] = seeds
        summary["seeds"] = {
            str(s): {
                key: value
                for key, value in summarize_folds([f for f in folds if f["split_seed"] == s]).items()
                if key in ("mean", "std", "num_folds")
            }
            for s in seeds
        }
    summary["ensemble"] = {"runs": [str(r) for r in runs], "weights": weights}
    if other is not None:
        summary["compare"] = paired_comparison(folds, other, compare)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / RESULTS_JSON, json.dumps(summary, indent=1) + "\n")
    _write(out / RESULTS_MARKDOWN, markdown_table(summary))
    return summary


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.cross_validation",
        description="Combine finished cross-validations (training: finetune/run.py).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensemble = commands.add_parser(
        "ensemble", help="An ensemble of finished cross-validations on the same splits."
    )
    ensemble.add_argument("runs", nargs="+", help="output_dir of each finished cross-validation.")
    ensemble.add_argument(
        "--output_dir", required=True, help="Where cv_results.json / .md of the ensemble go."
    )
    ensemble.add_argument(
        "--weights", type=float, nargs="+", default=None, help="One per run (default: equal)."
    )
    ensemble.add_argument(
        "--compare", default=None, help="A finished cross-validation to compare with, fold by fold."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = ensemble_cross_validations(args.runs, args.output_dir, args.weights, args.compare)
    except ConfigError as error:
        print(f"error: {error}")
        return 2
    print(markdown_table(summary))
    return 0


__all__ = [
    "DONE_MARKER",
    "ensemble_cross_validations",
    "RESULTS_JSON",
    "RESULTS_MARKDOWN",
    "check_cross_validation",
    "fold_dir",
    "fold_metrics",
    "fold_run",
    "markdown_table",
    "paired_comparison",
    "seeds_of",
    "run_cross_validation",
    "summarize_folds",
]


if __name__ == "__main__":
    raise SystemExit(main())
