"""`pipeline("audio-classification")` for this project's genre models: it hears the whole song.

    from transformers import pipeline

    classifier = pipeline("audio-classification", model="me/gtzan-vit", revision=COMMIT, trust_remote_code=True)
    classifier("song.mp3")                        # [{"label": "rock", "score": 0.71}, ...] (top 5)
    classifier("song.mp3", top_k=3, batch_size=16)
    classifier({"raw": waveform, "sampling_rate": 44100}, return_segments=True)  # + per-window probabilities

Transformers' own `AudioClassificationPipeline` gives the feature extractor the whole input, which keeps the
first window (4 s of a ViT-hybrid song, 10.24 s of an AST one) and drops the rest. This pipeline does what the
project's song analysis does: the song is cut into the model's windows (`window_seconds`, saved in
preprocessor_config.json; back to back unless `hop_seconds` is given, the last window ending at the end of the
song, a song shorter than one window zero-padded), the windows are classified `batch_size` at a time, and the
answer is the mean of the windows' probabilities (`song_windows.py`, the same code the project runs).

Inputs: a file path (or URL, or the bytes of a file; decoded by PyAV when installed, as the project decodes
(`audio_decoding.py`), else by torchcodec, else by the `ffmpeg` command), a `{"raw" (or "array"): waveform, "sampling_rate": rate}`
dict, or a waveform at the model's rate (`feature_extractor.sampling_rate`). Waveforms may be `(samples,)`,
`(samples, channels)` or `(channels, samples)`, float in [-1, 1] or int PCM; channels are averaged and other
rates resampled with FFmpeg's resampler through PyAV, as in the project's inference (torchaudio without PyAV).

Remote code: saved next to the weights of every model the project writes (config.json's `custom_pipelines`), so
it imports only numpy, torch, transformers, `song_windows.py` and `audio_decoding.py` (PyAV itself only when
installed).
"""

import importlib
import importlib.util
import os
import shutil

import numpy as np
import torch
from transformers.pipelines.audio_classification import ffmpeg_read
from transformers.pipelines.base import ChunkPipeline
from transformers.utils import is_torchaudio_available, is_torchcodec_available

from .audio_decoding import AudioDecodeError, decode_with_av, resample_with_av
from .song_windows import (
    aggregate_windows,
    place_windows,
    seconds_to_samples,
    softmax,
    to_mono_float,
    window_batches,
)

PIPELINE_TASK = "audio-classification"
# Windows per forward pass when the caller gives no `batch_size`: large enough for efficient matmuls, small
# enough to bound activations (an AST window is 1214 tokens).
DEFAULT_BATCH_SIZE = 8
DEFAULT_TOP_K = 5  # as transformers' AudioClassificationPipeline
_NOT_GIVEN = object()  # `top_k=None` is a request (all genres), so "not given" needs its own value


def _resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if int(source_rate) == int(target_rate):
        return waveform
    if importlib.util.find_spec("av") is not None:
        return resample_with_av(waveform, source_rate, target_rate)
    if not is_torchaudio_available():
        raise ImportError(
            f"The audio is at {source_rate} Hz and the model takes {target_rate} Hz: resampling needs PyAV "
            "(`pip install av`) or torchaudio, or pass audio at the model's rate."
        )
    functional = importlib.import_module("torchaudio.functional")
    return functional.resample(torch.from_numpy(waveform), int(source_rate), int(target_rate)).numpy()


def _decode(source, sampling_rate: int) -> np.ndarray:
    """A path or the bytes of an audio file -> mono float32 at `sampling_rate`.

    PyAV (FFmpeg's libraries inside its wheels) when installed, exactly as the project decodes
    (`audio_decoding.py`); else torchcodec (the system's FFmpeg), which resamples with the same libswresample and
    whose channels are averaged too; else the `ffmpeg` command (its downmix of stereo is louder than the mean, so
    numbers differ slightly).
    """
    name = "the data" if isinstance(source, bytes) else os.path.basename(str(source))
    if importlib.util.find_spec("av") is not None:
        try:
            return decode_with_av(source, sampling_rate)[0]
        except AudioDecodeError as error:
            raise ValueError(f"Could not read {name} as audio ({error}).") from error
    decoders = None
    if is_torchcodec_available():
        try:
            decoders = importlib.import_module("torchcodec.decoders")
        except (
            ImportError,
            OSError,
            RuntimeError,
        ):  # installed, but the system's FFmpeg libraries are missing
            decoders = None
    if decoders is not None:
        try:
            samples = decoders.AudioDecoder(source, sample_rate=int(sampling_rate)).get_all_samples().data
        except Exception as error:  # torchcodec raises RuntimeError / ValueError with FFmpeg's message
            raise ValueError(f"Could not read {name} as audio ({type(error).__name__}: {error}).") from error
        if samples.ndim != 2 or samples.shape[-1] == 0:
            raise ValueError("The audio has no samples.")
        return (
            (samples[0] if samples.shape[0] == 1 else samples.mean(dim=0))
            .numpy()
            .astype(np.float32, copy=False)
        )
    if shutil.which("ffmpeg") is None:
        raise ValueError(f"Cannot decode {name}: no audio decoder is installed. Install PyAV: pip install av")
    if not isinstance(source, bytes):
        with open(source, "rb") as file:
            source = file.read()
    return ffmpeg_read(source, int(sampling_rate))


class GenreClassificationPipeline(ChunkPipeline):
    """Whole-song genre classification: the top genres of the mean window probability.

    Call arguments (also accepted when building the pipeline):
        top_k (`int`, defaults to 5): genres returned, most probable first; `None` returns all of them.
        batch_size (`int`, defaults to 8): windows per forward pass.
        return_segments (`bool`, defaults to `False`): return a dict instead of the list: `predictions` (the
            list), `vote` (majority vote of the windows' top genres, ties broken by mean probability), `duration`
            (seconds of audio) and `segments`, one `{"start", "end", "probabilities": {genre: p}}` per window.
        window_seconds (`float`): the window (default: `window_seconds` saved in preprocessor_config.json).
        hop_seconds (`float`): seconds between window starts (default: the window, windows back to back).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("top_k", DEFAULT_TOP_K)
        # The windows of one song are batched in `preprocess`; the base class's `batch_size` (batches of
        # whole inputs, padded by the feature extractor) is not used.
        self._window_batch_size = kwargs.pop("batch_size", None) or DEFAULT_BATCH_SIZE
        super().__init__(*args, **kwargs)

    def __call__(self, inputs, batch_size: int | None = None, **kwargs):
        """Classify one song (path, URL, bytes, dict or waveform) or a list of them; see the class docstring."""
        return super().__call__(inputs, batch_size=1, window_batch_size=batch_size, **kwargs)

    def _sanitize_parameters(
        self,
        top_k=_NOT_GIVEN,
        return_segments=None,
        window_seconds=None,
        hop_seconds=None,
        window_batch_size=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}; it takes top_k, batch_size, "
                "return_segments, window_seconds and hop_seconds."
            )
        preprocess, postprocess = {}, {}
        for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
            if value is not None:
                if float(value) <= 0:
                    raise ValueError(f"{name} must be positive, got {value}")
                preprocess[name] = float(value)
        if window_batch_size is not None:
            if int(window_batch_size) < 1:
                raise ValueError(f"batch_size must be at least 1, got {window_batch_size}")
            preprocess["batch_size"] = int(window_batch_size)
        num_labels = self.model.config.num_labels
        if top_k is not _NOT_GIVEN:
            if top_k is not None and int(top_k) < 1:
                raise ValueError(
                    f"top_k must be at least 1 (or None for all {num_labels} genres), got {top_k}"
                )
            postprocess["top_k"] = num_labels if top_k is None else min(int(top_k), num_labels)
        if return_segments is not None:
            postprocess["return_segments"] = bool(return_segments)
        return preprocess, {}, postprocess

    # ---- audio in ----

    def _waveform(self, inputs) -> np.ndarray:
        """Any accepted input -> mono float32 at the model's rate."""
        sampling_rate = int(self.feature_extractor.sampling_rate)
        if isinstance(inputs, os.PathLike):
            inputs = os.fspath(inputs)
        if isinstance(inputs, str):
            if inputs.startswith(("http://", "https://")):
                from huggingface_hub.utils import httpx

                inputs = httpx.get(inputs, follow_redirects=True).content
            elif not os.path.isfile(inputs):
                raise ValueError(f"{inputs}: no such file.")
        if isinstance(inputs, (str, bytes)):
            return _decode(inputs, sampling_rate)
        source_rate = sampling_rate
        if isinstance(inputs, dict):
            if "sampling_rate" not in inputs or not ("raw" in inputs or "array" in inputs):
                raise ValueError(
                    'A dict input needs the waveform under "raw" (or "array") and its rate under "sampling_rate", '
                    'e.g. {"raw": waveform, "sampling_rate": 44100}.'
                )
            source_rate = int(inputs["sampling_rate"])
            inputs = inputs["raw"] if "raw" in inputs else inputs["array"]
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().numpy()
        if not isinstance(inputs, np.ndarray):
            raise TypeError(
                f"Expected a file path, the bytes of a file, a waveform array or a dict with one; got {type(inputs).__name__}."
            )
        return _resample(to_mono_float(inputs), source_rate, sampling_rate)

    def _window_seconds(self, window_seconds):
        window_seconds = window_seconds or getattr(self.feature_extractor, "window_seconds", None)
        if not window_seconds:
            raise ValueError(
                "This model's preprocessor_config.json has no window_seconds (the window it was trained on): pass "
                "window_seconds=... to the pipeline."
            )
        return float(window_seconds)

    # ---- the pipeline's three steps ----

    def preprocess(self, inputs, window_seconds=None, hop_seconds=None, batch_size=None):
        sampling_rate = int(self.feature_extractor.sampling_rate)
        waveform = self._waveform(inputs)
        duration = len(waveform) / sampling_rate
        window_seconds = self._window_seconds(window_seconds)
        window = seconds_to_samples(window_seconds, sampling_rate)
        hop = seconds_to_samples(hop_seconds or window_seconds, sampling_rate)
        waveform, starts = place_windows(waveform, window, hop)
        for first, windows in window_batches(waveform, starts, window, batch_size or self._window_batch_size):
            features = self.feature_extractor(list(windows), sampling_rate=sampling_rate, return_tensors="pt")
            yield {
                "input_values": features["input_values"].to(self.dtype),
                "window_starts": starts[first : first + len(windows)] / sampling_rate,
                "window_seconds": window_seconds,
                "duration": duration,
                "is_last": first + len(windows) == len(starts),
            }

    def _forward(self, model_inputs):
        info = {key: model_inputs[key] for key in ("window_starts", "window_seconds", "duration", "is_last")}
        logits = self.model(input_values=model_inputs["input_values"]).logits
        return {"logits": logits.float(), **info}

    def postprocess(self, model_outputs, top_k=DEFAULT_TOP_K, return_segments=False):
        config = self.model.config
        labels = [config.id2label[i] for i in range(config.num_labels)]
        probabilities = softmax(torch.cat([output["logits"] for output in model_outputs]).numpy())
        mean, vote = aggregate_windows(probabilities)
        order = np.argsort(-mean, kind="stable")[:top_k]
        predictions = [{"label": labels[i], "score": float(mean[i])} for i in order]
        if not return_segments:
            return predictions
        duration = float(model_outputs[0]["duration"])
        window_seconds = float(model_outputs[0]["window_seconds"])
        starts = np.concatenate([output["window_starts"] for output in model_outputs])
        # A song shorter than one window was zero-padded: its only window ends where the audio does.
        ends = np.minimum(starts + window_seconds, duration)
        return {
            "predictions": predictions,
            "vote": labels[vote],
            "duration": duration,
            "segments": [
                {
                    "start": float(start),
                    "end": float(end),
                    "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
                }
                for start, end, row in zip(starts, ends, probabilities, strict=True)
            ],
        }


__all__ = ["DEFAULT_BATCH_SIZE", "GenreClassificationPipeline", "PIPELINE_TASK"]
