"""Cutting a track into fixed-length windows.

A track of L samples gets n = ceil((L - W) / H) + 1 windows of W samples with hop H; the last window is
shifted to end exactly at the track's end (so nothing at the end is lost and nothing is padded). A track
shorter than one window is zero-padded to one window. A 30-s clip gives 14 windows of 4 s / 2 s hop and
3 windows of 10.24 s / 10.24 s hop.

One refinement: with overlapping windows, a remainder of less than a tenth of a hop (and less than the
overlap) does not add a window; the last window just shifts by that remainder. Real GTZAN clips are 30.013 s, and the plain formula would give them a 15th
4-s window starting 13 ms after the 14th (a near-duplicate); here they get 14, the last ending at 30.013 s.
"""

from __future__ import annotations

import numpy as np


def seconds_to_samples(seconds: float, sampling_rate: int) -> int:
    return max(1, int(round(seconds * sampling_rate)))


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start sample of every window of a track of `num_samples` samples (int64, increasing)."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window ({window}) and hop ({hop}) must be positive sample counts")
    if num_samples <= window:
        return np.zeros(1, dtype=np.int64)
    # A remainder this small shifts the last window instead of adding one; never more than the overlap
    # (W - H), so that consecutive windows still touch and every sample stays covered.
    tolerance = max(0, min(hop // 10, window - hop))
    # ceil((L - W - tol) / H) + 1, and at least two windows so that the first samples stay covered
    n = max(2, -(-(num_samples - window - tolerance) // hop) + 1)
    starts = np.arange(n, dtype=np.int64) * hop
    starts[-1] = num_samples - window
    return starts


def num_windows(num_samples: int, window: int, hop: int) -> int:
    return len(window_starts(num_samples, window, hop))


def cut_windows(waveform: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (n, window) float32, start samples (n,)) of a 1-D waveform; short tracks are zero-padded."""
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    starts = window_starts(len(waveform), window, hop)
    if len(waveform) < window:
        padded = np.zeros(window, dtype=np.float32)
        padded[: len(waveform)] = waveform
        return padded[None, :], starts
    # A strided view, then one copy: every window is contiguous for the feature extractor.
    view = np.lib.stride_tricks.sliding_window_view(waveform, window)
    return np.ascontiguousarray(view[starts]), starts
