"""The project's genre-classification metric as an `evaluate` module: `evaluate.load(<this folder>)`.

Segment (window) metrics from per-class probabilities, and track metrics when each window's track id is given:
the track's answer is the mean of its windows' probabilities, and as a second view their majority vote
(`song_windows.aggregate_tracks`, the aggregation song analysis and the pipeline use). Training
(`compute_metrics`), the hyperparameter search, `python -m ast_dora.hub load --evaluate` and the model cards all
report these numbers.

This file travels as it is (evaluate copies it and `song_windows.py` into its module cache; a metric Space on the
Hub holds the same two files), so it imports only evaluate, datasets, numpy, scikit-learn and `song_windows`.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from .song_windows import aggregate_tracks

_DESCRIPTION = """\
Music-genre classification metrics of the ast-dora project, from per-class probabilities of each window
("segment") of a track: accuracy, macro precision / recall / F1, one-vs-rest macro ROC-AUC and a per-class report
with confusion matrix; with `track_ids`, also track accuracy by the mean window probability and by majority vote
of the windows (ties broken by mean probability), with their own report.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `float`, shape (windows, classes)): class probabilities of each window (e.g. a
        softmax of the logits). ROC-AUC is computed from them; the other segment metrics from their argmax.
    references (`list` of `int`): the true class of each window.
    track_ids (`list` of `str`, optional): the track each window was cut from (e.g. `blues.00000`), one per window;
        given to `compute` (not `add_batch`), in the order of the predictions. Adds the track-level results.
    label_names (`list` of `str`, optional): the class names, in class-id order, for the per-class reports.
Returns:
    accuracy, f1_macro, precision_macro, recall_macro (`float`): segment level; precision / recall / F1 are the
        unweighted means over the classes present in references or predictions (0 where undefined).
    roc_auc_macro (`float`): mean over the classes present in references of the one-vs-rest ROC-AUC; NaN when
        fewer than two classes are present.
    track_accuracy, track_accuracy_vote (`float`, with track_ids): track accuracy by mean window probability and
        by majority vote.
    per_class (`dict`), per_class_text (`str`), confusion_matrix (`list` of `list` of `int`, rows = true class):
        scikit-learn's classification report (as a dict and as text) and the confusion matrix, segment level.
    track_per_class, track_per_class_text, track_confusion_matrix (with track_ids): the same at track level
        (a track predicted by its mean window probability).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("ast_dora/genre_classification")
    >>> results = metric.compute(predictions=[[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]], references=[0, 0, 1],
    ...                          track_ids=["a", "a", "b"])
    >>> results["accuracy"], results["track_accuracy"]
    (0.6666666666666666, 1.0)
"""

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

# The scalar results, all better when higher (what a hyperparameter search may maximise).
SEGMENT_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc_macro")
TRACK_METRICS = ("track_accuracy", "track_accuracy_vote")


def roc_auc_macro(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest macro ROC-AUC over the classes present in `labels` (NaN if fewer than two)."""
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(labels == cls, probabilities[:, cls]) for cls in present]))


def class_report(truth: np.ndarray, predicted: np.ndarray, label_names: list) -> dict:
    """Per-class report (dict and text) and confusion matrix of class ids `predicted` against `truth`."""
    kwargs = dict(labels=list(range(len(label_names))), target_names=label_names, zero_division=0)
    return {
        "per_class": classification_report(truth, predicted, output_dict=True, **kwargs),
        "per_class_text": classification_report(truth, predicted, **kwargs),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=kwargs["labels"]).tolist(),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GenreClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references, track_ids=None, label_names=None):
        expected = (
            "predictions must be one row of class probabilities per window, all rows of the same length"
        )
        try:
            probabilities = np.asarray(predictions, dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"{expected}; the rows have different lengths.") from error
        if probabilities.ndim != 2 or len(probabilities) == 0:
            raise ValueError(f"{expected}; got an array of shape {probabilities.shape}.")
        labels = np.asarray(references, dtype=np.int64)
        num_classes = probabilities.shape[1]
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"references must be class ids in [0, {num_classes}); got {labels.min()}..{labels.max()}."
            )
        label_names = (
            [str(i) for i in range(num_classes)] if label_names is None else [str(n) for n in label_names]
        )
        if len(label_names) != num_classes:
            raise ValueError(f"label_names names {len(label_names)} classes; predictions have {num_classes}.")

        predicted = probabilities.argmax(axis=1)
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predicted, average="macro", zero_division=0
        )
        results = {
            "accuracy": float(accuracy_score(labels, predicted)),
            "f1_macro": float(f1),
            "precision_macro": float(precision),
            "recall_macro": float(recall),
            "roc_auc_macro": roc_auc_macro(probabilities, labels),
            **class_report(labels, predicted, label_names),
        }
        if track_ids is not None:
            _, track_probabilities, vote, track_of_window = aggregate_tracks(probabilities, list(track_ids))
            track_labels = np.zeros(len(track_probabilities), dtype=np.int64)
            track_labels[track_of_window] = labels
            track_predicted = track_probabilities.argmax(axis=1)
            results["track_accuracy"] = float(accuracy_score(track_labels, track_predicted))
            results["track_accuracy_vote"] = float(accuracy_score(track_labels, vote))
            results.update(
                {
                    f"track_{key}": value
                    for key, value in class_report(track_labels, track_predicted, label_names).items()
                }
            )
        return results
