"""Waveform window -> musicnn's log-mel patch, in numpy (musicnn's `extractor.batch_data`, librosa's defaults).

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only numpy and transformers.
"""

from typing import Any

import numpy as np
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

_DERIVED = ("mel_filters", "window")


class MusicnnFeatureExtractor(SequenceFeatureExtractor):
    r"""
    musicnn's input: `librosa.feature.melspectrogram(y, sr=16000, hop_length=256, n_fft=512, n_mels=96)` (STFT
    with a periodic Hann window, centred with reflect padding, power 2, Slaney mel filter bank on the Slaney mel
    scale), then `log10(10000 x + 1)`, computed in float32 (the original casts the mel power to float16 first,
    where `10000 x` overflows on loud bins under numpy 2 and turns the output into NaN).

    One waveform window in, one `(num_frames, num_mel_bins)` patch out: the first `num_frames` frames (187 =
    `librosa.time_to_frames(3 s) + 1`, the 3-s input the models were trained on); a shorter window is zero-padded
    to `window_seconds` first. Windowing a track is the data layer's job; `log_mel` gives a whole signal's
    spectrogram (upstream cuts patches from it).

    Args:
        sampling_rate (`int`, defaults to 16000): expected input rate; other rates are rejected, not resampled.
        window_seconds (`float`, defaults to 3.0) / num_frames (`int`, defaults to 187)
        n_fft (`int`, defaults to 512) / hop_length (`int`, defaults to 256) / num_mel_bins (`int`, defaults to 96)
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        sampling_rate: int = 16000,
        window_seconds: float = 3.0,
        num_frames: int = 187,
        n_fft: int = 512,
        hop_length: int = 256,
        num_mel_bins: int = 96,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        kwargs.pop("feature_size", None)
        super().__init__(
            feature_size=num_mel_bins,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.window_seconds = window_seconds
        self.num_frames = num_frames
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_mel_bins = num_mel_bins
        if 1 + int(round(window_seconds * sampling_rate)) // hop_length < num_frames:
            raise ValueError(
                f"window_seconds={window_seconds} gives fewer than num_frames={num_frames} frames at hop {hop_length}."
            )
        # (n_fft // 2 + 1, num_mel_bins), librosa's `filters.mel` defaults.
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=0.0,
            max_frequency=sampling_rate / 2,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for key in _DERIVED:
            output.pop(key, None)
        return output

    def log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """A 1-D waveform -> `log10(10000 mel + 1)`, `(frames, num_mel_bins)` float32, frames = 1 + len // hop."""
        wave = np.asarray(waveform, dtype=np.float64)
        pad = self.n_fft // 2
        if wave.shape[0] <= pad:  # reflect padding needs more samples than it pads
            wave = np.pad(wave, (0, pad + 1 - wave.shape[0]), constant_values=self.padding_value)
        padded = np.pad(wave, (pad, pad), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length]
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        mel = (power @ self.mel_filters).astype(np.float32)
        return np.log10(np.float32(10000.0) * mel + np.float32(1.0))

    def patch(self, waveform: np.ndarray) -> np.ndarray:
        """One window -> its `(num_frames, num_mel_bins)` patch."""
        length = int(round(self.window_seconds * self.sampling_rate))
        wave = np.asarray(waveform, dtype=np.float32)[:length]
        if wave.shape[0] < length:
            wave = np.pad(wave, (0, length - wave.shape[0]), constant_values=self.padding_value)
        return self.log_mel(wave)[: self.num_frames]

    def _waveforms(self, raw_speech) -> list[np.ndarray]:
        if hasattr(raw_speech, "detach"):  # a torch tensor, without importing torch
            raw_speech = raw_speech.detach().cpu().numpy()
        if isinstance(raw_speech, np.ndarray) and raw_speech.ndim in (1, 2):
            waves = [raw_speech] if raw_speech.ndim == 1 else list(raw_speech)
        elif isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0:
            if not isinstance(raw_speech[0], (list, tuple, np.ndarray)) and not hasattr(
                raw_speech[0], "detach"
            ):
                waves = [np.asarray(raw_speech, dtype=np.float32)]
            else:
                waves = [
                    w.detach().cpu().numpy() if hasattr(w, "detach") else np.asarray(w) for w in raw_speech
                ]
        else:
            raise ValueError(
                "raw_speech must be a 1-D waveform, a 2-D (batch, samples) array/tensor or a non-empty list of 1-D "
                f"waveforms; got {type(raw_speech).__name__}"
            )
        for wave in waves:
            if np.ndim(wave) != 1:
                raise ValueError(
                    f"Each waveform must be 1-D (mono), got shape {np.shape(wave)}; downmix first."
                )
        return waves

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Log-mel patches of one waveform window or a batch of them (mono, at `sampling_rate`).

        Returns:
            `BatchFeature` with `input_values` of shape `(batch, num_frames, num_mel_bins)`, float32.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{self.__class__.__name__} expects audio sampled at {self.sampling_rate} Hz but got "
                f"{sampling_rate} Hz; resample the waveform to {self.sampling_rate} Hz first."
            )
        features = np.stack([self.patch(wave) for wave in self._waveforms(raw_speech)])
        return BatchFeature({"input_values": features}, tensor_type=return_tensors)


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
# What `register_for_auto_class("AutoFeatureExtractor")` sets, without the check that imports transformers'
# Auto modules (and with them torch, wherever it is installed): the feature extractor loads without torch.
MusicnnFeatureExtractor._auto_class = "AutoFeatureExtractor"

__all__ = ["MusicnnFeatureExtractor"]
