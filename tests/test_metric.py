"""The project's `evaluate` metric (`ast_dora/genre_classification/genre_classification.py`): loads offline with
`evaluate.load(path)` in a process without this project, gives the numbers of a hand computation on a small fixed
example (a track where the mean probability and the vote disagree included), and is where `compute_metrics`,
the reports and the search objective get theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import EvalPrediction

from ast_dora.evaluation import METRICS, compute_genre_metrics, make_compute_metrics, write_reports
from ast_dora.genre_classification import METRIC_PATH
from ast_dora.search.settings import OBJECTIVE_METRICS

# 3 genres, 8 windows of 3 tracks. Track a (true 0): mean says 0, the windows' vote 1 (two of three).
# Track b (true 1): a 1-1 tie of votes between 1 and 0, which the mean breaks (1; the lower class id would be 0).
# Track c (true 2): mean 2, vote 0.
WINDOWS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.40, 0.50, 0.10],
        [0.40, 0.50, 0.10],  # a
        [0.10, 0.80, 0.10],
        [0.45, 0.15, 0.40],  # b
        [0.60, 0.10, 0.30],
        [0.10, 0.20, 0.70],
        [0.50, 0.10, 0.40],  # c
    ]
)
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
TRACKS = ["a", "a", "a", "b", "b", "c", "c", "c"]
NAMES = ["blues", "jazz", "rock"]
# By hand. Window top classes: 0 1 1 1 0 0 2 0 -> 3 of 8 right.
# Precision per class 1/4, 1/3, 1; recall 1/3, 1/2, 1/3; F1 2/7, 2/5, 1/2.
# ROC-AUC one-vs-rest, counting (positive, negative) pairs ranked right (ties count 1/2):
# class 0: 9 of 15, class 1: 9 of 12, class 2: 13.5 of 15.
HAND = {
    "accuracy": 3 / 8,
    "precision_macro": (1 / 4 + 1 / 3 + 1) / 3,
    "recall_macro": (1 / 3 + 1 / 2 + 1 / 3) / 3,
    "f1_macro": (2 / 7 + 2 / 5 + 1 / 2) / 3,
    "roc_auc_macro": (9 / 15 + 9 / 12 + 13.5 / 15) / 3,
    "track_accuracy": 3 / 3,  # means: a -> 0, b -> 1, c -> 2
    "track_accuracy_vote": 1 / 3,  # votes: a -> 1, b -> 1 (tie, by mean), c -> 0
}
HAND_CONFUSION = [[1, 2, 0], [1, 1, 0], [2, 0, 1]]  # rows: true class


def test_metric_loads_offline_in_a_process_without_the_project(tmp_path):
    script = f"""
import json, sys
import evaluate
metric = evaluate.load({METRIC_PATH!r})
results = metric.compute(predictions={WINDOWS.tolist()!r}, references={LABELS.tolist()!r}, track_ids={TRACKS!r},
                         label_names={NAMES!r})
imported = sorted(name for name in sys.modules if name == "ast_dora" or name.startswith("ast_dora."))
assert not imported, imported
open("result.json", "w").write(json.dumps({{"name": metric.name, "module": type(metric).__module__,
                                           "results": results}}))
"""
    (tmp_path / "load.py").write_text(script)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, "load.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads((tmp_path / "result.json").read_text())
    assert loaded["name"] == "genre_classification"
    assert loaded["module"].startswith(
        "evaluate_modules.metrics.genre_classification."
    )  # evaluate's cached copy
    for name, value in HAND.items():
        assert loaded["results"][name] == pytest.approx(value, abs=1e-12), name
    # the copy evaluate made in its cache holds the shared aggregation module too
    copied = {path.name for path in (tmp_path / "hf_home").rglob("*.py")}
    assert {"genre_classification.py", "song_windows.py"} <= copied


def test_metric_equals_the_hand_computation():
    results = compute_genre_metrics(WINDOWS, LABELS, TRACKS, NAMES)
    for name, value in HAND.items():
        assert results[name] == pytest.approx(value, abs=1e-12), name
    assert results["confusion_matrix"] == HAND_CONFUSION
    assert results["track_confusion_matrix"] == np.eye(3, dtype=int).tolist()
    assert results["per_class"]["jazz"]["precision"] == pytest.approx(1 / 3)
    assert results["per_class"]["jazz"]["recall"] == pytest.approx(1 / 2)
    assert results["per_class"]["rock"]["support"] == 3
    assert results["track_per_class"]["blues"]["support"] == 1
    assert "jazz" in results["per_class_text"] and "rock" in results["track_per_class_text"]

    no_tracks = compute_genre_metrics(WINDOWS, LABELS)
    assert not any(key.startswith("track_") for key in no_tracks)
    assert {key: no_tracks[key] for key in HAND if key in no_tracks} == {
        key: results[key] for key in HAND if not key.startswith("track_")
    }
    assert list(no_tracks["per_class"])[:3] == ["0", "1", "2"]  # class ids when no names are given


def test_metric_refuses_inputs_it_cannot_score():
    with pytest.raises(ValueError, match="class ids in"):
        compute_genre_metrics(WINDOWS, LABELS + 1)
    with pytest.raises(ValueError, match="label_names names 2 classes"):
        compute_genre_metrics(WINDOWS, LABELS, label_names=NAMES[:2])
    with pytest.raises(ValueError, match="one per window"):
        compute_genre_metrics(WINDOWS, LABELS, TRACKS[:-1])


def test_compute_metrics_reports_exactly_the_metric_modules_numbers():
    """The Trainer's `compute_metrics` (training, `hub load --evaluate`) and the search objective: the metric's scalar
    results, under the names all_results.json has always used."""
    compute_metrics = make_compute_metrics(TRACKS)
    metrics = compute_metrics(EvalPrediction(predictions=np.log(WINDOWS), label_ids=LABELS))
    assert set(metrics) == set(METRICS) == set(OBJECTIVE_METRICS)
    for name, value in HAND.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name
    without_tracks = make_compute_metrics(None)(EvalPrediction(predictions=np.log(WINDOWS), label_ids=LABELS))
    assert set(without_tracks) == {name for name, metric in METRICS.items() if not metric.needs_track_ids}


def test_reports_are_the_metric_modules(tmp_path, monkeypatch):
    plotted = {}
    monkeypatch.setattr(
        "ast_dora.evaluation.plot_confusion_matrix",
        lambda matrix, names, path, title: plotted.setdefault(Path(path).name, matrix.tolist()),
    )
    written = write_reports(np.log(WINDOWS), LABELS, TRACKS, NAMES, tmp_path, "test")
    assert set(written) == {"segment", "track"}
    results = compute_genre_metrics(WINDOWS, LABELS, TRACKS, NAMES)
    assert (
        json.loads((tmp_path / "classification_report_test_segment.json").read_text()) == results["per_class"]
    )
    assert (
        json.loads((tmp_path / "classification_report_test_track.json").read_text())
        == results["track_per_class"]
    )
    assert (tmp_path / "classification_report_test_segment.txt").read_text() == results["per_class_text"]
    assert plotted == {
        "confusion_matrix_test_segment.png": HAND_CONFUSION,
        "confusion_matrix_test_track.png": np.eye(3, dtype=int).tolist(),
    }


def test_scikit_learn_metrics_live_only_in_the_metric_module():
    package = Path(METRIC_PATH).parent
    users = sorted(
        str(path.relative_to(package.parent))
        for path in package.rglob("*.py")
        if "sklearn.metrics" in path.read_text()
    )
    assert users == ["ast_dora/genre_classification/genre_classification.py"]
