"""Waveform window -> per-window statistics of MFCCs and log-mels, in numpy, for the classical baseline.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only numpy and transformers.
"""

from typing import Any

import numpy as np
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

# Attributes computed from the others in `__init__`; never serialised.
_DERIVED = ("mel_filters", "window", "dct_matrix")


def dct_ii_ortho(num_coefficients: int, size: int) -> np.ndarray:
    """(num_coefficients, size) orthonormal DCT-II matrix: `coefficients = dct @ values` (scipy's `dct(norm="ortho")`)."""
    n = np.arange(size)
    k = np.arange(num_coefficients)[:, None]
    dct = np.cos(np.pi / size * (n + 0.5) * k) * np.sqrt(2.0 / size)
    dct[0] /= np.sqrt(2.0)
    return dct


class MfccBaselineFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Summarises each waveform window as one vector: the mean and standard deviation over time of its MFCCs and of
    its log-mel spectrogram (librosa's defaults: `librosa.feature.mfcc` / `melspectrogram` + `power_to_db`):

    STFT (periodic Hann, `n_fft`, `hop_length`, centred, reflect padding) -> power -> Slaney mel filter bank
    (`num_mel_bins`) -> dB (`10 log10(max(S, amin))`, floored at the window's peak minus `top_db`) -> log-mels;
    MFCCs = the first `num_mfcc` coefficients of the orthonormal DCT-II of the log-mels over the mel axis.

    Output per window, `feature_size = 2 * (num_mfcc + num_mel_bins)` values (296 by default):
    `[mean(mfcc), std(mfcc), mean(log-mel), std(log-mel)]`, each over the window's frames (std with ddof 0).

    Windowing a track is the data layer's job; this class sees one window per input. A window longer than
    `window_seconds` is truncated to it; a shorter one is summarised as it is (the statistics need no fixed
    length), zero-padded only up to `n_fft` samples.

    Args:
        sampling_rate (`int`, defaults to 22050): expected input rate; other rates are rejected, not resampled.
        window_seconds (`float`, defaults to 3.0): the longest input summarised; `None` summarises any length.
        n_fft (`int`, defaults to 2048) / hop_length (`int`, defaults to 512): STFT frame and hop, in samples.
        num_mel_bins (`int`, defaults to 128) / num_mfcc (`int`, defaults to 20).
        min_frequency (`float`, defaults to 0.0) / max_frequency (`float`, defaults to `sampling_rate / 2`).
        top_db (`float`, defaults to 80.0): dynamic range kept below the window's peak (`None`: no floor).
        amin (`float`, defaults to 1e-10): floor of the power before the log.
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        sampling_rate: int = 22050,
        window_seconds: float | None = 3.0,
        n_fft: int = 2048,
        hop_length: int = 512,
        num_mel_bins: int = 128,
        num_mfcc: int = 20,
        min_frequency: float = 0.0,
        max_frequency: float | None = None,
        top_db: float | None = 80.0,
        amin: float = 1e-10,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        kwargs.pop("feature_size", None)
        if not 1 <= num_mfcc <= num_mel_bins:
            raise ValueError(f"num_mfcc must be in [1, num_mel_bins={num_mel_bins}], got {num_mfcc}.")
        super().__init__(
            feature_size=2 * (num_mfcc + num_mel_bins),
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.window_seconds = window_seconds
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_mel_bins = num_mel_bins
        self.num_mfcc = num_mfcc
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.top_db = top_db
        self.amin = amin
        # (n_fft // 2 + 1, num_mel_bins): right-multiplies the (frames, bins) power spectrum.
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=min_frequency,
            max_frequency=max_frequency if max_frequency is not None else sampling_rate / 2,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        # librosa's Hann is scipy's periodic ("fftbins") window.
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
        self.dct_matrix = dct_ii_ortho(num_mfcc, num_mel_bins)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for key in _DERIVED:
            output.pop(key, None)
        return output

    def log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """One 1-D waveform -> its log-mel spectrogram in dB, (frames, num_mel_bins), float64."""
        wave = np.asarray(waveform, dtype=np.float64)
        if wave.shape[0] < self.n_fft:
            wave = np.pad(wave, (0, self.n_fft - wave.shape[0]), constant_values=self.padding_value)
        pad = self.n_fft // 2
        padded = np.pad(wave, (pad, pad), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length]
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        log_mel = 10.0 * np.log10(np.maximum(power @ self.mel_filters, self.amin))
        if self.top_db is not None:
            log_mel = np.maximum(log_mel, log_mel.max() - self.top_db)
        return log_mel

    def summarise(self, waveform: np.ndarray) -> np.ndarray:
        """One 1-D waveform -> its `feature_size` statistics, float32."""
        log_mel = self.log_mel(waveform)
        mfcc = log_mel @ self.dct_matrix.T
        return np.concatenate(
            [mfcc.mean(axis=0), mfcc.std(axis=0), log_mel.mean(axis=0), log_mel.std(axis=0)]
        ).astype(np.float32)

    def _waveforms(self, raw_speech) -> list[np.ndarray]:
        """Any accepted input -> a list of 1-D float32 waveforms, each truncated to `window_seconds`."""
        if hasattr(raw_speech, "detach"):  # a torch tensor, without importing torch
            raw_speech = raw_speech.detach().cpu().numpy()
        if isinstance(raw_speech, np.ndarray) and raw_speech.ndim in (1, 2):
            waves = [raw_speech] if raw_speech.ndim == 1 else list(raw_speech)
        elif isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0:
            if not isinstance(raw_speech[0], (list, tuple, np.ndarray)) and not hasattr(
                raw_speech[0], "detach"
            ):
                waves = [np.asarray(raw_speech, dtype=np.float32)]  # one waveform as a list of numbers
            else:
                waves = [
                    w.detach().cpu().numpy() if hasattr(w, "detach") else np.asarray(w) for w in raw_speech
                ]
        else:
            raise ValueError(
                "raw_speech must be a 1-D waveform, a 2-D (batch, samples) array/tensor or a non-empty list of 1-D "
                f"waveforms; got {type(raw_speech).__name__}"
                + (f" with shape {tuple(raw_speech.shape)}" if hasattr(raw_speech, "shape") else "")
            )
        limit = None if self.window_seconds is None else int(round(self.window_seconds * self.sampling_rate))
        out = []
        for wave in waves:
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1:
                raise ValueError(
                    f"Each waveform must be 1-D (mono), got shape {tuple(wave.shape)}; downmix first."
                )
            out.append(wave[:limit])
        return out

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Summarise one waveform window or a batch of them.

        Args:
            raw_speech: a 1-D waveform, a 2-D `(batch, samples)` array/tensor, or a list of 1-D waveforms. Mono,
                at `sampling_rate`.
            sampling_rate: rate of `raw_speech`; checked against the extractor's when given.
            return_tensors: `"pt"`, `"np"` or `None` (numpy).

        Returns:
            `BatchFeature` with `input_values` of shape `(batch, feature_size)`, float32.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{self.__class__.__name__} expects audio sampled at {self.sampling_rate} Hz but got "
                f"{sampling_rate} Hz; resample the waveform to {self.sampling_rate} Hz first."
            )
        features = np.stack([self.summarise(wave) for wave in self._waveforms(raw_speech)])
        return BatchFeature({"input_values": features}, tensor_type=return_tensors)


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
# What `register_for_auto_class("AutoFeatureExtractor")` sets, without the check that imports transformers'
# Auto modules (and with them torch, wherever it is installed): the feature extractor loads without torch.
MfccBaselineFeatureExtractor._auto_class = "AutoFeatureExtractor"

__all__ = ["MfccBaselineFeatureExtractor", "dct_ii_ortho"]
