"""Windowing: n = ceil((L - W) / H) + 1, last window aligned to the end, short tracks padded to one window."""

import math

import numpy as np
import pytest

from ast_dora.data.windows import cut_windows, seconds_to_samples, window_starts


@pytest.mark.parametrize(
    "seconds, sr, window_s, hop_s, expected",
    [
        (30.0, 22050, 4.0, 2.0, 14),
        (30.0, 16000, 10.24, 10.24, 3),
        (29.98, 16000, 10.24, 10.24, 3),
        (10.24, 16000, 10.24, 10.24, 1),
        (4.0, 22050, 4.0, 2.0, 1),
        (5.0, 22050, 4.0, 2.0, 2),
        (2.0, 22050, 4.0, 2.0, 1),
        (12.0, 22050, 4.0, 2.0, 5),
        (12.0, 16000, 10.24, 10.24, 2),
        # real GTZAN clips (661794 samples = 30.013 s): no near-duplicate 15th window
        (661794 / 22050, 22050, 4.0, 2.0, 14),
        (661794 / 22050, 16000, 10.24, 10.24, 3),
        (30.5, 22050, 4.0, 2.0, 15),
    ],
)
def test_window_counts(seconds, sr, window_s, hop_s, expected):
    n, w, h = int(round(seconds * sr)), seconds_to_samples(window_s, sr), seconds_to_samples(hop_s, sr)
    starts = window_starts(n, w, h)
    assert len(starts) == expected
    if n >= w:
        assert starts[-1] + w == n  # the last window ends exactly at the track's end
        assert starts[0] == 0 and np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= 1.1 * h)


def test_random_lengths_cover_the_whole_track():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(10, 100)), int(rng.integers(1, 120))
        n = int(rng.integers(1, 2000))
        starts = window_starts(n, w, h)
        if n <= w:
            assert list(starts) == [0]
        else:
            exact = math.ceil((n - w) / h) + 1
            assert starts[-1] == n - w and len(starts) in (exact, exact - 1)
            if (n - w) % h == 0 or (n - w) % h > min(h // 10, max(0, w - h)):
                assert len(starts) == exact  # only a remainder under a tenth of a hop drops a window
            if h <= w:  # overlapping or touching windows cover every sample
                covered = np.zeros(n, bool)
                for s in starts:
                    covered[s : s + w] = True
                assert covered.all()


def test_cut_windows_values_and_padding():
    x = np.arange(10, dtype=np.float32)
    windows, starts = cut_windows(x, 4, 3)
    assert starts.tolist() == [0, 3, 6]
    assert windows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    short, starts = cut_windows(np.ones(3, np.float32), 5, 2)
    assert starts.tolist() == [0] and short.tolist() == [[1, 1, 1, 0, 0]]
    assert windows.dtype == np.float32 and windows.flags["C_CONTIGUOUS"]
