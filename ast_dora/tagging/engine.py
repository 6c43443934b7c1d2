"""Analysing many songs fast on one machine: decoding and features in worker processes, the model batched across
songs in the main process.

One song through `GenreClassifier.analyse` is decode -> windows -> features -> model, one after the other; for a
ViT-hybrid song decode and features are about half the time, and the model's batches are as small as one song's
last batch. Here worker processes (`prepare_song`) decode each file and compute every model's `input_values`, while
the main process (`SongBatcher`) fills each model's batches with the windows of whichever songs are ready and
scatters the probabilities back; a song is finished when all its windows are done, and its answer is built by the
same code as a single song's (`GenreClassifier._song_analysis`, `EnsembleClassifier.combine`), so the numbers are
those `predict` gives.

Workers are started with the `spawn` context, never `fork`: the main process holds the model runtime's native
thread pools (PyTorch, OpenVINO, ONNX Runtime), and a child forked from a process with running threads can
deadlock or crash (a segfault was seen in this project). Each worker limits numpy's BLAS to one thread (the workers
are the parallelism). At most `prefetch` songs are decoded ahead of the model, so memory does not grow with the
number of songs.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..genre_classification.song_windows import place_windows, visiting_order
from ..inference import GenreClassifier, InvalidAudioError, NotAudioError
from ..models.registry import get_model_spec
from .walk import LibraryFile, looks_like_audio

logger = logging.getLogger(__name__)

# Windows per feature computation in a worker: bounds a worker's temporary memory for long songs.
FEATURE_CHUNK = 32
START_METHOD = "spawn"


@dataclass
class FeaturePlan:
    """What a worker needs to turn a file into one model's `input_values` (picklable: sent to each worker once).
    Its attribute names are `GenreClassifier`'s, so the classifier's own `load_audio` / `check_waveform` run on it
    and a file gets the same messages here as in `predict`."""

    sampling_rate: int
    window: int
    hop: int
    window_seconds: float
    max_windows: int | None
    min_seconds: float
    max_seconds: float | None
    feature_extractor: Any
    model_type: str = ""  # the spec's `batched_features` (AST's numpy fbank), looked up in the worker
    _fast: Any = field(default=None, repr=False)

    @classmethod
    def of(cls, classifier: GenreClassifier) -> FeaturePlan:
        return cls(
            classifier.sampling_rate,
            classifier.window,
            classifier.hop,
            classifier.window_seconds,
            classifier.max_windows,
            classifier.min_seconds,
            classifier.max_seconds,
            classifier.feature_extractor,
            classifier.spec.name,
        )

    def features(self, windows: np.ndarray) -> np.ndarray:
        # GenreClassifier.features, without the model: the spec's batched numpy features (AST's fbank), else the
        # extractor.
        if self._fast is None:
            make = get_model_spec(self.model_type).batched_features if self.model_type else None
            self._fast = make(self.feature_extractor) if make is not None else False
        if self._fast:
            return self._fast(windows)
        output = self.feature_extractor(list(windows), sampling_rate=self.sampling_rate, return_tensors="np")
        return np.asarray(output["input_values"], dtype=np.float32)

    def __getstate__(self):
        return {**self.__dict__, "_fast": None}


@dataclass
class PreparedSong:
    """A file after the worker: `inputs[i]` / `starts[i]` (samples, time order) for model i, or a status and error."""

    file: LibraryFile
    status: str  # "ok", "error" or "not_audio"
    error: str | None = None
    duration: float | None = None
    inputs: list[np.ndarray] = field(default_factory=list)
    starts: list[np.ndarray] = field(default_factory=list)
    windows_total: list[int] = field(default_factory=list)
    seconds: float = 0.0  # decode + features


_PLANS: list[FeaturePlan] | None = None


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    # A parent killed with SIGKILL never tells its pool: the worker would wait for work forever.
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(0)


def init_worker(plans: list[FeaturePlan], watch_parent: bool = True) -> None:
    """Worker start: keep the plans, one BLAS thread (the workers are the parallelism), and exit when the parent
    process dies (a `kill -9` of the run leaves no decoder behind)."""
    global _PLANS
    _PLANS = plans
    if watch_parent:
        import threading

        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # numpy then uses its default threads; slower on a busy machine, same numbers
        pass


def prepare_song(file: LibraryFile, plans: list[FeaturePlan] | None = None) -> PreparedSong:
    """Decode `file` once per sampling rate the models need and compute every model's `input_values`."""
    plans = plans or _PLANS
    start = time.perf_counter()
    waveforms: dict[int, np.ndarray] = {}
    song = PreparedSong(file, "ok")
    try:
        for plan in plans:
            if plan.sampling_rate not in waveforms:
                waveforms[plan.sampling_rate] = GenreClassifier.load_audio(plan, file.path)
            waveform = waveforms[plan.sampling_rate]
            GenreClassifier.check_waveform(plan, waveform)
            song.duration = len(waveform) / plan.sampling_rate if song.duration is None else song.duration
            padded, starts = place_windows(waveform, plan.window, plan.hop)
            chosen = starts[np.sort(visiting_order(len(starts), plan.max_windows))]
            chunks = []
            for first in range(0, len(chosen), FEATURE_CHUNK):
                part = chosen[first : first + FEATURE_CHUNK]
                windows = np.stack([padded[s : s + plan.window] for s in part])
                chunks.append(plan.features(windows))
            song.inputs.append(np.concatenate(chunks))
            song.starts.append(chosen)
            song.windows_total.append(len(starts))
    except NotAudioError as error:
        # Not readable as audio: a broken song when it is named like one, else a file that is no song (skipped).
        song = PreparedSong(file, "error" if looks_like_audio(file.path) else "not_audio", str(error))
    except InvalidAudioError as error:  # silent, too short, too long
        song = PreparedSong(file, "error", str(error))
    except Exception as error:  # anything else is this file's problem, never the run's
        song = PreparedSong(file, "error", f"{type(error).__name__}: {error}")
    song.seconds = time.perf_counter() - start
    return song


@dataclass
class ModelInfo:
    """What a results row says about the model(s): `model_key` identifies the answer (ids, weights, weights)."""

    model_key: str
    model_id: str
    weights_hash: str
    backend: str


class _SongState:
    def __init__(self, song: PreparedSong, num_models: int, classifiers: list[GenreClassifier]):
        self.song = song
        self.probabilities = [
            np.empty((len(song.starts[i]), len(c.labels))) for i, c in enumerate(classifiers)
        ]
        self.audioset = [
            np.empty((len(song.starts[i]), len(c.audioset_labels))) if c.music_check else None
            for i, c in enumerate(classifiers)
        ]
        self.tags = [
            np.empty((len(song.starts[i]), len(c.tag_labels))) if c.tag_labels is not None else None
            for i, c in enumerate(classifiers)
        ]
        self.remaining = sum(len(s) for s in song.starts)
        self.model_seconds = 0.0


class SongBatcher:
    """Model batches across songs: `add(prepared)` queues a song's windows and returns the rows of the songs this
    completed; `flush()` runs what is left. Each model has its own queue and batch size."""

    def __init__(
        self,
        classifiers: list[GenreClassifier],
        info: ModelInfo,
        ensemble=None,
        batch_size: int | None = None,
    ):
        self.classifiers = classifiers
        self.info = info
        self.ensemble = ensemble
        self.batch_sizes = [int(batch_size or c.batch_size) for c in classifiers]
        self.queues: list[deque] = [deque() for _ in classifiers]
        self.queued = [0] * len(classifiers)

    def add(self, song: PreparedSong) -> list[dict]:
        if song.status != "ok":
            return [self.error_row(song)]
        state = _SongState(song, len(self.classifiers), self.classifiers)
        for i, inputs in enumerate(song.inputs):
            self.queues[i].append([state, 0, inputs])
            self.queued[i] += len(inputs)
        song.inputs = []  # the queue holds them now
        done = []
        for i in range(len(self.classifiers)):
            done += self._run(i, flush=False)
        return done

    def flush(self) -> list[dict]:
        done = []
        for i in range(len(self.classifiers)):
            done += self._run(i, flush=True)
        return done

    @property
    def songs_waiting(self) -> int:
        return len({id(piece[0]) for queue in self.queues for piece in queue})

    def _run(self, i: int, flush: bool) -> list[dict]:
        classifier, size, queue, done = self.classifiers[i], self.batch_sizes[i], self.queues[i], []
        while self.queued[i] >= size or (flush and self.queued[i] > 0):
            pieces, taken = [], 0
            while taken < size and queue:
                state, offset, inputs = queue[0]
                n = min(size - taken, len(inputs) - offset)
                pieces.append((state, offset, inputs[offset : offset + n]))
                taken += n
                if offset + n == len(inputs):
                    queue.popleft()
                else:
                    queue[0][1] = offset + n
            self.queued[i] -= taken
            tick = time.perf_counter()
            probabilities, audioset, tags = classifier._outputs(np.concatenate([p[2] for p in pieces]))
            seconds = time.perf_counter() - tick
            row = 0
            for state, offset, inputs in pieces:
                n = len(inputs)
                state.probabilities[i][offset : offset + n] = probabilities[row : row + n]
                if audioset is not None:
                    state.audioset[i][offset : offset + n] = audioset[row : row + n]
                if tags is not None:
                    state.tags[i][offset : offset + n] = tags[row : row + n]
                state.model_seconds += seconds * n / taken
                state.remaining -= n
                row += n
                if state.remaining == 0:
                    done.append(self.row(state))
        return done

    def analysis(self, state: _SongState):
        """The song's `SongAnalysis`, built as `GenreClassifier.analyse_iter` (and an ensemble) builds it."""
        song = state.song
        analyses = []
        for i, classifier in enumerate(self.classifiers):
            timings = {"decode_and_features": song.seconds, "model": state.model_seconds}
            analyses.append(
                classifier._song_analysis(
                    song.file.path,
                    state.probabilities[i],
                    song.starts[i],
                    song.windows_total[i],
                    song.duration,
                    timings,
                    windows_planned=len(song.starts[i]),
                    audioset=state.audioset[i],
                    tags=state.tags[i],
                )
            )
        return analyses[0] if self.ensemble is None else self.ensemble.combine(analyses, song.file.path)

    def row(self, state: _SongState) -> dict:
        analysis = self.analysis(state)
        file = state.song.file
        return {
            **self._common(file),
            "status": "ok",
            "duration": float(analysis.duration),
            "genre": analysis.genre,
            "confidence": analysis.confidence,
            "vote": analysis.vote,
            "probabilities": analysis.label_probabilities(),
            "is_music": analysis.is_music,
            "music_probability": None if analysis.music is None else float(analysis.music.music_probability),
            "seconds": state.song.seconds + state.model_seconds,
            "error": None,
        }

    def error_row(self, song: PreparedSong) -> dict:
        return {
            **self._common(song.file),
            "status": song.status,
            "error": song.error,
            "seconds": song.seconds,
            "duration": None,
            "genre": None,
            "confidence": None,
            "vote": None,
            "probabilities": None,
            "is_music": None,
            "music_probability": None,
        }

    def _common(self, file: LibraryFile) -> dict:
        return {
            "path": file.path,
            "model_key": self.info.model_key,
            "size": file.size,
            "mtime": file.mtime,
            "model_id": self.info.model_id,
            "weights_hash": self.info.weights_hash,
            "backend": self.info.backend,
            "analysed_at": time.time(),
            "vanished_at": None,
        }


def default_workers() -> int:
    """Decode workers: one per core but one (the model's), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


def tag_files(
    files: Iterable[LibraryFile],
    batcher: SongBatcher,
    plans: list[FeaturePlan],
    workers: int | None = None,
    prefetch: int | None = None,
) -> Iterator[list[dict]]:
    """Rows of `files` through `workers` decode processes (0: in this process) and `batcher`, a list at a time: the
    songs one model batch (or one failed file) finished, to be committed together. At most `prefetch` songs
    (default 2 per worker + 2) are decoded ahead of the model."""
    workers = default_workers() if workers is None else int(workers)
    files = iter(files)
    if workers == 0:
        for file in files:
            yield batcher.add(prepare_song(file, plans))
        yield batcher.flush()
        return
    prefetch = prefetch or 2 * workers + 2
    context = multiprocessing.get_context(START_METHOD)

    def new_pool():
        return futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=init_worker, initargs=(plans,)
        )

    pool = new_pool()
    running: dict[futures.Future, LibraryFile] = {}
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < prefetch:
                file = next(files, None)
                if file is None:
                    exhausted = True
                    break
                running[pool.submit(prepare_song, file)] = file
            if not running:
                break
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            broken = False
            for future in finished:
                file = running.pop(future)
                try:
                    song = future.result()
                except futures.process.BrokenProcessPool:
                    broken = True
                    song = PreparedSong(
                        file,
                        "error",
                        "the decoding process died on this file (or on one decoded "
                        "beside it); rerun with --retry_errors to try it again",
                    )
                except Exception as error:
                    song = PreparedSong(file, "error", f"{type(error).__name__}: {error}")
                yield batcher.add(song)
            if (
                broken
            ):  # a decoder crashed (a native library): every file in flight failed with it; go on afresh
                for future, file in running.items():
                    future.cancel()
                    yield batcher.add(
                        PreparedSong(
                            file,
                            "error",
                            "the decoding process died while this file "
                            "was in flight; rerun with --retry_errors",
                        )
                    )
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
        yield batcher.flush()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


__all__ = [
    "FeaturePlan",
    "ModelInfo",
    "PreparedSong",
    "SongBatcher",
    "default_workers",
    "init_worker",
    "prepare_song",
    "tag_files",
]
