"""Audio files (a path, or a file's bytes) -> mono float32 at a target rate, through PyAV.

PyAV (`pip install av`) carries FFmpeg's libraries inside its wheels (Linux, macOS, Windows), so decoding needs
no system FFmpeg: wav, au, flac, mp3, ogg/vorbis, opus, m4a/aac, ... are all read the same way. Resampling is
FFmpeg's libswresample (PyAV's `AudioResampler`), the resampler torchcodec uses too.

Channels are averaged (as librosa's `to_mono`), not mixed by FFmpeg's downmix, which for stereo is
(L + R) / sqrt(2): 3 dB louder than the mean and able to exceed full scale.

This file travels with every saved model (the whole-song pipeline imports it) and needs only numpy and av.
"""

from __future__ import annotations

import io
import os

import numpy as np

# Seconds of decoded audio handed to the resampler at once (see decode_with_av).
RESAMPLE_SECONDS = 20.0


class AudioDecodeError(RuntimeError):
    """A file that cannot be decoded (corrupt, empty, not audio)."""


def _short_message(error: Exception) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}"


def _resample_chunk(av, resampler, arrays: list, like) -> list[np.ndarray]:
    """Decoded frames of the format, layout and rate of frame `like` (their ndarrays, concatenated along samples)
    -> resampled float32 chunks."""
    frame = av.AudioFrame.from_ndarray(
        np.concatenate(arrays, axis=1), format=like.format.name, layout=like.layout
    )
    frame.sample_rate = like.sample_rate
    return [resampled.to_ndarray() for resampled in resampler.resample(frame)]


def decode_with_av(source: str | os.PathLike | bytes, sampling_rate: int) -> tuple[np.ndarray, int, int]:
    """Decode `source` (a path or the bytes of a file) to mono float32 at `sampling_rate`.

    Returns `(waveform, source_sampling_rate, source_channels)`. Raises `AudioDecodeError` with FFmpeg's
    reason for anything it cannot read, and for a file without samples. `ImportError` when PyAV is absent.
    """
    import av  # here, not at the top: the pipeline falls back to other decoders without it

    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    chunks = []
    try:
        with av.open(file, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError("no audio stream")
            stream = container.streams.audio[0]
            source_rate = int(stream.codec_context.sample_rate or 0)
            source_channels = int(stream.codec_context.channels or 0)
            # Decoded frames are resampled RESAMPLE_SECONDS at a time: one resampler call per frame (an mp3 frame
            # holds 26 ms) costs more in Python than the decoding; whole chunks keep memory bounded for long songs.
            # The resampler carries its state from chunk to chunk, so the result equals one pass over the song.
            resampler, signature, like, pending, pending_samples = None, None, None, [], 0
            for frame in container.decode(stream):
                frame_signature = (frame.format.name, frame.layout.name, frame.sample_rate)
                if (
                    frame_signature != signature
                ):  # a new stream layout mid-file (rare): finish the old one first
                    if pending:
                        chunks += _resample_chunk(av, resampler, pending, like)
                    if resampler is not None:
                        chunks += [resampled.to_ndarray() for resampled in resampler.resample(None)]
                    # planar float32 at the target rate, channels kept (averaged below)
                    resampler = av.AudioResampler(format="fltp", rate=int(sampling_rate))
                    signature, like, pending, pending_samples = frame_signature, frame, [], 0
                pending.append(frame.to_ndarray())
                pending_samples += frame.samples
                if pending_samples >= RESAMPLE_SECONDS * frame.sample_rate:
                    chunks += _resample_chunk(av, resampler, pending, like)
                    pending, pending_samples = [], 0
            if pending:
                chunks += _resample_chunk(av, resampler, pending, like)
            if resampler is not None:
                chunks += [
                    resampled.to_ndarray() for resampled in resampler.resample(None)
                ]  # what it still holds
    except AudioDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise AudioDecodeError(_short_message(error)) from error
    chunks = [chunk for chunk in chunks if chunk.shape[-1]]
    if not chunks:
        raise AudioDecodeError("no audio samples")
    channels = min(chunk.shape[0] for chunk in chunks)  # a layout change mid-stream keeps the common channels
    data = np.concatenate([chunk[:channels] for chunk in chunks], axis=1)
    waveform = data[0] if channels == 1 else data.mean(axis=0, dtype=np.float32)
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if not np.all(np.isfinite(waveform)):
        raise AudioDecodeError("non-finite samples")
    return waveform, source_rate, source_channels or channels


def resample_with_av(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """A mono float32 array from `source_rate` to `target_rate` with FFmpeg's libswresample (PyAV), the resampler
    that decoding uses: arrays and files reach the model through the same filter, and without torch."""
    import av

    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if int(source_rate) == int(target_rate) or not len(waveform):
        return waveform
    frame = av.AudioFrame.from_ndarray(waveform[None], format="flt", layout="mono")
    frame.sample_rate = int(source_rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=int(target_rate))
    chunks = [out.to_ndarray()[0] for out in resampler.resample(frame)]
    chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    return np.ascontiguousarray(
        np.concatenate(chunks) if chunks else np.zeros(0, np.float32), dtype=np.float32
    )
