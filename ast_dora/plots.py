"""Figures of a `SongAnalysis`: genre probabilities as bars, and the probabilities over the song's time.

The app shows them (`gr.Plot` takes the matplotlib figures); `python -m ast_dora.predict --plot out.png` saves
both in one image (`analysis_figure`). Figures are plain `matplotlib.figure.Figure` objects, never registered
with pyplot: safe to build in the app's worker threads, and freed like any object (nothing to close).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

# One colour per genre, fixed by the genre's index so that bars and lines agree across figures.
_COLOURS = colormaps["tab10"].colors


def _colour(index: int):
    return _COLOURS[index % len(_COLOURS)]


def _time_axis_label(seconds: float) -> tuple[float, str]:
    return (60.0, "time (min)") if seconds >= 180 else (1.0, "time (s)")


def plot_probability_bars(analysis, axis=None, title: str | None = None) -> Figure:
    """Horizontal bars of the song's genre probabilities (mean over windows), most likely genre on top."""
    figure, axis = _figure_and_axis(axis, (6, 3.6))
    order = np.argsort(analysis.probabilities, kind="stable")  # ascending: barh draws bottom-up
    values = analysis.probabilities[order]
    axis.barh(
        [analysis.labels[i] for i in order], values, color=[_colour(int(i)) for i in order], edgecolor="none"
    )
    for y, value in enumerate(values):
        axis.text(min(value + 0.01, 0.9), y, f"{value:.0%}", va="center", fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_xlabel("probability (mean over windows)")
    axis.set_title(title or f"{analysis.genre} ({analysis.confidence:.0%}), majority vote: {analysis.vote}")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def plot_probability_timeline(analysis, top_k: int = 5, axis=None, title: str | None = None) -> Figure:
    """Probability of the song's `top_k` genres in each window, drawn at the window's centre (a step for a
    single window)."""
    figure, axis = _figure_and_axis(axis, (8, 3.6))
    scale, xlabel = _time_axis_label(analysis.duration)
    centres = (analysis.window_starts + analysis.window_ends) / 2 / scale
    top = np.argsort(-analysis.probabilities, kind="stable")[:top_k]
    for i in top:
        values = analysis.window_probabilities[:, i]
        if len(centres) == 1:  # one window: a flat segment over the window instead of a lone dot
            x = np.array([analysis.window_starts[0], analysis.window_ends[0]]) / scale
            axis.plot(x, [values[0]] * 2, color=_colour(int(i)), label=analysis.labels[i], linewidth=2)
        else:
            axis.plot(
                centres,
                values,
                color=_colour(int(i)),
                label=analysis.labels[i],
                linewidth=1.6,
                marker="o" if len(centres) <= 30 else None,
                markersize=3,
            )
    axis.set_xlim(0, analysis.duration / scale)
    axis.set_ylim(0, 1)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("probability")
    done = getattr(analysis, "windows_done", len(centres))
    total = getattr(analysis, "windows_planned", None) or done
    windows = f"{done} windows" if total == done else f"{done} of {total} windows"
    ensemble = getattr(analysis, "ensemble", None)
    if ensemble is not None:  # the models' windows on a common grid
        default_title = f"genre over time ({windows} of {len(ensemble['models'])} models, {analysis.window_seconds:g}-s grid)"
    else:
        default_title = f"genre over time ({windows} of {analysis.window_seconds:g} s)"
    axis.set_title(title or default_title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def analysis_figure(analysis, top_k: int = 5, title: str | None = None) -> Figure:
    """Both charts in one figure: the bars beside the timeline."""
    figure = Figure(figsize=(13, 4))
    grid = figure.add_gridspec(1, 2, width_ratios=(1, 1.8))
    plot_probability_bars(analysis, axis=figure.add_subplot(grid[0]))
    plot_probability_timeline(analysis, top_k=top_k, axis=figure.add_subplot(grid[1]))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def save_analysis_plot(analysis, path: str | os.PathLike, top_k: int = 5, title: str | None = None) -> Path:
    """Write `analysis_figure` to `path` (format from the extension: png, svg, pdf, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis_figure(analysis, top_k=top_k, title=title).savefig(path, dpi=110)
    return path


def _figure_and_axis(axis, size):
    if axis is not None:
        return axis.figure, axis
    figure = Figure(figsize=size)
    return figure, figure.add_subplot()


__all__ = ["analysis_figure", "plot_probability_bars", "plot_probability_timeline", "save_analysis_plot"]
