"""Segment- and track-level metrics, per-class reports and confusion matrices.

A model sees windows ("segments") of a track; what users care about is the track. Track predictions are
the mean of the track's window probabilities, and, as a second view, the majority vote of its windows.

Every number comes from the project's `evaluate` metric (`ast_dora/genre_classification/genre_classification.py`,
`evaluate.load(METRIC_PATH)`, a local folder: no network), so training's `compute_metrics`, the search objective,
`hub load --evaluate`, the reports and the model cards cannot disagree with what anyone loading the metric gets.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import EvalPrediction

from .genre_classification import METRIC_PATH
from .genre_classification.song_windows import softmax

logger = logging.getLogger(__name__)

# Held-out split -> the prefix its metrics carry in all_results.json (the Trainer's `metric_key_prefix`).
SPLIT_PREFIXES = {"validation": "eval", "test": "test"}


@dataclass(frozen=True)
class Metric:
    display_name: str  # how the model card names it
    hub_type: str  # model-index metric type on the Hub
    hub_args: dict[str, Any] | None = None
    needs_track_ids: bool = False


# Every metric `make_compute_metrics` returns (the metric module's scalar results), all better when higher: the
# search maximises any of them and the model card reports them.
METRICS: dict[str, Metric] = {
    "accuracy": Metric("Segment accuracy", "accuracy"),
    "track_accuracy": Metric("Track accuracy (mean window probability)", "accuracy", needs_track_ids=True),
    "track_accuracy_vote": Metric(
        "Track accuracy (majority vote of windows)", "accuracy", needs_track_ids=True
    ),
    "f1_macro": Metric("Segment macro F1", "f1", {"average": "macro"}),
    "precision_macro": Metric("Segment macro precision", "precision", {"average": "macro"}),
    "recall_macro": Metric("Segment macro recall", "recall", {"average": "macro"}),
    "roc_auc_macro": Metric(
        "Segment macro ROC-AUC (one-vs-rest)", "roc_auc", {"average": "macro", "multi_class": "ovr"}
    ),
}
# What the metric's report keys are called at each level (`track_` prefixed at track level).
REPORT_LEVELS = {"segment": "", "track": "track_"}


@functools.cache
def genre_metric():
    """The project's metric module, loaded once per process the way anyone loads it: `evaluate.load(path)`.

    `keep_in_memory`: results are computed from the arrays given, without cache files on disk.
    """
    import evaluate

    return evaluate.load(METRIC_PATH, keep_in_memory=True)


def compute_genre_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    track_ids: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All results of the metric module: the `METRICS` scalars and the per-class reports (segment, and track
    level when `track_ids` are given)."""
    return genre_metric().compute(
        predictions=np.asarray(probabilities, dtype=np.float64),
        references=np.asarray(labels, dtype=np.int64),
        track_ids=None if track_ids is None else [str(track) for track in track_ids],
        label_names=None if label_names is None else list(label_names),
    )


def make_compute_metrics(track_ids: Sequence[str] | None) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for `Trainer`: segment metrics, plus track metrics when track ids are known.

    `track_ids` is the eval dataset's `track_id` column in dataset order (the Trainer keeps that order).
    """

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        probabilities = softmax(np.asarray(logits))
        labels = np.asarray(prediction.label_ids)
        known_tracks = track_ids if track_ids is not None and len(track_ids) == len(labels) else None
        results = compute_genre_metrics(probabilities, labels, known_tracks)
        return {name: results[name] for name in METRICS if name in results}

    return compute_metrics


def write_reports(
    logits: np.ndarray,
    labels: np.ndarray,
    track_ids: Sequence[str] | None,
    label_names: list[str],
    output_dir: str | os.PathLike,
    split: str,
) -> dict[str, str]:
    """Per-class reports (JSON + text) and confusion-matrix PNGs, at segment and track level."""
    output_dir = Path(output_dir)
    probabilities = softmax(np.asarray(logits))
    results = compute_genre_metrics(probabilities, labels, track_ids, label_names)
    written = {}
    if track_ids is not None and len(track_ids) == len(labels):
        # Each track's mean window probabilities and label: what the track accuracy is computed from, kept so that
        # runs can be combined afterwards (an ensemble of two cross-validations: `ast_dora.cross_validation`).
        tracks: dict[str, dict] = {}
        for track, row, label in zip(track_ids, probabilities, np.asarray(labels).tolist(), strict=True):
            entry = tracks.setdefault(str(track), {"label": label, "sum": np.zeros(len(row)), "windows": 0})
            entry["sum"] += row
            entry["windows"] += 1
        (output_dir / f"{split}_track_probabilities.json").write_text(
            json.dumps(
                {
                    "labels": list(label_names),
                    "tracks": {
                        t: {"label": e["label"], "probabilities": (e["sum"] / e["windows"]).tolist()}
                        for t, e in tracks.items()
                    },
                }
            )
        )
    for level, prefix in REPORT_LEVELS.items():
        if f"{prefix}per_class" not in results:
            continue
        stem = f"{split}_{level}"
        (output_dir / f"classification_report_{stem}.json").write_text(
            json.dumps(results[f"{prefix}per_class"], indent=2)
        )
        (output_dir / f"classification_report_{stem}.txt").write_text(results[f"{prefix}per_class_text"])
        png = output_dir / f"confusion_matrix_{stem}.png"
        matrix = np.asarray(results[f"{prefix}confusion_matrix"], dtype=np.int64)
        plot_confusion_matrix(matrix, label_names, png, title=f"{split} ({level} level)")
        written[level] = str(png)
    return written


def plot_confusion_matrix(
    matrix: np.ndarray, label_names: list[str], path: str | os.PathLike, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    axis.set_yticks(range(len(label_names)), label_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(
            col, row, int(value), ha="center", va="center", color="white" if value > threshold else "black"
        )
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
