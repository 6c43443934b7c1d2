"""Decoding any audio file (or bytes) to mono float32 at a target rate, in one FFmpeg pass.

The decoding itself is `genre_classification/audio_decoding.py` (PyAV: FFmpeg's libraries from its wheels, no
system FFmpeg; it travels with the whole-song pipeline), so training data, song analysis and the saved pipeline
read audio with the same code. Resampling happens inside FFmpeg (libswresample) while decoding, several times
faster than decoding then resampling in Python; channels are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..genre_classification.audio_decoding import AudioDecodeError, decode_with_av


@dataclass
class DecodedAudio:
    waveform: np.ndarray  # (num_samples,) float32, mono, at `sampling_rate`
    sampling_rate: int
    source_sampling_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        return len(self.waveform) / self.sampling_rate


def decode_audio(source: str | bytes, sampling_rate: int) -> DecodedAudio:
    """Decode a path or the bytes of an audio file to mono float32 at `sampling_rate`.

    Raises `AudioDecodeError` for anything FFmpeg cannot read or a file without samples.
    """
    waveform, source_rate, source_channels = decode_with_av(source, sampling_rate)
    return DecodedAudio(waveform=waveform, sampling_rate=int(sampling_rate), source_sampling_rate=source_rate,
                        source_channels=source_channels)


__all__ = ["AudioDecodeError", "DecodedAudio", "decode_audio"]
