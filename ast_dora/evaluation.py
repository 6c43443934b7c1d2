"""Segment- and track-level metrics, per-class reports and confusion matrices.

A model sees windows ("segments") of a track; what users care about is the track. Track predictions are
the mean of the track's window probabilities, and, as a second view, the majority vote of its windows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import EvalPrediction

logger = logging.getLogger(__name__)

# Held-out split -> the prefix its metrics carry in all_results.json (the Trainer's `metric_key_prefix`).
SPLIT_PREFIXES = {"validation": "eval", "test": "test"}


@dataclass(frozen=True)
class Metric:
    display_name: str  # how the model card names it
    hub_type: str  # model-index metric type on the Hub
    hub_args: dict[str, Any] | None = None
    needs_track_ids: bool = False


# Every metric `make_compute_metrics` returns, all better when higher: the search maximises any of them and the
# model card reports them.
METRICS: dict[str, Metric] = {
    "accuracy": Metric("Segment accuracy", "accuracy"),
    "track_accuracy": Metric("Track accuracy (mean window probability)", "accuracy", needs_track_ids=True),
    "track_accuracy_vote": Metric("Track accuracy (majority vote of windows)", "accuracy", needs_track_ids=True),
    "f1_macro": Metric("Segment macro F1", "f1", {"average": "macro"}),
    "precision_macro": Metric("Segment macro precision", "precision", {"average": "macro"}),
    "recall_macro": Metric("Segment macro recall", "recall", {"average": "macro"}),
    "roc_auc_macro": Metric("Segment macro ROC-AUC (one-vs-rest)", "roc_auc", {"average": "macro", "multi_class": "ovr"}),
}


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def aggregate_tracks(
    probabilities: np.ndarray, labels: np.ndarray, track_ids: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Per track: mean window probability, majority-vote class (ties broken by mean probability), label."""
    track_ids = np.asarray(track_ids)
    unique, inverse = np.unique(track_ids, return_inverse=True)
    num_classes = probabilities.shape[1]
    sums = np.zeros((len(unique), num_classes))
    np.add.at(sums, inverse, probabilities)
    counts = np.bincount(inverse, minlength=len(unique))[:, None]
    mean_probabilities = sums / counts
    votes = np.zeros((len(unique), num_classes))
    np.add.at(votes, (inverse, probabilities.argmax(axis=1)), 1)
    vote = np.argmax(votes + 1e-6 * mean_probabilities, axis=1)
    track_labels = np.zeros(len(unique), dtype=np.int64)
    track_labels[inverse] = labels
    return unique.tolist(), mean_probabilities, vote, track_labels


# scikit-learn is imported where metrics are computed, not with this module: song analysis (`inference.py`, which
# needs only `softmax` and `aggregate_tracks`) and the GPU check run where it may not be installed.


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    predictions = probabilities.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "roc_auc_macro": roc_auc_macro(probabilities, labels),
    }


def roc_auc_macro(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest macro ROC-AUC over the classes present in `labels` (NaN if fewer than two)."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    scores = []
    for cls in present:
        scores.append(roc_auc_score(labels == cls, probabilities[:, cls]))
    return float(np.mean(scores))


def make_compute_metrics(track_ids: Sequence[str] | None) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for `Trainer`: segment metrics, plus track metrics when track ids are known.

    `track_ids` is the eval dataset's `track_id` column in dataset order (the Trainer keeps that order).
    """

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        from sklearn.metrics import accuracy_score

        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        probabilities = softmax(np.asarray(logits))
        labels = np.asarray(prediction.label_ids)
        metrics = classification_metrics(probabilities, labels)
        if track_ids is not None and len(track_ids) == len(labels):
            _, track_probabilities, vote, track_labels = aggregate_tracks(probabilities, labels, track_ids)
            metrics["track_accuracy"] = float(accuracy_score(track_labels, track_probabilities.argmax(axis=1)))
            metrics["track_accuracy_vote"] = float(accuracy_score(track_labels, vote))
        return metrics

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
    from sklearn.metrics import classification_report, confusion_matrix

    output_dir = Path(output_dir)
    probabilities = softmax(np.asarray(logits))
    labels = np.asarray(labels)
    levels = {"segment": (probabilities, labels)}
    if track_ids is not None:
        _, track_probabilities, _, track_labels = aggregate_tracks(probabilities, labels, track_ids)
        levels["track"] = (track_probabilities, track_labels)
    written = {}
    for level, (probs, truth) in levels.items():
        predictions = probs.argmax(axis=1)
        kwargs = dict(labels=list(range(len(label_names))), target_names=label_names, zero_division=0)
        report = classification_report(truth, predictions, output_dict=True, **kwargs)
        stem = f"{split}_{level}"
        (output_dir / f"classification_report_{stem}.json").write_text(json.dumps(report, indent=2))
        (output_dir / f"classification_report_{stem}.txt").write_text(classification_report(truth, predictions, **kwargs))
        matrix = confusion_matrix(truth, predictions, labels=list(range(len(label_names))))
        png = output_dir / f"confusion_matrix_{stem}.png"
        plot_confusion_matrix(matrix, label_names, png, title=f"{split} ({level} level)")
        written[level] = str(png)
    return written


def plot_confusion_matrix(matrix: np.ndarray, label_names: list[str], path: str | os.PathLike, title: str) -> None:
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
        axis.text(col, row, int(value), ha="center", va="center", color="white" if value > threshold else "black")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
