"""Waveform -> normalised log-mel image for the ViT-hybrid genre classifier.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only numpy and transformers (and scipy's FFT when it is installed). It is
numpy only (transformers' convention for feature extractors): song analysis on an exported model runs it without torch installed.
"""

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

try:  # scipy's pocketfft computes float32 FFTs in float32, about 3x faster than numpy's here; numpy without it
    from scipy import fft as _fft
except ImportError:  # pragma: no cover (scipy is a dependency of the project, not of this remote code)
    _fft = np.fft
try:  # installed with scikit-learn (a dependency of the project); without it BLAS keeps its own threads
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

# Windows featurised together: bounds peak memory (~1 MB of intermediates per 4-s window) for big batches.
_CHUNK_WINDOWS = 64
# STFT frames per block: the block's frames, spectrum and squares stay in cache.
_ROW_BLOCK = 256
# Groups of adjacent mel filters; each group multiplies only the FFT bins it covers (the bank is ~98% zeros).
_MEL_BANDS = 8
# The band matmuls are small (256 x <= 372 x 16): run on one BLAS thread. Threaded OpenBLAS on these shapes took
# 1-11 s instead of 0.04 s for a 3-minute song on a busy 2-core machine (docs/results.md, "ViT-hybrid features").
_BLAS_CONTROLLER = None
# Attributes computed from the others in `__init__`; never serialised.
_DERIVED = ("mel_filters", "window", "_mel_bands")


class GenreViTHybridFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns mono waveform windows into the `(batch, 1, 216, 144)` images the ViT-hybrid consumes, reproducing the
    librosa pipeline of the published notebook in batched numpy:

    pad/truncate to `window_seconds` -> STFT (Hann, centred, `pad_mode` padding) -> power -> Slaney mel filter bank
    -> dB (`10 log10`, ref = per-window max, `top_db`, `amin`) -> per-window min-max to [0, 1] -> bilinear resize to
    `image_size` (mel axis, time axis).

    Windowing a track is the data layer's job; this class sees one window per input and zero-pads or truncates it.

    Args:
        sampling_rate (`int`, defaults to 22050): expected input rate; other rates are rejected, not resampled.
        window_seconds (`float`, defaults to 4.0): window length; inputs are padded/truncated to it.
        n_fft (`int`, defaults to 2048): FFT size (and Hann window length).
        hop_length (`int`, defaults to 64): STFT hop in samples.
        num_mel_bins (`int`, defaults to 128): mel filters.
        min_frequency (`float`, defaults to 0.0) / max_frequency (`float`, defaults to `sampling_rate / 2`): mel range.
        top_db (`float`, defaults to 80.0): dynamic range kept below the window's peak.
        amin (`float`, defaults to 1e-10): floor of the power before the log.
        center (`bool`, defaults to `True`) / pad_mode (`str`, defaults to `"reflect"`): STFT framing.
        image_size (`tuple[int, int]`, defaults to `(216, 144)`): output (mel, time) size.
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        sampling_rate: int = 22050,
        window_seconds: float = 4.0,
        n_fft: int = 2048,
        hop_length: int = 64,
        num_mel_bins: int = 128,
        min_frequency: float = 0.0,
        max_frequency: float | None = None,
        top_db: float | None = 80.0,
        amin: float = 1e-10,
        center: bool = True,
        pad_mode: str = "reflect",
        image_size: Sequence[int] = (216, 144),
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        kwargs.pop("feature_size", None)
        super().__init__(
            feature_size=1,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.window_seconds = window_seconds
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_mel_bins = num_mel_bins
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.top_db = top_db
        self.amin = amin
        self.center = center
        self.pad_mode = pad_mode
        self.image_size = tuple(int(s) for s in image_size)
        # Derived state; `to_dict` drops it so the JSON stays small and a reload recomputes it.
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=min_frequency,
            max_frequency=max_frequency if max_frequency is not None else sampling_rate / 2,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        ).T.astype(np.float32)  # (num_mel_bins, n_fft // 2 + 1), ready to left-multiply the power spectrum
        # librosa's Hann is scipy's periodic ("fftbins") window.
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
        self._mel_bands = self._build_mel_bands()

    @property
    def num_samples(self) -> int:
        return int(round(self.window_seconds * self.sampling_rate))

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for key in _DERIVED:
            output.pop(key, None)
        return output

    def _to_batch(self, raw_speech) -> np.ndarray:
        """Any accepted input -> float32 (batch, num_samples), zero-padded or truncated per row."""
        n = self.num_samples
        if hasattr(raw_speech, "ndim") and raw_speech.ndim in (1, 2):
            batch = _as_float32(raw_speech)
            batch = batch[None] if batch.ndim == 1 else batch
            batch = batch[:, :n]
            if batch.shape[1] < n:
                batch = np.pad(batch, ((0, 0), (0, n - batch.shape[1])), constant_values=self.padding_value)
            return np.ascontiguousarray(batch)
        if isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0:
            if not (isinstance(raw_speech[0], (list, tuple)) or hasattr(raw_speech[0], "ndim")):
                return self._to_batch(np.asarray(raw_speech, dtype=np.float32))  # one waveform as a list
            batch = np.full((len(raw_speech), n), float(self.padding_value), dtype=np.float32)
            for row, wave in zip(batch, raw_speech, strict=True):
                wave = _as_float32(wave)
                if wave.ndim != 1:
                    raise ValueError(
                        f"Each waveform must be 1-D (mono), got shape {tuple(wave.shape)}; downmix first."
                    )
                wave = wave[:n]
                row[: wave.shape[0]] = wave
            return batch
        raise ValueError(
            "raw_speech must be a 1-D waveform, a 2-D (batch, samples) array/tensor or a non-empty list of 1-D "
            f"waveforms; got {type(raw_speech).__name__}"
            + (f" with shape {tuple(raw_speech.shape)}" if hasattr(raw_speech, "shape") else "")
        )

    def _mel_power(self, waves: np.ndarray) -> np.ndarray:
        """(B, samples) -> mel power (B, frames, num_mel_bins): centred STFT (`pad_mode` padding) -> |.|^2 -> mel.

        Every window's padded signal starts on a hop boundary of one flat buffer, so all frames of the batch are
        one strided view, processed in cache-sized row blocks; the sparse mel bank runs as a few dense band
        matmuls instead of one mostly-zero matmul.
        """
        batch, length = waves.shape
        n_fft, hop = self.n_fft, self.hop_length
        pad = n_fft // 2 if self.center else 0
        padded = length + 2 * pad
        if padded < n_fft:
            raise ValueError(
                f"window of {length} samples is shorter than n_fft={n_fft} (center={self.center})"
            )
        num_frames = 1 + (padded - n_fft) // hop
        row = hop * -(-padded // hop)  # per-window stride in the flat buffer, a multiple of the hop
        flat = np.zeros(batch * row + n_fft, dtype=np.float32)
        rows = flat[: batch * row].reshape(batch, row)
        if pad:
            mode = "constant" if self.pad_mode == "constant" else self.pad_mode
            rows[:, :padded] = np.pad(waves, ((0, 0), (pad, pad)), mode=mode)
        else:
            rows[:, :padded] = waves
        # Frame i of the view starts at sample i * hop; window b's frames are rows b * row / hop + t, and the
        # few frames straddling two windows are computed and dropped.
        total = batch * row // hop
        frames = np.lib.stride_tricks.as_strided(
            flat, (total, n_fft), (hop * flat.itemsize, flat.itemsize), writeable=False
        )
        mel = np.empty((total, self.num_mel_bins), dtype=np.float32)
        # One thread: measured on 2 cores, a thread per core over the blocks was twice as slow (the FFT is
        # memory-bound and BLAS brings threads of its own).
        for start in range(0, total, _ROW_BLOCK):
            block = frames[start : start + _ROW_BLOCK] * self.window
            spectrum = _fft.rfft(block)
            power = np.square(spectrum.real)
            power += np.square(spectrum.imag)
            out = mel[start : start + len(block)]
            for lo, hi, first, last, weights in self._mel_bands:
                np.matmul(power[:, lo:hi], weights, out=out[:, first:last])
        return mel.reshape(batch, row // hop, self.num_mel_bins)[:, :num_frames]

    def _build_mel_bands(self) -> list[tuple[int, int, int, int, np.ndarray]]:
        """Split the filter bank into groups of adjacent filters with the FFT bins each group touches."""
        bands = []
        step = -(-self.num_mel_bins // _MEL_BANDS)
        for first in range(0, self.num_mel_bins, step):
            last = min(first + step, self.num_mel_bins)
            used = np.flatnonzero(self.mel_filters[first:last].any(axis=0))
            lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
            weights = np.ascontiguousarray(self.mel_filters[first:last, lo:hi].T)  # (hi - lo, last - first)
            bands.append((lo, hi, first, last, weights))
        return bands

    def _extract(self, waves: np.ndarray) -> np.ndarray:
        """(B, samples) float32 -> (B, 1, H, W) float32 in [0, 1]."""
        mel = self._mel_power(waves)  # (B, frames, mel)

        # power_to_db(ref=max, amin, top_db) per window, as librosa, then min-max to [0, 1]. The reference (the
        # window's peak) and the factor 10 cancel in the min-max, so the image is log10(power) clipped at
        # `top_db` / 10 below its peak; and min-max is affine per window, which commutes with the bilinear resize
        # (its weights sum to 1): it is applied to the resized image, 7x smaller.
        log_mel = np.log10(np.maximum(mel, np.float32(self.amin), out=mel), out=mel)
        high = log_mel.max(axis=(1, 2), keepdims=True)
        if self.top_db is not None:
            np.maximum(log_mel, high - np.float32(self.top_db / 10.0), out=log_mel)
        low = log_mel.min(axis=(1, 2), keepdims=True)
        span = high - low

        # Bilinear resizing (half-pixel centres, no antialiasing: torch's `interpolate(mode="bilinear",
        # align_corners=False)`) is separable: two taps per output along time, then along mel, (mel, time) out.
        height, width = self.image_size
        left, right, fraction = _bilinear_taps(log_mel.shape[1], width)
        resized = (
            log_mel[:, left] * (1 - fraction)[:, None] + log_mel[:, right] * fraction[:, None]
        )  # (B, W, mel)
        left, right, fraction = _bilinear_taps(log_mel.shape[2], height)
        resized = resized[:, :, left] * (1 - fraction) + resized[:, :, right] * fraction  # (B, W, H)
        resized = resized.transpose(0, 2, 1)
        # A silent window is constant (span 0): map it to zeros instead of 0/0.
        resized -= low
        resized /= np.where(span > 0, span, np.float32(1.0))
        np.clip(resized, 0.0, 1.0, out=resized)  # the resize's rounding may step a hair outside [low, high]
        return np.ascontiguousarray(resized[:, None], dtype=np.float32)

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Featurise one waveform window or a batch of them.

        Args:
            raw_speech: a 1-D waveform, a 2-D `(batch, samples)` array/tensor, or a list of 1-D waveforms (any
                lengths; each is zero-padded or truncated to `window_seconds`). Mono, at `sampling_rate`.
            sampling_rate: rate of `raw_speech`; checked against the extractor's when given.
            return_tensors: `"pt"`, `"np"` or `None` (numpy).

        Returns:
            `BatchFeature` with `input_values` of shape `(batch, 1, image_size[0], image_size[1])`, float32, in [0, 1].
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{self.__class__.__name__} expects audio sampled at {self.sampling_rate} Hz but got "
                f"{sampling_rate} Hz; resample the waveform to {self.sampling_rate} Hz first "
                "(e.g. datasets' Audio(sampling_rate=...) or torchaudio.functional.resample)."
            )
        waves = self._to_batch(raw_speech)
        with _one_blas_thread():
            features = np.concatenate(
                [self._extract(waves[i : i + _CHUNK_WINDOWS]) for i in range(0, len(waves), _CHUNK_WINDOWS)]
            )
        return BatchFeature({"input_values": features}, tensor_type=return_tensors)


def _one_blas_thread():
    """Within the block, BLAS (numpy's matmul) runs on one thread, where threadpoolctl is installed."""
    global _BLAS_CONTROLLER
    if ThreadpoolController is None:
        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _as_float32(wave) -> np.ndarray:
    """A numpy array, list or (CPU) torch tensor as a float32 numpy array, without importing torch."""
    if hasattr(wave, "detach"):
        wave = wave.detach().cpu().float().numpy()
    return np.asarray(wave, dtype=np.float32)


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, fraction) of linear interpolation with half-pixel centres (align_corners=False), as torch's
    and OpenCV's bilinear resize compute it: source x = (i + 0.5) * size_in / size_out - 0.5, clamped at 0."""
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    left = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    right = np.minimum(left + 1, size_in - 1)
    return left, right, (source - left).astype(np.float32)


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
# What `register_for_auto_class("AutoFeatureExtractor")` sets, without the check that imports transformers'
# Auto modules (and with them torch, wherever it is installed): the feature extractor loads without torch.
GenreViTHybridFeatureExtractor._auto_class = "AutoFeatureExtractor"

__all__ = ["GenreViTHybridFeatureExtractor"]
