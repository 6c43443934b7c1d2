"""Both models in one answer: a weighted ensemble of song analyses (`GenreClassifier.ensemble`).

    from ast_dora.inference import GenreClassifier

    both = GenreClassifier.ensemble([vit, ast], weights=[1, 1])   # classifiers (any backends), weights optional
    analysis = both.analyse("song.mp3")                           # a `SongAnalysis`, as one model's
    analysis.probabilities        # the weighted mean of the models' song probabilities (equal weights by default)
    analysis.ensemble["models"]   # the models' names; ["members"] their own analyses (their own windows)

Each model analyses the song its own way (its sampling rate, windows, features, backend); the answer is the weighted
mean of their song probabilities, and the majority vote and the timeline are on a common time grid: cells of the
shortest hop among the models, each cell's row the weighted mean of the models' windows covering the cell's centre
(a model none of whose analysed windows covers it is left out of that cell; a cell none covers is left out of the
timeline, so a streamed timeline fills in as the windows arrive). The models run in turns, a batch each, and a
partial answer is yielded once every model has one. The music check (`ast_dora.music_detection`) is the first
model's that has one.

This module imports nothing of `ast_dora.inference` (which imports it): it combines `SongAnalysis` objects
through `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .genre_classification.song_windows import aggregate_windows


def normalised_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    """Weights summing to 1 (equal by default); a clear error for a wrong count or a negative or all-zero set."""
    if weights is None:
        return np.full(count, 1.0 / count)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise ValueError(f"{len(weights)} weights for {count} models: give one weight per model.")
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"weights must be non-negative, finite and not all zero, got {weights.tolist()}")
    return weights / weights.sum()


def common_grid(
    analyses: Sequence[Any], weights: np.ndarray, labels: list[str], orders: list[np.ndarray], step: float
) -> tuple[np.ndarray, np.ndarray]:
    """(cell starts (cells,), cell rows (cells, labels)): the models' windows on one grid of `step`-second cells."""
    duration = max(a.duration for a in analyses)
    starts = np.arange(0.0, duration, step)
    centres = np.minimum(starts + step / 2, duration)
    total = np.zeros((len(starts), len(labels)))
    weight = np.zeros(len(starts))
    for analysis, w, order in zip(analyses, weights, orders, strict=True):
        ends = analysis.window_ends.copy()
        ends[ends == ends.max()] = np.inf  # the last window covers the song's very end
        covers = (analysis.window_starts[None, :] <= centres[:, None]) & (centres[:, None] < ends[None, :])
        count = covers.sum(axis=1)
        rows = covers @ analysis.window_probabilities[:, order] / np.maximum(count, 1)[:, None]
        total += w * rows * (count > 0)[:, None]
        weight += w * (count > 0)
    covered = weight > 0
    return starts[covered], total[covered] / weight[covered, None]


class EnsembleClassifier:
    """Several `GenreClassifier`s answering together (see the module docstring); build it with
    `GenreClassifier.ensemble(classifiers, weights=None)`."""

    def __init__(
        self,
        classifiers: Sequence[Any],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ):
        classifiers = list(classifiers)
        if len(classifiers) < 2:
            raise ValueError(f"An ensemble needs at least two models, got {len(classifiers)}.")
        self.classifiers = classifiers
        self.weights = normalised_weights(weights, len(classifiers))
        self.names = list(names) if names is not None else [c.name or c.model_type for c in classifiers]
        if len(self.names) != len(classifiers):
            raise ValueError(f"{len(self.names)} names for {len(classifiers)} models.")
        self.labels = list(classifiers[0].labels)
        for name, classifier in zip(self.names[1:], classifiers[1:], strict=True):
            if sorted(classifier.labels) != sorted(self.labels):
                raise ValueError(
                    f"{name} classifies into {sorted(classifier.labels)}, {self.names[0]} into "
                    f"{sorted(self.labels)}: an ensemble needs models of the same genres."
                )
        # each model's label order -> the ensemble's
        self._orders = [np.array([list(c.labels).index(label) for label in self.labels]) for c in classifiers]
        self.music_checker = next((c for c in classifiers if getattr(c, "music_check", False)), None)
        self.grid_seconds = float(
            min(c.hop_seconds for c in classifiers)
        )  # the timeline's cell: the shortest hop
        self.model_type = "ensemble"
        self.name = " + ".join(self.names)

    def __repr__(self) -> str:
        members = ", ".join(f"{name} x{w:.2f}" for name, w in zip(self.names, self.weights, strict=True))
        return f"{type(self).__name__}({members})"

    def analyse(self, audio, sampling_rate: int | None = None, progress=None, max_windows: int | None = None):
        """The ensemble's `SongAnalysis` of a whole song (`progress(done, planned)` counts every model's windows)."""
        for analysis in self.analyse_iter(audio, sampling_rate, max_windows=max_windows):
            if progress is not None:
                progress(analysis.windows_done, analysis.windows_planned)
        return analysis

    analyze = analyse

    def analyse_iter(
        self, audio, sampling_rate: int | None = None, max_windows: int | None = None
    ) -> Iterator[Any]:
        """Partial ensemble answers as the models' batches arrive (the models take turns), the last complete."""
        streams = [c.analyse_iter(audio, sampling_rate, max_windows=max_windows) for c in self.classifiers]
        latest: list[Any] = [None] * len(streams)
        running = list(range(len(streams)))
        while running:
            for index in list(running):
                try:
                    latest[index] = next(streams[index])
                except StopIteration:
                    running.remove(index)
                    continue
                if all(analysis is not None for analysis in latest):
                    yield self.combine(latest, audio)

    def combine(self, analyses: Sequence[Any], audio=None):
        """One `SongAnalysis` from the models' (partial or complete) analyses of the same song."""
        probabilities = sum(
            w * a.probabilities[order]
            for a, w, order in zip(analyses, self.weights, self._orders, strict=True)
        )
        grid_starts, grid_rows = common_grid(
            analyses, self.weights, self.labels, self._orders, self.grid_seconds
        )
        _, vote = aggregate_windows(grid_rows)
        music = next((a.music for a in analyses if getattr(a, "music", None) is not None), None)
        timings: dict[str, float] = {}
        for analysis in analyses:
            for key, seconds in analysis.timings.items():
                timings[key] = timings.get(key, 0.0) + seconds
        # A grid cell shorter than the song's end: its "window" ends there (SongAnalysis.window_ends clips it).
        return dataclasses.replace(
            analyses[0],
            labels=list(self.labels),
            probabilities=probabilities,
            vote=self.labels[vote],
            window_probabilities=grid_rows,
            window_starts=grid_starts,
            window_seconds=self.grid_seconds,
            duration=max(a.duration for a in analyses),
            source=str(audio) if isinstance(audio, (str, os.PathLike)) else None,
            timings=timings,
            windows_total=sum(a.windows_total for a in analyses),
            windows_planned=sum(a.windows_planned for a in analyses),
            windows_analysed=sum(a.windows_done for a in analyses),
            music=music,
            # each member's precision, in the models' order (a member's own is in `per_model`)
            precision=" + ".join(dict.fromkeys(a.precision for a in analyses if a.precision)) or None,
            ensemble={
                "models": list(self.names),
                "weights": [float(w) for w in self.weights],
                "members": list(analyses),
            },
        )


__all__ = ["EnsembleClassifier", "common_grid", "normalised_weights"]
