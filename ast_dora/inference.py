"""Song-level genre inference for either model: any file or array in, track probabilities and a timeline out.

    from ast_dora.inference import GenreClassifier

    classifier = GenreClassifier.from_pretrained("runs/vit_hybrid")   # or a Hub id, or an AST-DoRA output_dir
    analysis = classifier.analyse("song.mp3")                        # or analyse(array, sampling_rate=44100)
    analysis.genre, analysis.confidence, analysis.vote              # "rock", 0.71, "rock"
    analysis.probabilities                                          # mean over windows, (num_genres,)
    analysis.window_probabilities, analysis.window_starts          # the timeline, (num_windows, num_genres)
    analysis.to_dict()                                              # the JSON `python -m ast_dora.predict` prints

A song goes through the same steps as training data: the data layer decodes it (FFmpeg resamples to the
model's rate, channels are averaged) and places windows (`window_starts`, the last one ending at the end of the
song, a song shorter than one window zero-padded); the model's feature extractor turns windows into inputs.
Windows are featurised and classified a fixed-size batch at a time, so besides the decoded waveform
(~0.3 GB per hour of audio at 22.05 kHz, float32) memory does not grow with the song's length.

Speed on CPU: the model is a plain transformers model (AST-DoRA adapters are merged on load); it runs under
`torch.inference_mode` and, where bf16 computes faster than fp32 (a bf16 GPU; on the CPU, where a short measured
bf16-vs-fp32 matmul probe says so, `hardware.bf16_is_faster`, cached per machine: native bf16 instructions alone do
not make torch's bf16 faster), in bf16; fp32 elsewhere, `bf16=False` / `True` to force: the weights are cast once at load and the forward runs under bf16 autocast. Casting the weights
beats autocast alone, which re-casts fp32 activations around every matmul (a large share of the model's time in
profiles of both models on a CPU with AMX). Features are always computed in fp32 numpy, as in training. The
AST feature extractor (torchaudio's kaldi fbank, one window per call) is replaced by a batched numpy version
computing the same numbers (the model spec's `batched_features`: `ast_dora/models/ast_mlp/fbank.py`).

Backends: `from_pretrained(..., backend="onnx")` runs the model in ONNX Runtime instead, `backend="openvino"` in
OpenVINO (the int8 export when there is one; `python -m ast_dora.export onnx|openvino OUTPUT_DIR --quantize
int8` writes it), `backend="auto"` the fastest export present; windows, features and aggregation stay the same
(`ast_dora.backends`). With an exported backend this module imports no torch: decoding (PyAV), resampling
(PyAV), features (numpy) and the model (ONNX Runtime / OpenVINO) run in a process without PyTorch installed.

Streaming: `analyse_iter` yields a partial `SongAnalysis` after each batch of windows (`windows_done` of
`windows_planned`), so a caller can show the genre and the timeline of the windows done while the rest run;
`analyse` is its last value. Windows run coarse to fine (the middle one, then the middles of the halves, of the
quarters, ...: `song_windows.visiting_order`), so each partial result samples the whole song, not its intro; a
partial analysis holds its windows in time order and the final one is the same whatever the order.
`max_windows` analyses at most that many windows, evenly spread over the song (`windows_planned` of
`windows_total`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import (
    AUTO_ORDER,
    DEFAULT_BACKEND,
    ONNX_AUDIOSET_OUTPUT,
    ONNX_OUTPUT,
    ONNX_TAGS_OUTPUT,
    BackendError,
    TorchRunner,
    check_backend,
    export_command,
    get_backend,
    load_export_runner,
    torch_importable,
)
from .genre_classification.audio_decoding import AudioDecodeError, decode_with_av, resample_with_av
from .genre_classification.song_windows import (
    aggregate_windows,
    place_windows,
    seconds_to_samples,
    softmax,
    to_mono_float,
    visiting_order,
    window_batches,
)
from .hardware import cpu_has_fast_bf16
from .models import spec_for_config
from .models.factory import load_saved_config, model_windows
from .music_detection import (
    DEFAULT_MIN_MUSIC_PROBABILITY,
    NO_MUSIC_CHECK,
    MusicCheck,
    audioset_labels,
    check_min_music_probability,
    music_index,
    sigmoid,
)

logger = logging.getLogger(__name__)

MIN_SECONDS = 1.0
# Peak amplitude below which a recording counts as silent (-80 dBFS): there is no genre to hear.
SILENCE_PEAK = 1e-4


class InvalidAudioError(ValueError):
    """Audio that cannot be analysed; the message says why and what to do, fit to show to a user."""


class NotAudioError(InvalidAudioError):
    """A file FFmpeg cannot decode (not audio, corrupt, empty)."""


class SilentAudioError(InvalidAudioError):
    """Digital silence, or nearly."""


class TooShortAudioError(InvalidAudioError):
    """Shorter than `min_seconds`."""


class TooLongAudioError(InvalidAudioError):
    """Longer than `max_seconds`."""


@dataclass
class SongAnalysis:
    """What `GenreClassifier.analyse` returns: track probabilities, majority vote and the per-window timeline."""

    labels: list[str]
    probabilities: np.ndarray  # (num_labels,) mean of the window probabilities
    vote: str  # majority vote of the windows' top genres (ties broken by mean probability)
    window_probabilities: np.ndarray  # (num_windows, num_labels)
    window_starts: np.ndarray  # (num_windows,) seconds
    window_seconds: float
    duration: float  # seconds of audio analysed
    sampling_rate: int
    source: str | None = None  # the file, when there was one
    timings: dict[str, float] = field(default_factory=dict)  # seconds spent in decode / features / model
    # Windows the song has in all; `max_windows` analyses only `windows_planned` of them, and a partial analysis
    # (`analyse_iter`) holds the `windows_done` of those run so far (in time order).
    windows_total: int | None = None
    windows_planned: int | None = None
    # The AudioSet view of the same windows (`ast_dora.music_detection`); None for a model without it (ViT-hybrid).
    music: MusicCheck | None = None
    # An ensemble's answer (`GenreClassifier.ensemble`): its timeline is a common time grid, so the windows the
    # models analysed are counted here; `ensemble` holds "models", "weights" and the models' own "members" analyses.
    windows_analysed: int | None = None
    ensemble: dict[str, Any] | None = None
    # What the model computed in, as its runner reads it back: "fp32", "bf16", "int8/fp32", "int8/bf16".
    precision: str | None = None
    # A musicnn model's pretrained tags (`config.tag_labels`): mean over the windows of the tag head's sigmoid,
    # the network as pretrained whatever the genre training changed; None for the other models.
    tag_labels: list[str] | None = None
    tag_probabilities: np.ndarray | None = None

    def __post_init__(self):
        if self.windows_total is None:
            self.windows_total = len(self.window_starts)
        if self.windows_planned is None:
            self.windows_planned = self.windows_total

    @property
    def windows_done(self) -> int:
        return len(self.window_starts) if self.windows_analysed is None else self.windows_analysed

    @property
    def complete(self) -> bool:
        return self.windows_done == self.windows_planned

    @property
    def genre(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def is_music(self) -> bool | None:
        """Whether the AudioSet check says music (None without one): when False, `genre` is no answer."""
        return None if self.music is None else self.music.is_music

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    @property
    def window_ends(self) -> np.ndarray:
        # A song shorter than one window was zero-padded: its only window ends where the audio does.
        return np.minimum(self.window_starts + self.window_seconds, self.duration)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]

    def tags_top(self, k: int = 5) -> str | None:
        """The song's top pretrained tags, e.g. "rock 0.61, guitar 0.40, 80s 0.22" (None without tags)."""
        if self.tag_probabilities is None:
            return None
        order = np.argsort(-self.tag_probabilities, kind="stable")[:k]
        return ", ".join(f"{self.tag_labels[i]} {self.tag_probabilities[i]:.2f}" for i in order)

    def label_probabilities(self) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, self.probabilities, strict=True)}

    def to_dict(self, segments: bool = True) -> dict[str, Any]:
        """The JSON object of one song (`python -m ast_dora.predict --json`)."""
        result: dict[str, Any] = {
            "file": self.source,
            "genre": self.genre,
            "confidence": self.confidence,
            "probabilities": self.label_probabilities(),
            "vote": self.vote,
            "duration": self.duration,
            "windows_analysed": self.windows_done,
            "windows_total": self.windows_total,
            "precision": self.precision,
            **(self.music.to_dict() if self.music is not None else NO_MUSIC_CHECK),
            "tags_top": self.tags_top(),
        }
        if self.ensemble is not None:
            result["models"] = list(self.ensemble["models"])
            result["weights"] = list(self.ensemble["weights"])
            result["per_model"] = [
                {"model": name, **member.to_dict(segments=False)}
                for name, member in zip(self.ensemble["models"], self.ensemble["members"], strict=True)
            ]
        if segments:
            result["segments"] = [
                {
                    "start": round(float(start), 3),
                    "end": round(float(end), 3),
                    "probabilities": {label: float(p) for label, p in zip(self.labels, row, strict=True)},
                }
                for start, end, row in zip(
                    self.window_starts, self.window_ends, self.window_probabilities, strict=True
                )
            ]
        return result


# --------------------------------------------------------------------------------------------------------------
# Waveforms
# --------------------------------------------------------------------------------------------------------------


def _to_mono_float(audio: np.ndarray) -> np.ndarray:
    """Any 1-D/2-D int or float array -> mono float32 in [-1, 1] (`song_windows.to_mono_float`, the code the
    pipeline shipped with the model runs), its complaints as `InvalidAudioError`."""
    try:
        return to_mono_float(audio)
    except ValueError as error:
        raise InvalidAudioError(str(error)) from None


def _resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """FFmpeg's resampler (PyAV), the one decoding files uses."""
    return resample_with_av(waveform, int(source_rate), int(target_rate))


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


# --------------------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------------------


class GenreClassifier:
    """A trained genre model (either kind) with its feature extractor and window settings, ready for songs.

    Args:
        model: a loaded model (`load_trained_model`'s first value): ViT-hybrid or merged AST-DoRA; or a backend
            runner (`ast_dora.backends.OnnxRunner`, what `from_pretrained(..., backend="onnx")` builds).
        feature_extractor: its feature extractor.
        window_seconds: the window length the model was trained on (default: the `window_seconds` saved in its
            preprocessor_config.json, else the model type's default, 4 s for the ViT-hybrid, 10.24 s for AST).
        hop_seconds: the step between analysed windows; default `window_seconds`, windows back to back, so every
            second of the song is classified once. A smaller hop gives overlapping windows (a smoother timeline)
            for proportionally more work; training's hop is a data-augmentation setting and is not reused here.
        batch_size: windows per forward pass (default: the model spec's `inference_batch_size`, 32 for the
            ViT-hybrid, 6 for AST: large enough for efficient matmuls, small enough to bound activations).
        first_batch_size: windows in a song's first batch (default: the spec's `inference_first_batch_size`, 8
            for the ViT-hybrid, 2 for AST, at most `batch_size`): the first streamed result comes that much sooner.
        bf16: (torch models) `None` (default, `auto`) runs the model in bf16 (weights cast to bf16, forward under
            bf16 autocast) where it is faster than fp32: a GPU with bf16; on the CPU, where the measured probe
            (`hardware.bf16_is_faster("torch")`) says so. `True` forces bf16, `False` keeps fp32. The classifier owns
            `model`: it is moved to `device` and cast in place.
        device: (torch models) where the model runs (default: CUDA when available, else CPU).
        min_seconds / max_seconds: shorter (longer) audio is refused with `TooShortAudioError`
            (`TooLongAudioError`); `max_seconds=None` accepts any length.
        max_windows: analyse at most this many windows of a song, evenly spread over it (default: all); a
            long song then costs what a short one does, and its answer is a sample of it.
        music_check: (AST-DoRA models with the AudioSet branch) also compute AudioSet's view of every window and
            report `music_probability` / `is_music` (`ast_dora.music_detection`); default True.
        min_music_probability: the song is music when its AudioSet "Music" probability reaches this (default
            `DEFAULT_MIN_MUSIC_PROBABILITY`).
    """

    def __init__(
        self,
        model,
        feature_extractor,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        batch_size: int | None = None,
        bf16: bool | None = None,
        device=None,
        first_batch_size: int | None = None,
        min_seconds: float = MIN_SECONDS,
        max_seconds: float | None = None,
        name: str | None = None,
        max_windows: int | None = None,
        music_check: bool = True,
        min_music_probability: float = DEFAULT_MIN_MUSIC_PROBABILITY,
    ):
        # The model call is the backend's; everything else here is the same for every backend.
        if not (hasattr(model, "backend") and hasattr(model, "describe")):  # a torch model, not a runner
            self.runner = TorchRunner(model, device, bf16)
        else:
            if device is not None and model.device != str(device):
                raise BackendError(
                    f"The {model.backend} backend runs on {model.device}, not {device}: leave device "
                    "unset, or use backend='torch'."
                )
            self.runner = model
        self.backend = self.runner.backend
        self.model = self.runner.model  # the torch model (None for an exported one)
        self.device = self.runner.device
        self.bf16 = self.runner.bf16
        self.config = self.runner.config
        self.spec = spec_for_config(self.config)
        self.model_type = self.spec.name
        self.window_seconds = float(window_seconds or model_windows(feature_extractor, self.spec)[0])
        self.hop_seconds = float(hop_seconds or self.window_seconds)
        self.batch_size = int(batch_size or self.spec.inference_batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        first_batch_size = first_batch_size or self.spec.inference_first_batch_size or self.batch_size
        if first_batch_size < 1:
            raise ValueError(f"first_batch_size must be at least 1, got {first_batch_size}")
        self.first_batch_size = min(int(first_batch_size), self.batch_size)
        self.min_seconds = float(min_seconds)
        self.max_seconds = max_seconds
        if max_windows is not None and int(max_windows) < 1:
            raise ValueError(f"max_windows must be at least 1 (or None for all windows), got {max_windows}")
        self.max_windows = None if max_windows is None else int(max_windows)
        self.name = name
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.window = seconds_to_samples(self.window_seconds, self.sampling_rate)
        self.hop = seconds_to_samples(self.hop_seconds, self.sampling_rate)
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        # Music detection: the AudioSet classes, when the model (or its export) computes them.
        labels = audioset_labels(self.config)
        self.audioset_labels = labels if labels and ONNX_AUDIOSET_OUTPUT in self.runner.output_names else None
        if self.audioset_labels is not None:
            music_index(self.audioset_labels)  # a clear error now if there is no "Music" class
        self.music_check = bool(music_check) and self.audioset_labels is not None
        tags = getattr(self.config, "tag_labels", None)
        self.tag_labels = list(tags) if tags and ONNX_TAGS_OUTPUT in self.runner.output_names else None
        self.min_music_probability = check_min_music_probability(min_music_probability)
        # The spec's batched numpy features when the model has them (AST's fbank), else the feature extractor.
        make_features = self.spec.batched_features
        self._batched_features = make_features(feature_extractor) if make_features is not None else None

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        hub_kwargs: dict | None = None,
        backend: str = DEFAULT_BACKEND,
        onnx_precision: str = "auto",
        threads: int | None = None,
        **kwargs,
    ) -> GenreClassifier:
        """Load a model this project trained (local `output_dir` or Hub id; an adapter folder is merged).

        `backend="torch"` runs the transformers model; `backend="onnx"` runs its ONNX export in ONNX Runtime
        (`onnx/model_quantized.onnx` when present, else `onnx/model.onnx`), `backend="openvino"` its OpenVINO
        export (`openvino/openvino_model_int8.xml` when present, else `openvino/openvino_model.xml`), both without
        loading the PyTorch weights or importing torch; `onnx_precision` "int8" / "fp32" picks one file of
        either; `threads` sizes their thread pool (default: PyTorch's thread count, see `onnx_threads`).
        `backend="auto"` takes the fastest export the model has (`ast_dora.backends.AUTO_ORDER`), falling back
        to the next, with one log line, when one does not load on this CPU, and to torch when none does (on an
        install without torch, a `BackendError` naming the export to write). `bf16` (in `kwargs`) holds for every
        backend: False computes fp32, True bf16 where the runtime can, None what the measured probe finds faster
        (`runner.precision` says what it computes in). The windows come with the model (`window_seconds` in its
        preprocessor_config.json) unless given here.
        `hub_kwargs` (revision, token, cache_dir) go to `from_pretrained`; `kwargs` to `__init__`.
        """
        path_or_id = str(path_or_id)
        hub_kwargs = hub_kwargs or {}
        kwargs.setdefault("name", path_or_id)
        check_backend(backend)
        if backend == "auto" or get_backend(backend).exported:
            config, feature_extractor = load_saved_config(path_or_id, **hub_kwargs)  # no torch imported
            # The precision setting holds for every backend: an exported runner compiles with it.
            runner = load_export_runner(
                backend,
                path_or_id,
                config,
                precision=onnx_precision,
                threads=threads,
                bf16=kwargs.get("bf16"),
                **hub_kwargs,
            )
            if runner is not None:
                return cls(runner, feature_extractor, **{k: v for k, v in kwargs.items() if k != "bf16"})
            if not torch_importable():
                # A torch-free install and no export that loads: one line naming what is missing, no traceback.
                best = AUTO_ORDER[0][0] if AUTO_ORDER else DEFAULT_BACKEND
                raise BackendError(
                    f"{path_or_id} has no exported copy that loads here, and PyTorch (which runs a model without "
                    f"one) is not installed: export it with `{export_command(path_or_id, best)}`, or install torch."
                )
        elif not torch_importable():
            raise BackendError(
                f"backend={backend!r} needs PyTorch, which is not installed: install it, or export "
                f"the model (`{export_command(path_or_id, AUTO_ORDER[0][0])}`) and use "
                "backend='auto'."
            )
        from .models.factory import load_trained_model

        model, feature_extractor = load_trained_model(path_or_id, **hub_kwargs)
        return cls(model, feature_extractor, **kwargs)

    def close(self) -> None:
        """Release the runner's resources (an exported runner's session or compiled model; a torch model)."""
        self.runner.close()

    def __enter__(self) -> GenreClassifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def precision(self) -> str:
        """What the model computes in, as the runner reads it back ("fp32", "bf16", "int8/fp32", "int8/bf16")."""
        return self.runner.precision

    @property
    def features_implementation(self) -> str:
        """What computes the features: the spec's batched numpy features (e.g. `ASTFbankFeatures`) or the feature
        extractor's own class."""
        return type(self._batched_features or self.feature_extractor).__name__

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name or self.model_type!r}, model_type={self.model_type}, "
            f"window={self.window_seconds}s/{self.hop_seconds}s @ {self.sampling_rate} Hz, "
            f"batch_size={self.first_batch_size} then {self.batch_size}, backend={self.runner.describe()})"
        )

    @staticmethod
    def ensemble(
        classifiers: list[GenreClassifier], weights: list[float] | None = None, names: list[str] | None = None
    ):
        """Several classifiers (any models, any backends) answering together: the song's probabilities are the
        weighted mean (equal weights by default) of theirs; see `ast_dora.ensemble.EnsembleClassifier`."""
        from .ensemble import EnsembleClassifier

        return EnsembleClassifier(classifiers, weights=weights, names=names)

    # ---- audio in ----

    def load_audio(
        self, audio: str | os.PathLike | bytes | np.ndarray, sampling_rate: int | None = None
    ) -> np.ndarray:
        """A path / file bytes (decoded by FFmpeg) or an array at `sampling_rate` -> mono float32 at the model's rate."""
        if isinstance(audio, (str, os.PathLike, bytes)):
            if isinstance(audio, (str, os.PathLike)) and not Path(audio).is_file():
                raise NotAudioError(f"{audio}: no such file.")
            try:
                return decode_with_av(audio if isinstance(audio, bytes) else str(audio), self.sampling_rate)[
                    0
                ]
            except AudioDecodeError as error:
                name = "the data" if isinstance(audio, bytes) else Path(audio).name
                # FFmpeg names the full (often temporary) path; the file's name is what the user knows.
                reason = str(error) if isinstance(audio, bytes) else str(error).replace(str(audio), name)
                raise NotAudioError(
                    f"Could not read {name} as audio ({reason}). Use a file FFmpeg decodes, e.g. wav, mp3, flac, "
                    "ogg or m4a."
                ) from error
        if sampling_rate is None:
            raise ValueError("An array needs its sampling_rate: analyse(waveform, sampling_rate=44100).")
        if _is_torch_tensor(audio):
            audio = audio.detach().cpu().numpy()
        return _resample(_to_mono_float(audio), int(sampling_rate), self.sampling_rate)

    def check_waveform(self, waveform: np.ndarray) -> None:
        duration = len(waveform) / self.sampling_rate
        if duration < self.min_seconds:
            raise TooShortAudioError(
                f"The audio is {duration:.2f} s long; at least {self.min_seconds:g} s is needed to recognise a "
                f"genre. Use a longer clip (the model listens to {self.window_seconds:g}-s windows)."
            )
        if self.max_seconds is not None and duration > self.max_seconds:
            raise TooLongAudioError(
                f"The audio is {_format_duration(duration)} long; this service accepts up to "
                f"{_format_duration(self.max_seconds)}. Cut it shorter or run `python -m ast_dora.predict` locally."
            )
        # max and -min rather than max(abs): no song-sized temporary
        if max(float(waveform.max()), -float(waveform.min())) < SILENCE_PEAK:
            raise SilentAudioError(
                "The audio is silent (its peak is below -80 dBFS), so there is no genre to recognise. "
                "Check the recording level or pick another file."
            )

    # ---- model ----

    def features(self, windows: np.ndarray) -> np.ndarray:
        """(batch, window samples) float32 -> the model's `input_values` for those windows (float32 numpy)."""
        # Features are computed exactly as in training, in fp32 numpy, never under the model's bf16 autocast.
        if self._batched_features is not None:
            return self._batched_features(windows)
        output = self.feature_extractor(list(windows), sampling_rate=self.sampling_rate, return_tensors="np")
        return np.asarray(output["input_values"], dtype=np.float32)

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """(batch, window samples) -> window probabilities (batch, num_labels), float64."""
        return self._probabilities(self.features(windows))

    def _probabilities(self, input_values: np.ndarray) -> np.ndarray:
        return softmax(self.runner(input_values))

    def _outputs(self, input_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(genre probabilities (batch, labels), AudioSet probabilities (batch, classes) or None, tag
        probabilities (batch, tags) or None)."""
        if not self.music_check and self.tag_labels is None:
            return self._probabilities(input_values), None, None
        names = [
            ONNX_OUTPUT,
            *([ONNX_AUDIOSET_OUTPUT] if self.music_check else []),
            *([ONNX_TAGS_OUTPUT] if self.tag_labels is not None else []),
        ]
        outputs = self.runner.outputs(input_values, names)
        audioset, tags = (
            sigmoid(outputs[name]) if name in outputs else None
            for name in (ONNX_AUDIOSET_OUTPUT, ONNX_TAGS_OUTPUT)
        )
        return softmax(outputs[ONNX_OUTPUT]), audioset, tags

    def analyse(
        self,
        audio: str | os.PathLike | bytes | np.ndarray,
        sampling_rate: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_windows: int | None = None,
    ) -> SongAnalysis:
        """Classify a whole song.

        Args:
            audio: a file path (anything FFmpeg decodes), the bytes of a file, or a waveform array of shape
                `(samples,)`, `(samples, channels)` or `(channels, samples)` (int PCM or float in [-1, 1]).
            sampling_rate: the array's rate (required for arrays; files carry theirs).
            progress: called as `progress(windows_done, windows_planned)` after every batch.
            max_windows: at most this many windows, evenly spread (default: the classifier's `max_windows`).

        Raises:
            InvalidAudioError: not audio (`NotAudioError`), silent, too short or too long; the message is meant
                for the user.
        """
        # The last partial analysis of the stream is the whole one: the two can never differ.
        for analysis in self.analyse_iter(audio, sampling_rate, max_windows=max_windows):
            if progress is not None:
                progress(analysis.windows_done, analysis.windows_planned)
        return analysis

    def analyse_iter(
        self,
        audio: str | os.PathLike | bytes | np.ndarray,
        sampling_rate: int | None = None,
        max_windows: int | None = None,
    ) -> Iterator[SongAnalysis]:
        """Classify a song batch by batch: yields a `SongAnalysis` of the windows done so far after every batch
        (`windows_done` of `windows_planned`; genre, vote and timeline over those windows, in time order), the last
        one complete. Windows run coarse to fine (`song_windows.visiting_order`), so every partial result is
        spread over the whole song.

        Same arguments and errors as `analyse`; the audio is decoded and checked before the first yield.
        """
        import time

        start = time.perf_counter()
        waveform = self.load_audio(audio, sampling_rate)
        self.check_waveform(waveform)
        decoded = time.perf_counter()
        duration = len(waveform) / self.sampling_rate
        # Windows, batches and the song's answer: `song_windows`, the code the pipeline shipped with the model runs.
        waveform, starts = place_windows(waveform, self.window, self.hop)
        max_windows = self.max_windows if max_windows is None else max_windows
        if max_windows is not None and max_windows < 1:
            raise ValueError(f"max_windows must be at least 1 (or None for all windows), got {max_windows}")
        order = visiting_order(len(starts), max_windows)
        probabilities = np.empty((len(order), len(self.labels)))
        audioset = np.empty((len(order), len(self.audioset_labels))) if self.music_check else None
        tags = np.empty((len(order), len(self.tag_labels))) if self.tag_labels is not None else None
        feature_seconds = model_seconds = 0.0
        # A short first batch (the first result sooner), then full batches.
        batches = window_batches(
            waveform, starts[order], self.window, self.batch_size, first_batch_size=self.first_batch_size
        )
        for first, windows in batches:
            done = first + len(windows)
            tick = time.perf_counter()
            input_values = self.features(windows)
            tock = time.perf_counter()
            probabilities[first:done], batch_audioset, batch_tags = self._outputs(input_values)
            if audioset is not None:
                audioset[first:done] = batch_audioset
            if tags is not None:
                tags[first:done] = batch_tags
            feature_seconds += tock - tick
            model_seconds += time.perf_counter() - tock
            in_time = np.argsort(order[:done], kind="stable")  # the windows done, in time order (copies)
            yield self._song_analysis(
                audio,
                probabilities[:done][in_time],
                starts[order[:done][in_time]],
                len(starts),
                duration,
                {"decode": decoded - start, "features": feature_seconds, "model": model_seconds},
                windows_planned=len(order),
                audioset=None if audioset is None else audioset[:done][in_time],
                tags=None if tags is None else tags[:done].mean(axis=0),
            )

    def _song_analysis(
        self,
        audio,
        probabilities: np.ndarray,
        starts: np.ndarray,
        windows_total: int,
        duration: float,
        timings: dict[str, float],
        windows_planned: int | None = None,
        audioset: np.ndarray | None = None,
        tags: np.ndarray | None = None,
    ) -> SongAnalysis:
        mean_probabilities, vote = aggregate_windows(probabilities)
        return SongAnalysis(
            labels=list(self.labels),
            probabilities=mean_probabilities,
            vote=self.labels[vote],
            window_probabilities=probabilities,
            window_starts=starts / self.sampling_rate,
            window_seconds=self.window_seconds,
            duration=duration,
            sampling_rate=self.sampling_rate,
            source=str(audio) if isinstance(audio, (str, os.PathLike)) else None,
            timings=timings,
            windows_total=windows_total,
            windows_planned=windows_planned,
            music=None
            if audioset is None
            else MusicCheck(list(self.audioset_labels), audioset, self.min_music_probability),
            precision=self.runner.precision,
            tag_labels=None if tags is None else list(self.tag_labels),
            tag_probabilities=tags,
        )

    analyze = analyse


def _format_duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


__all__ = [
    "GenreClassifier",
    "InvalidAudioError",
    "NotAudioError",
    "SilentAudioError",
    "SongAnalysis",
    "TooLongAudioError",
    "TooShortAudioError",
    "cpu_has_fast_bf16",
]
