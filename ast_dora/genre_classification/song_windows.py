"""Windows of a song, and the song's answer from its windows: the one implementation that training data, the
project's song analysis (`ast_dora.inference.GenreClassifier`: `predict`, the app, `hub load --audio`), the
metric (`genre_classification.py`) and the `audio-classification` pipeline that travels with every saved
model (`pipeline_genre_classification.py`) all run, so they cannot drift apart.

Remote code: this file is copied next to saved weights (the pipeline imports it) and into `evaluate`'s module
cache (the metric imports it), so it imports only numpy.

Windows: a song of L samples gets n = ceil((L - W) / H) + 1 windows of W samples with hop H; the last window is
shifted to end exactly at the song's end (nothing at the end is lost, nothing is padded). A song shorter than one
window is zero-padded to one window. A 30-s clip gives 14 windows of 4 s / 2 s hop and 3 windows of
10.24 s / 10.24 s hop. One refinement: with overlapping windows, a remainder of less than a tenth of a hop (and
less than the overlap) does not add a window; the last window just shifts by that remainder. Real GTZAN clips
are 30.013 s, and the plain formula would give them a 15th 4-s window starting 13 ms after the 14th (a
near-duplicate); here they get 14, the last ending at 30.013 s.

Order: a song's windows are analysed coarse to fine (`visiting_order`): the middle window first, then the middles
of the two halves, then of the four quarters, and so on, so that every prefix of the order (each streamed partial
result) is a sample spread over the whole song rather than its beginning. The answer does not depend on the order.
`max_windows` keeps at most that many windows, evenly spread (`spread_windows`): window
floor((i + 1/2) n / k) of n for i < k, the middle of each of k equal stretches of the song.

Answer: the mean of the windows' probabilities, and as a second view the majority vote of the windows' top
genres, a tie going to the tied genre with the highest mean probability.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def seconds_to_samples(seconds: float, sampling_rate: int) -> int:
    return max(1, int(round(seconds * sampling_rate)))


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start sample of every window of a song of `num_samples` samples (int64, increasing)."""
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


def place_windows(waveform: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(the waveform, zero-padded to one window if shorter; the start sample of each of its windows)."""
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if len(waveform) < window:
        waveform = np.pad(waveform, (0, window - len(waveform)))
    return waveform, window_starts(len(waveform), window, hop)


def spread_windows(num_windows: int, max_windows: int | None = None) -> np.ndarray:
    """Indices (increasing) of at most `max_windows` of `num_windows` windows, evenly spread over the song: the
    window in the middle of each of `max_windows` equal stretches; all of them when `max_windows` is None or not
    smaller."""
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be at least 1, got {max_windows}")
    if max_windows is None or max_windows >= num_windows:
        return np.arange(num_windows, dtype=np.int64)
    # Stretches are at least one window long (k < n), so the chosen windows are distinct.
    return (np.arange(max_windows, dtype=np.int64) * 2 + 1) * num_windows // (2 * max_windows)


def coarse_to_fine(num_items: int) -> np.ndarray:
    """A permutation of range(num_items): the middle item, then the middles of both halves, then of the quarters...
    (breadth first over the halvings), so that any prefix is spread over the whole range."""
    order, intervals = [], [(0, num_items)]
    while intervals:
        next_intervals = []
        for low, high in intervals:
            if low >= high:
                continue
            middle = (low + high) // 2
            order.append(middle)
            next_intervals += [(low, middle), (middle + 1, high)]
        intervals = next_intervals
    return np.asarray(order, dtype=np.int64)


def visiting_order(num_windows: int, max_windows: int | None = None) -> np.ndarray:
    """The windows song analysis runs, in the order it runs them: `spread_windows`, visited `coarse_to_fine`."""
    chosen = spread_windows(num_windows, max_windows)
    return chosen[coarse_to_fine(len(chosen))]


def window_batches(
    waveform: np.ndarray,
    starts: np.ndarray,
    window: int,
    batch_size: int,
    first_batch_size: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the batch's first window, its windows as a contiguous (batch, window) float32 array), in order.

    Every window is a view into the waveform; only the batch being featurised is copied out, so memory beyond the
    waveform stays that of one batch whatever the song's length. `first_batch_size` makes the first batch shorter
    (a streamed first result comes sooner); the others hold `batch_size` windows.
    """
    if batch_size < 1 or (first_batch_size is not None and first_batch_size < 1):
        raise ValueError(f"batch sizes must be at least 1, got {batch_size} and first {first_batch_size}")
    views = np.lib.stride_tricks.sliding_window_view(waveform, window)
    first_end = min(first_batch_size or batch_size, len(starts))
    edges = [0, *range(first_end, len(starts), batch_size), len(starts)] if len(starts) else [0]
    for first, end in zip(edges[:-1], edges[1:], strict=True):
        yield first, np.ascontiguousarray(views[starts[first:end]])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def aggregate_tracks(
    probabilities: np.ndarray, track_ids: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Group window probabilities by track: (sorted track ids, mean probability per track (T, C), majority-vote
    class per track (T,), each window's track index (N,))."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(
            f"expected window probabilities of shape (windows, classes), got {probabilities.shape}"
        )
    if len(track_ids) != len(probabilities):
        raise ValueError(f"{len(track_ids)} track ids for {len(probabilities)} windows: give one per window")
    tracks, inverse = np.unique(np.asarray(track_ids), return_inverse=True)
    inverse = inverse.reshape(-1)
    num_classes = probabilities.shape[1]
    sums = np.zeros((len(tracks), num_classes))
    np.add.at(sums, inverse, probabilities)
    mean = sums / np.bincount(inverse, minlength=len(tracks))[:, None]
    votes = np.zeros((len(tracks), num_classes), dtype=np.int64)
    np.add.at(votes, (inverse, probabilities.argmax(axis=1)), 1)
    most_voted = votes == votes.max(axis=1, keepdims=True)
    vote = np.where(most_voted, mean, -np.inf).argmax(axis=1)
    return tracks.tolist(), mean, vote, inverse


def aggregate_windows(probabilities: np.ndarray) -> tuple[np.ndarray, int]:
    """One song's answer from its window probabilities (N, C): (mean probability (C,), majority-vote class)."""
    _, mean, vote, _ = aggregate_tracks(probabilities, ["song"] * len(probabilities))
    return mean[0], int(vote[0])


def to_mono_float(audio: np.ndarray) -> np.ndarray:
    """Any 1-D/2-D int or float array -> mono float32 in [-1, 1]; channels averaged as the data layer does.

    Raises `ValueError` with a message for the user (`GenreClassifier` re-raises it as `InvalidAudioError`)."""
    audio = np.asarray(audio)
    if audio.ndim == 0 or audio.ndim > 2 or audio.size == 0:
        raise ValueError(
            f"Expected a waveform of shape (samples,), (samples, channels) or (channels, samples); got an array of "
            f"shape {audio.shape}."
        )
    if np.issubdtype(audio.dtype, np.integer):
        info = np.iinfo(audio.dtype)
        # unsigned PCM (8-bit wav) is centred on the middle of its range
        offset = (int(info.max) + 1) // 2 if info.min == 0 else 0
        audio = (audio.astype(np.float32) - offset) / float(max(info.max - offset, 1))
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 2:
        # The shorter axis holds the channels: (samples, channels) from soundfile / Gradio, (channels, samples) from
        # torchaudio / torchcodec.
        channel_axis = 0 if audio.shape[0] < audio.shape[1] else 1
        audio = audio.mean(axis=channel_axis, dtype=np.float32)
    if not np.all(np.isfinite(audio)):
        raise ValueError("The waveform contains NaN or infinite samples.")
    return audio


__all__ = [
    "to_mono_float",
    "aggregate_tracks",
    "aggregate_windows",
    "place_windows",
    "seconds_to_samples",
    "softmax",
    "coarse_to_fine",
    "spread_windows",
    "visiting_order",
    "window_batches",
    "window_starts",
]
