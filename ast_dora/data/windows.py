"""Cutting a track into fixed-length windows, for training and evaluation data.

Where the windows go (`window_starts`: the last window aligned to the end of the track, a short track zero-padded
to one window) is `ast_dora/genre_classification/song_windows.py`, the one implementation that song analysis and
the pipeline shipped with every model use too; see its docstring for the rule.
"""

from __future__ import annotations

import numpy as np

from ..genre_classification.song_windows import place_windows, seconds_to_samples, window_starts


def num_windows(num_samples: int, window: int, hop: int) -> int:
    return len(window_starts(num_samples, window, hop))


def cut_windows(waveform: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (n, window) float32, start samples (n,)) of a 1-D waveform; short tracks are zero-padded."""
    waveform, starts = place_windows(waveform, window, hop)
    # A strided view, then one copy: every window is contiguous for the feature extractor.
    view = np.lib.stride_tricks.sliding_window_view(waveform, window)
    return np.ascontiguousarray(view[starts]), starts


__all__ = ["cut_windows", "num_windows", "seconds_to_samples", "window_starts"]
