"""Decoding any audio file (or bytes) to mono float32 at a target rate, in one FFmpeg pass; writing audio files.

The decoding itself is `genre_classification/audio_decoding.py` (PyAV: FFmpeg's libraries from its wheels, no
system FFmpeg; it travels with the whole-song pipeline), so training data, song analysis and the saved pipeline
read audio with the same code. Resampling happens inside FFmpeg (libswresample) while decoding, several times
faster than decoding then resampling in Python; channels are averaged.

`encode_audio` writes mp3, m4a, opus, flac, wav, ... through the same PyAV (test fixtures, benchmark songs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingComponentError
from ..genre_classification.audio_decoding import AudioDecodeError, decode_with_av

PYAV_MISSING = (
    "PyAV is not installed: pip install av (its wheels carry FFmpeg's libraries; no system FFmpeg is needed)"
)

# The encoder for each container the project writes; PyAV converts the sample format, layout and rate to what the
# codec takes (Opus runs at 48 kHz).
ENCODERS = {
    ".mp3": "libmp3lame",
    ".m4a": "aac",
    ".mp4": "aac",
    ".aac": "aac",
    ".opus": "libopus",
    ".ogg": "libopus",
    ".flac": "flac",
    ".wav": "pcm_s16le",
}


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

    Raises `AudioDecodeError` for anything FFmpeg cannot read or a file without samples, `MissingComponentError`
    without PyAV.
    """
    try:
        waveform, source_rate, source_channels = decode_with_av(source, sampling_rate)
    except ModuleNotFoundError as error:
        if error.name != "av":
            raise
        raise MissingComponentError(PYAV_MISSING) from None
    return DecodedAudio(
        waveform=waveform,
        sampling_rate=int(sampling_rate),
        source_sampling_rate=source_rate,
        source_channels=source_channels,
    )


def encode_audio(path: str | os.PathLike, audio: np.ndarray, sampling_rate: int) -> Path:
    """Write `audio` (float in [-1, 1], `(samples,)` or `(channels, samples)`) to `path`, in the format its
    extension names (one of `ENCODERS`). Returns the path."""
    try:
        import av
    except ModuleNotFoundError:
        raise MissingComponentError(PYAV_MISSING) from None
    path = Path(path)
    codec = ENCODERS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"Cannot write {path.name}: give one of the extensions {', '.join(ENCODERS)}.")
    planar = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if planar.shape[0] > 8:
        raise ValueError(f"audio of shape {np.shape(audio)}: give (samples,) or (channels, samples)")
    # FFmpeg's usual layout for that many channels (5.1 for six), so that players and decoders know the speakers
    layout = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}[
        planar.shape[0]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            codec, rate=48000 if codec == "libopus" else int(sampling_rate), layout=layout
        )
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(np.clip(planar, -1.0, 1.0)), format="fltp", layout=layout
        )
        frame.sample_rate = int(sampling_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):  # what the encoder still holds
            container.mux(packet)
    return path


__all__ = ["AudioDecodeError", "DecodedAudio", "decode_audio", "encode_audio"]
