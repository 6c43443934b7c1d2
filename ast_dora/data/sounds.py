"""Generated sounds that are not music, for the music check (`ast_dora.music_detection`) offline: speech-like
voices and coloured noise. The tiny AST stand-in learns its AudioSet-like "Speech" and "Noise" classes on them
(`ast_dora.models.tiny_ast`), and the tests check that both are reported "not music".

- `speech_like`: a voice without words: a glottal pulse train (pitch 85-230 Hz with slow intonation and jitter)
  through three formant resonators whose frequencies jump per syllable (vowel-like F1 300-850 Hz, F2 850-2400 Hz,
  F3 2400-3300 Hz), amplitude-modulated at a syllable rate of 3-6 Hz, with pauses between phrases and a little
  breath noise for consonants.
- `coloured_noise`: white, pink (1/f power) or brown (1/f^2 power) noise, shaped in the frequency domain.

    from ast_dora.data.sounds import speech_like, coloured_noise
    voice = speech_like(10.0, 16000, np.random.default_rng(0))
    hiss = coloured_noise("pink", 10.0, 16000, np.random.default_rng(0))
"""

from __future__ import annotations

import numpy as np
from scipy import signal

NOISE_COLOURS = ("white", "pink", "brown")
PEAK = 0.7


def _normalise(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = np.abs(audio).max()
    return (audio / max(peak, 1e-9) * PEAK * rng.uniform(0.5, 1.0)).astype(np.float32)


def coloured_noise(colour: str, seconds: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of white, pink or brown noise at `sampling_rate`, float32, peak 0.35-0.7."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"colour {colour!r} is not one of {', '.join(NOISE_COLOURS)}")
    n = max(1, int(round(seconds * sampling_rate)))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    frequencies = np.fft.rfftfreq(n, 1 / sampling_rate)
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]  # amplitude ~ f^-exponent
    spectrum *= 1.0 / np.maximum(frequencies, 20.0) ** exponent
    return _normalise(np.fft.irfft(spectrum, n), rng)


def _resonator(frequency: float, bandwidth: float, sampling_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """A two-pole resonator (one formant) with unit gain at DC removed: (b, a) for `lfilter`."""
    r = np.exp(-np.pi * bandwidth / sampling_rate)
    theta = 2 * np.pi * frequency / sampling_rate
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([1 - r]), a


def speech_like(seconds: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of a speech-like voice at `sampling_rate`, float32 (see the module docstring)."""
    n = max(1, int(round(seconds * sampling_rate)))
    t = np.arange(n) / sampling_rate
    # pitch: a speaker's base, slow intonation, jitter
    base = rng.uniform(85, 230)
    pitch = base * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi)))
    pitch *= 1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = np.cumsum(pitch) / sampling_rate
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    glottal = signal.lfilter([1.0], [1.0, -0.95], pulses)  # a softer, sloped source spectrum
    # syllables: durations at 3-6 per second, each with its own vowel (formants) and loudness
    rate = rng.uniform(3.0, 6.0)
    edges = [0]
    while edges[-1] < n:
        edges.append(edges[-1] + int(sampling_rate * rng.uniform(0.6, 1.4) / rate))
    voice = np.zeros(n)
    envelope = np.zeros(n)
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        end = min(end, n)
        segment = glottal[start:end]
        formants = (rng.uniform(300, 850), rng.uniform(850, 2400), rng.uniform(2400, 3300))
        out = np.zeros(end - start)
        for frequency, gain in zip(formants, (1.0, 0.6, 0.3), strict=True):
            if frequency < sampling_rate / 2 - 100:
                out += gain * signal.lfilter(
                    *_resonator(frequency, rng.uniform(60, 160), sampling_rate), segment
                )
        voice[start:end] = out
        # a syllable's loudness: rise and fall (a raised sine), a pause now and then between phrases
        shape = np.sin(np.linspace(0, np.pi, end - start)) ** 0.7
        envelope[start:end] = shape * (0.0 if rng.random() < 0.12 else rng.uniform(0.5, 1.0))
    breath = signal.lfilter(
        *signal.butter(2, [2000, min(6000, sampling_rate / 2 - 200)], "bandpass", fs=sampling_rate),
        rng.standard_normal(n),
    )
    voice = voice / max(np.abs(voice).max(), 1e-9) + 0.05 * breath
    return _normalise(voice * envelope, rng)


__all__ = ["NOISE_COLOURS", "coloured_noise", "speech_like"]
