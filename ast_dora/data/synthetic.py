"""A synthetic GTZAN: ten "genres" of generated music in GTZAN's folder layout, for offline smoke runs.

The genres differ in real musical traits, each drawn per track from a range so that no single number
gives the class away:

| genre | tempo (bpm) | rhythm / drums | instruments, register, harmony |
| --- | --- | --- | --- |
| blues | 66-100, triplet shuffle | kick 1+3, snare 2+4, swung hats | boogie bass, dominant-7th guitar with slight drive, harmonica licks; 12-bar I-IV-V |
| classical | 56-96, slow dynamic swells | no drums | bowed strings (slow attack, vibrato, chorus) or piano arpeggios, cello bass, hall reverb |
| country | 96-136, boom-chick | brushed snare 2+4, shaker | root/fifth bass on 1+3, bright strummed acoustic chords, twangy pluck licks; major keys |
| disco | 110-132, four on the floor | kick every beat, open hat on the "and", 16th hats | octave bass, string stabs, muted 16th guitar; minor 7th vamps |
| hiphop | 78-98, boom-bap | kick/snare with swung 16th hats | long 808 sub bass, low-passed e-piano loop, vinyl crackle and hiss |
| jazz | 116-200, swing | ride "ding ding-a ding", hat on 2+4, soft comping snare | walking upright bass, rootless 7th/9th piano voicings, sax lines; ii-V-I |
| metal | 100-136, 16th double kick | crash every bar, ride 8ths, snare 2+4 | low (C#-E) palm-muted chugs and power chords, heavy distortion; phrygian riffs |
| pop | 96-128, straight | kick 1+3(+), clap 2+4, 8th hats | side-chained saw pad, 8th pluck arpeggio, vocal-like lead with vibrato; I-V-vi-IV |
| reggae | 62-84, one drop | kick+rim on beat 3 only | skank chops on the off-beats, organ bubble, deep melodic bass with rests |
| rock | 108-150, straight | kick 1+3, snare 2+4, 8th hats, crash every 4 bars | overdriven power/open chords in 8ths, root bass, pentatonic lead |

Per track: tempo, key, timbre mixes, bus levels (+-3 dB), humanised timing and velocity, EQ tilt and a
noise floor are random, so the classes are learnable but not trivial. Generation is vectorised numpy
(wavetable oscillators, notes and chords rendered once per track and reused, one-shot drums placed by
slicing, scipy IIR filters): about 40 ms of CPU per 12-s track; `--num_workers` writes in parallel.

    python -m ast_dora.data.synthetic OUT_DIR [--tracks_per_genre N] [--duration S] [--seed K]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft
from scipy import signal

from .gtzan import GTZAN_GENRES

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
TABLE_SIZE = 4096
_TABLE_MASK = TABLE_SIZE - 1


# ----------------------------------------------------------------------------------------------------------
# oscillators and envelopes
# ----------------------------------------------------------------------------------------------------------


def _harmonic_table(amplitudes) -> np.ndarray:
    phase = np.arange(TABLE_SIZE) / TABLE_SIZE
    table = np.zeros(TABLE_SIZE)
    for k, a in enumerate(amplitudes, start=1):
        if a:
            table += a * np.sin(2 * np.pi * k * phase)
    return (table / np.max(np.abs(table))).astype(np.float32)


_K = np.arange(1, 41)
TABLES = {
    "sine": _harmonic_table([1.0]),
    "saw": _harmonic_table(1.0 / _K),
    "square": _harmonic_table(np.where(_K % 2 == 1, 1.0 / _K, 0.0)),
    "organ": _harmonic_table([1.0, 0.6, 0.0, 0.35, 0.0, 0.2, 0.0, 0.15]),
    "epiano": _harmonic_table([1.0, 0.35, 0.12, 0.05, 0.02]),
    "string": _harmonic_table(1.0 / _K**1.3),
    "bright": _harmonic_table(1.0 / _K**0.8),
    "mellow": _harmonic_table(1.0 / _K[:8] ** 2.5),
    "reed": _harmonic_table([0.6, 1.0, 0.8, 0.5, 0.45, 0.3, 0.25, 0.2, 0.12, 0.1, 0.06, 0.05]),
    "bass": _harmonic_table([1.0, 0.45, 0.18, 0.06]),
    "vowel": _harmonic_table([0.5, 0.8, 1.0, 0.55, 0.25, 0.12, 0.3, 0.35, 0.18, 0.06]),
}


def _mix_tables(rng, a: str, b: str) -> np.ndarray:
    w = rng.uniform(0.0, 1.0)
    return (w * TABLES[a] + (1.0 - w) * TABLES[b]).astype(np.float32)


def midi_hz(note) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69.0) / 12.0)


_TIME_CACHE: dict[int, np.ndarray] = {}


_NOISE_CACHE: dict[int, np.ndarray] = {}


def _noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """White noise: a random slice of a cached 64-s noise vector (drawing fresh noise costs more than the rest)."""
    noise = _NOISE_CACHE.get(sr)
    if noise is None or len(noise) < 2 * n:
        noise = _NOISE_CACHE[sr] = np.random.default_rng(12345).standard_normal(
            max(2 * n, 64 * sr), dtype=np.float32
        )
    start = int(rng.integers(0, len(noise) - n))
    return noise[start : start + n]


def _time(n: int, sr: int) -> np.ndarray:
    """`np.arange(n) / sr` as float32, sliced from a cached vector."""
    t = _TIME_CACHE.get(sr)
    if t is None or len(t) < n:
        t = _TIME_CACHE[sr] = np.arange(max(n, 64 * sr), dtype=np.float32) / np.float32(sr)
    return t[:n]


def _envelope(
    n: int,
    sr: int,
    attack: float,
    decay: float,
    sustain: float,
    release_at: int | None = None,
    release: float = 0.05,
) -> np.ndarray:
    """Attack ramp, exponential decay to `sustain` (time constant `decay`), then an exponential release."""
    t = _time(n, sr)
    env = np.exp(t * np.float32(-1.0 / max(decay, 1e-3)))
    if sustain:
        env = sustain + (1.0 - sustain) * env
    a = min(max(int(attack * sr), 1), n)
    env[:a] *= t[:a] * np.float32(sr / a)
    if release_at is not None and release_at < n:
        env[release_at:] *= np.exp(t[: n - release_at] * np.float32(-1.0 / max(release, 1e-3)))
    return env


class _Mix:
    """Named mono buses of one track."""

    def __init__(self, n: int, sr: int, rng: np.random.Generator):
        self.n, self.sr, self.rng = n, sr, rng
        self.buses: dict[str, np.ndarray] = {}
        self._notes: dict[
            tuple, np.ndarray
        ] = {}  # repeated notes (riffs, stabs, bass lines) are rendered once
        self.cache: dict[tuple, np.ndarray] = {}  # other reusable sounds of this track

    def bus(self, name: str) -> np.ndarray:
        if name not in self.buses:
            self.buses[name] = np.zeros(self.n, dtype=np.float32)
        return self.buses[name]

    def add(self, name: str, start_time: float, sound: np.ndarray, gain: float = 1.0) -> None:
        start = int(start_time * self.sr + 0.5) if start_time >= 0 else int(round(start_time * self.sr))
        if start >= self.n or start + len(sound) <= 0:
            return
        lo = max(0, -start)
        end = min(self.n, start + len(sound))
        bus = self.buses.get(name)
        if bus is None:
            bus = self.bus(name)
        dst = bus[start + lo : end]
        if gain == 1.0:
            dst += sound[lo : end - start]
        else:
            dst += np.float32(gain) * sound[lo : end - start]

    def hits(self, name: str, times, sound: np.ndarray, velocities=None, jitter: float = 0.0) -> None:
        times = np.asarray(times, dtype=np.float64)
        if jitter:
            times = times + self.rng.normal(0.0, jitter, len(times))
        if velocities is None:
            velocities = np.ones(len(times))
        velocities = np.asarray(velocities) * self.rng.uniform(0.85, 1.0, len(times))
        sound = _trim(sound)
        for t, v in zip(times.tolist(), velocities.tolist(), strict=True):
            self.add(name, t, sound, v)

    def note(
        self,
        name: str,
        start_time: float,
        duration: float,
        midi: float,
        table: np.ndarray,
        gain: float = 1.0,
        attack: float = 0.005,
        decay: float = 0.3,
        sustain: float = 0.0,
        release: float = 0.05,
        vibrato: tuple[float, float] | None = None,
        glide_from: float | None = None,
        bright: tuple[np.ndarray, float] | None = None,
    ) -> None:
        self.add(
            name,
            start_time,
            self._note_sound(
                duration, midi, table, attack, decay, sustain, release, vibrato, glide_from, bright
            ),
            gain,
        )

    def _note_sound(
        self,
        duration,
        midi,
        table,
        attack=0.005,
        decay=0.3,
        sustain=0.0,
        release=0.05,
        vibrato=None,
        glide_from=None,
        bright=None,
    ) -> np.ndarray:
        key = (
            id(table),
            round(float(midi), 3),
            round(duration, 3),
            attack,
            decay,
            sustain,
            release,
            vibrato,
            glide_from,
            None if bright is None else (id(bright[0]), bright[1]),
        )
        sound = self._notes.get(key)
        if sound is None:
            sound = self._notes[key] = self._render_note(
                duration, midi, table, attack, decay, sustain, release, vibrato, glide_from, bright
            )
        return sound

    def _render_note(
        self, duration, midi, table, attack, decay, sustain, release, vibrato, glide_from, bright
    ):
        sr = self.sr
        n_on = max(int(duration * sr), 1)
        n = n_on + int(3 * release * sr)
        if not sustain:  # a decaying note is inaudible after ~7 time constants
            n = min(n, max(int((attack + 7 * decay) * sr), 1))
            n_on = min(n_on, n)
        f0 = float(midi_hz(midi))
        phase = self.rng.uniform()
        if glide_from is not None:  # a slide into the note: integrate the gliding frequency
            t = _time(n, sr)
            freq = f0 * 2.0 ** (np.float32((glide_from - midi) / 12.0) * np.exp(t * np.float32(-1 / 0.04)))
            cycles = phase + np.cumsum(freq, dtype=np.float64) / sr
        else:
            cycles = phase + np.arange(n) * (f0 / sr)
        if vibrato is not None:  # closed-form phase of f0 * (1 + depth * sin(2 pi rate t))
            rate, depth = vibrato
            cos = self.cache.get(("lfo", rate))
            if cos is None or len(cos) < n:  # one cosine per vibrato rate, sliced for every note
                cos = self.cache[("lfo", rate)] = np.cos(
                    _time(max(n, 4 * sr), sr) * np.float32(2 * np.pi * rate)
                )
            cycles = cycles + (f0 * depth / (2 * np.pi * rate)) * (1.0 - cos[:n])
        # wavetable lookup: one gather per sample whatever the number of harmonics in the table
        index = (cycles * TABLE_SIZE).astype(np.int64) & _TABLE_MASK
        wave = table[index]
        env = _envelope(n, sr, attack, decay, sustain, n_on, release)
        if bright is not None:  # a brighter attack that decays faster (plucked strings)
            table_b, tau = bright
            wave += table_b[index] * np.exp(_time(n, sr) * np.float32(-1.0 / tau))
        wave *= env
        return wave

    def chord(self, name: str, start_time: float, duration: float, notes, table, gain=1.0, strum=0.0, **kw):
        """The notes together (strummed: each `strum` seconds after the previous, downwards if negative),
        rendered once per distinct chord and added as one sound."""
        notes = tuple(float(m) for m in notes)
        key = (
            "chord",
            notes,
            round(duration, 3),
            id(table),
            strum,
            tuple(sorted((k, repr(v)) for k, v in kw.items())),
        )
        sound = self.cache.get(key)
        if sound is None:
            order = notes if strum >= 0 else notes[::-1]
            offset = int(abs(strum) * self.sr)
            parts = [self._note_sound(duration, m, table, **kw) for m in order]
            sound = np.zeros(max(i * offset + len(p) for i, p in enumerate(parts)), dtype=np.float32)
            for i, p in enumerate(parts):
                sound[i * offset : i * offset + len(p)] += p
            sound *= np.float32(1.0 / np.sqrt(len(notes)))
            self.cache[key] = sound
        self.add(name, start_time, sound, gain)


# ----------------------------------------------------------------------------------------------------------
# drums (one-shots drawn per track, placed by slicing)
# ----------------------------------------------------------------------------------------------------------


def _band_noise(rng, n: int, sr: int, low: float, high: float) -> np.ndarray:
    spectrum = sp_fft.rfft(rng.standard_normal(n, dtype=np.float32))
    f = sp_fft.rfftfreq(n, 1.0 / sr).astype(np.float32)
    spectrum *= 1.0 / (1.0 + (low / np.maximum(f, 1.0)) ** 4) / (1.0 + (f / high) ** 4)
    x = sp_fft.irfft(spectrum, n)
    return (x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32, copy=False)


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n, dtype=np.float32) / (tau * sr))


def kick(rng, sr, f_hi=None, f_lo=None, tau=None, length=0.5) -> np.ndarray:
    n = int(length * sr)
    t = np.arange(n) / sr
    f_hi = f_hi or rng.uniform(110, 170)
    f_lo = f_lo or rng.uniform(44, 58)
    freq = f_lo + (f_hi - f_lo) * np.exp(-t / 0.035)
    body = np.sin(2 * np.pi * np.cumsum(freq) / sr).astype(np.float32) * _decay(
        n, sr, tau or rng.uniform(0.12, 0.3)
    )
    click = _band_noise(rng, n, sr, 1500, 6000) * _decay(n, sr, 0.004) * 0.3
    return body + click


def sub808(rng, sr, midi: float, length: float) -> np.ndarray:
    n = int(length * sr)
    t = np.arange(n) / sr
    f = float(midi_hz(midi))
    freq = f * (1.0 + 0.8 * np.exp(-t / 0.03))
    x = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / (0.6 * length))
    return np.tanh(1.6 * x).astype(np.float32)


def snare(rng, sr, tone=None, tau=None, bright=1.0) -> np.ndarray:
    n = int(0.35 * sr)
    tau = tau or rng.uniform(0.08, 0.16)
    noise = _band_noise(rng, n, sr, 900 * bright, 9000 * bright) * _decay(n, sr, tau)
    body = np.sin(2 * np.pi * (tone or rng.uniform(170, 240)) * np.arange(n) / sr).astype(np.float32)
    return noise + 0.6 * body * _decay(n, sr, 0.04)


def clap(rng, sr) -> np.ndarray:
    n = int(0.3 * sr)
    burst = _band_noise(rng, n, sr, 900, 5000)
    env = np.zeros(n, dtype=np.float32)
    for k in range(3):
        s = int(k * 0.011 * sr)
        env[s:] += _decay(n - s, sr, 0.008 if k < 2 else 0.09)
    return burst * env


def hat(rng, sr, tau) -> np.ndarray:
    n = int(min(6 * tau + 0.02, 0.8) * sr)
    return _band_noise(rng, n, sr, 6000, 16000) * _decay(n, sr, tau)


def ride(rng, sr, tau=None) -> np.ndarray:
    n = int(1.2 * sr)
    t = np.arange(n) / sr
    partials = rng.uniform(2500, 7500, 6)
    bell = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in partials) / 6
    x = 0.6 * bell.astype(np.float32) + 0.5 * _band_noise(rng, n, sr, 4000, 14000)
    return x * _decay(n, sr, tau or rng.uniform(0.3, 0.6))


def crash(rng, sr) -> np.ndarray:
    n = int(1.8 * sr)
    return _band_noise(rng, n, sr, 3000, 15000) * _decay(n, sr, rng.uniform(0.5, 0.9))


def rim(rng, sr) -> np.ndarray:
    n = int(0.12 * sr)
    t = np.arange(n) / sr
    x = np.sin(2 * np.pi * rng.uniform(1500, 2200) * t).astype(np.float32) + 0.5 * _band_noise(
        rng, n, sr, 2000, 8000
    )
    return x * _decay(n, sr, 0.015)


def brush(rng, sr) -> np.ndarray:
    n = int(0.3 * sr)
    return (
        _band_noise(rng, n, sr, 1500, 7000)
        * _decay(n, sr, 0.09)
        * np.linspace(0.3, 1.0, n, dtype=np.float32) ** 0.3
    )


def _trim(sound: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Drop the tail of a one-shot once it stays below -60 dB of its peak."""
    loud = np.flatnonzero(np.abs(sound) > floor * (np.max(np.abs(sound)) + 1e-12))
    return sound[: loud[-1] + 1] if len(loud) else sound[:1]


def layer(*sounds: np.ndarray, gains=None) -> np.ndarray:
    """Sum one-shots of different lengths."""
    out = np.zeros(max(len(s) for s in sounds), dtype=np.float32)
    for s, g in zip(sounds, gains or [1.0] * len(sounds), strict=True):
        out[: len(s)] += g * s
    return out


def shaker(rng, sr) -> np.ndarray:
    n = int(0.12 * sr)
    env = np.minimum(np.arange(n) / (0.02 * sr), 1.0).astype(np.float32) * _decay(n, sr, 0.03)
    return _band_noise(rng, n, sr, 5000, 12000) * env


# ----------------------------------------------------------------------------------------------------------
# harmony helpers
# ----------------------------------------------------------------------------------------------------------

QUALITY = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m9": (0, 3, 7, 10, 14),
    "9": (0, 4, 7, 10, 14),
    "5": (0, 7, 12),
}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PENTA_MINOR = (0, 3, 5, 7, 10)
PENTA_MAJOR = (0, 2, 4, 7, 9)
BLUES = (0, 3, 5, 6, 7, 10)
PHRYGIAN = (0, 1, 3, 5, 7, 8, 10)


def voicing(root: int, quality: str, low: int, high: int) -> list[int]:
    """Chord tones of `root` + `quality` folded into [low, high] (MIDI)."""
    notes = []
    for iv in QUALITY[quality]:
        m = root + iv
        while m < low:
            m += 12
        while m > high:
            m -= 12
        notes.append(m)
    return sorted(set(notes))


def scale_notes(key: int, scale, low: int, high: int) -> np.ndarray:
    return np.array([m for m in range(low, high + 1) if (m - key) % 12 in scale])


def _melody(rng, pool: np.ndarray, n: int, step_max: int = 2) -> list[int]:
    i = int(rng.integers(len(pool) // 3, 2 * len(pool) // 3 + 1))
    out = []
    for _ in range(n):
        i = int(np.clip(i + rng.integers(-step_max, step_max + 1), 0, len(pool) - 1))
        out.append(int(pool[i]))
    return out


def _grid(bars: int, beat: float, beats_per_bar: int, positions, swing: float = 0.5) -> np.ndarray:
    """Onset times of beat-relative `positions` (e.g. 0, 0.5 for 8ths) in every bar; off-beat 8ths swung."""
    times = []
    for bar in range(bars):
        for p in positions:
            frac = p % 1.0
            whole = p - frac
            if abs(frac - 0.5) < 1e-6:
                frac = swing
            times.append((bar * beats_per_bar + whole + frac) * beat)
    return np.array(sorted(times))


# ----------------------------------------------------------------------------------------------------------
# the genres
# ----------------------------------------------------------------------------------------------------------


def _blues(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(66, 100)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    swing = 2 / 3
    key = int(rng.choice([40, 45, 43, 48, 46])) + int(rng.integers(-1, 2))  # E2 A2 G2 C3 Bb2
    twelve = [0, 0, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7]
    offset = int(rng.integers(0, 12))
    k, sn = kick(rng, sr), snare(rng, sr, tau=0.1)
    mix.hits("drums", _grid(bars, beat, 4, [0, 2]), k, jitter=0.006)
    mix.hits("drums", _grid(bars, beat, 4, [1, 3]), sn, 0.7, jitter=0.006)
    hats = _grid(bars, beat, 4, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5], swing)
    mix.hits("drums", hats, hat(rng, sr, 0.03), np.tile([0.45, 0.25], len(hats) // 2), jitter=0.006)
    guitar = _mix_tables(rng, "bright", "saw")
    boogie = [0, 0, 7, 7, 9, 9, 10, 9]
    for bar in range(bars):
        root = key + twelve[(bar + offset) % 12]
        for i, iv in enumerate(boogie):
            t = (bar * 4 + i // 2 + (swing if i % 2 else 0)) * beat
            mix.note("bass", t, beat * 0.45, root + iv, TABLES["bass"], 0.8, decay=0.25, sustain=0.3)
        chord = voicing(root + 12, "7", key + 14, key + 30)
        for b in range(4):
            t = (bar * 4 + b + swing) * beat
            mix.chord(
                "harmony",
                t,
                beat * 0.3,
                chord,
                guitar,
                0.55,
                strum=0.012,
                decay=0.15,
                bright=(TABLES["saw"], 0.03),
            )
    pool = scale_notes(key, BLUES, key + 24, key + 41)
    harp = _mix_tables(rng, "reed", "square")
    t = rng.uniform(0, 2) * beat
    while t < duration:
        for m in _melody(rng, pool, int(rng.integers(2, 6))):
            d = beat * float(rng.choice([1 / 3, 2 / 3, 1.0]))
            mix.note(
                "lead",
                t,
                d,
                m,
                harp,
                0.5,
                attack=0.03,
                decay=0.5,
                sustain=0.7,
                vibrato=(5.5, 0.01),
                glide_from=m - float(rng.choice([0, 0, 1, 2])),
            )
            t += d
        t += beat * rng.uniform(1, 3)
    return tempo, {"drums": 0.9, "bass": 0.8, "harmony": 0.7, "lead": 0.55}, {"drive": ("harmony", 1.8)}


def _classical(mix: _Mix, rng, duration: float):
    tempo = rng.uniform(56, 96)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    minor = rng.uniform() < 0.5
    key = int(rng.integers(48, 58))
    scale = MINOR if minor else MAJOR
    prog = rng.choice([[0, 5, 7, 0], [0, 9, 2, 7], [0, 5, 2, 7], [0, 7, 9, 5]])
    qual = {0: "min" if minor else "maj", 5: "min" if minor else "maj", 7: "maj", 9: "min", 2: "min"}
    piano = rng.uniform() < 0.35
    if piano:
        tone = _mix_tables(rng, "epiano", "mellow")
        for bar in range(bars):
            root = key + int(prog[bar % 4])
            chord = voicing(root, qual[int(prog[bar % 4])], key + 7, key + 24)
            pattern = [chord[0], chord[-1], chord[len(chord) // 2], chord[-1]] * 2  # Alberti
            for i, m in enumerate(pattern):
                mix.note("harmony", (bar * 4 + i / 2) * beat, beat * 0.6, m, tone, 0.5, decay=0.6)
            mix.note("bass", bar * 4 * beat, 4 * beat, root - 12, tone, 0.5, decay=1.2)
        lead_table, vib, attack = tone, None, 0.005
    else:
        strings = _mix_tables(rng, "string", "saw")
        vib_rate = rng.uniform(4.5, 6)
        for bar in range(bars):
            root = key + int(prog[bar % 4])
            chord = voicing(root, qual[int(prog[bar % 4])], key + 4, key + 19)
            for m in chord:
                for det in (-0.08, 0.08):
                    mix.note(
                        "harmony",
                        bar * 4 * beat,
                        4 * beat,
                        m + det,
                        strings,
                        0.3,
                        attack=rng.uniform(0.2, 0.5),
                        decay=1.0,
                        sustain=0.8,
                        release=0.4,
                        vibrato=(vib_rate, 0.004),
                    )
            mix.note(
                "bass",
                bar * 4 * beat,
                4 * beat,
                root - 12,
                strings,
                0.6,
                attack=0.15,
                decay=1,
                sustain=0.8,
                release=0.4,
                vibrato=(5, 0.003),
            )
        lead_table, vib, attack = strings, (rng.uniform(5, 6.5), 0.006), 0.08
    pool = scale_notes(key, scale, key + 19, key + 36)
    t = 0.0
    for m in _melody(rng, pool, int(duration / beat) + 4, step_max=2):
        d = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        mix.note(
            "lead",
            t,
            d * 1.05,
            m,
            lead_table,
            0.45,
            attack=attack,
            decay=0.8,
            sustain=0.75 if vib else 0.0,
            release=0.15,
            vibrato=vib,
        )
        t += d
        if t > duration:
            break
    return tempo, {"harmony": 0.8, "bass": 0.6, "lead": 0.6}, {"reverb": rng.uniform(0.9, 1.8), "swell": True}


def _country(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(96, 136)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.choice([43, 38, 45, 48, 40]))  # G D A C E
    prog = rng.choice([[0, 5, 0, 7], [0, 7, 5, 0], [0, 0, 5, 7]])
    mix.hits("drums", _grid(bars, beat, 4, [1, 3]), brush(rng, sr), 0.6, jitter=0.005)
    mix.hits("drums", _grid(bars, beat, 4, [0, 2]), kick(rng, sr, tau=0.12), 0.6, jitter=0.005)
    sh = _grid(bars, beat, 4, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5])
    mix.hits("drums", sh, shaker(rng, sr), np.tile([0.3, 0.5], len(sh) // 2), jitter=0.005)
    acoustic = _mix_tables(rng, "bright", "string")
    for bar in range(bars):
        root = key + int(prog[bar % 4])
        for b, iv in enumerate([0, 7, 0, 7]):
            mix.note(
                "bass",
                (bar * 4 + b) * beat,
                beat * 0.7,
                root + iv - (12 if iv else 0),
                TABLES["bass"],
                0.8,
                decay=0.2,
                sustain=0.2,
            )
        chord = voicing(root + 12, "maj", key + 16, key + 31)
        for b in (1, 3):
            mix.chord(
                "harmony",
                (bar * 4 + b) * beat,
                beat * 0.8,
                chord,
                acoustic,
                0.7,
                strum=0.015,
                decay=0.25,
                bright=(TABLES["saw"], 0.05),
            )
        for b in (1.5, 3.5):
            mix.chord(
                "harmony", (bar * 4 + b) * beat, beat * 0.3, chord, acoustic, 0.3, strum=-0.01, decay=0.12
            )
    pool = scale_notes(key, PENTA_MAJOR, key + 24, key + 40)
    twang = _mix_tables(rng, "bright", "square")
    t = rng.uniform(0, 4) * beat
    while t < duration:
        for m in _melody(rng, pool, int(rng.integers(3, 8)), step_max=1):
            d = beat * float(rng.choice([0.5, 0.5, 1.0]))
            mix.note(
                "lead",
                t,
                d,
                m,
                twang,
                0.45,
                decay=0.3,
                bright=(TABLES["saw"], 0.02),
                glide_from=m - float(rng.choice([0, 0, 2])),
            )
            t += d
        t += beat * rng.uniform(2, 4)
    return tempo, {"drums": 0.6, "bass": 0.8, "harmony": 0.8, "lead": 0.5}, {}


def _disco(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(110, 132)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.integers(38, 46))
    prog = rng.choice([[0, 0, 5, 5], [0, 5, 0, 5], [0, 0, 3, 5]])
    qual = "m7" if rng.uniform() < 0.6 else "maj7"
    mix.hits("drums", _grid(bars, beat, 4, [0, 1, 2, 3]), kick(rng, sr, tau=0.15), jitter=0.002)
    mix.hits(
        "drums",
        _grid(bars, beat, 4, [1, 3]),
        layer(clap(rng, sr), snare(rng, sr), gains=[1.0, 0.5]),
        0.7,
        jitter=0.002,
    )
    mix.hits("drums", _grid(bars, beat, 4, [0.5, 1.5, 2.5, 3.5]), hat(rng, sr, 0.12), 0.6, jitter=0.002)
    mix.hits("drums", _grid(bars, beat, 4, np.arange(16) / 4), hat(rng, sr, 0.02), 0.25, jitter=0.002)
    strings = _mix_tables(rng, "saw", "string")
    chuck = _mix_tables(rng, "bright", "square")
    for bar in range(bars):
        root = key + int(prog[bar % 4])
        for i in range(8):
            mix.note(
                "bass",
                (bar * 4 + i / 2) * beat,
                beat * 0.35,
                root + (12 if i % 2 else 0),
                TABLES["bass"],
                0.9,
                decay=0.15,
                sustain=0.4,
            )
        chord = voicing(root + 24, qual, key + 24, key + 40)
        if rng.uniform() < 0.5:
            mix.chord(
                "harmony", bar * 4 * beat, 4 * beat, chord, strings, 0.5, attack=0.05, decay=1, sustain=0.8
            )
        else:
            for b in (0, 1.5, 2.5):
                mix.chord(
                    "harmony", (bar * 4 + b) * beat, beat * 0.4, chord, strings, 0.6, attack=0.01, decay=0.2
                )
        for i in range(16):
            if i % 4 in (1, 3):
                mix.chord("guitar", (bar * 4 + i / 4) * beat, 0.04, chord[:3], chuck, 0.3, decay=0.03)
    return tempo, {"drums": 0.9, "bass": 0.9, "harmony": 0.6, "guitar": 0.5}, {"sidechain": (beat, 0.25)}


def _hiphop(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(78, 98)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.integers(33, 41))
    swing = rng.uniform(0.55, 0.64)
    steps = [0, 10] + [
        int(s) for s in rng.choice([3, 7, 8, 11, 14], size=int(rng.integers(1, 3)), replace=False)
    ]
    k = kick(rng, sr, f_lo=rng.uniform(40, 50), tau=0.22)
    mix.hits("drums", _grid(bars, beat, 4, np.array(sorted(steps)) / 4, swing), k, jitter=0.008)
    mix.hits(
        "drums",
        _grid(bars, beat, 4, [1, 3]),
        layer(snare(rng, sr, tau=0.14), clap(rng, sr), gains=[1.0, 0.6]),
        0.9,
        jitter=0.008,
    )
    hh = np.sort(
        np.concatenate(
            [
                _grid(bars, beat, 4, np.arange(8) / 2, swing),
                _grid(bars, beat, 4, [b + 0.25 for b in range(4)], swing)[::3],
            ]
        )
    )
    mix.hits("drums", hh, hat(rng, sr, 0.025), rng.uniform(0.25, 0.5, len(hh)), jitter=0.008)
    prog = rng.choice([[0, 0, 8, 8], [0, 0, 5, 3], [0, 3, 8, 7]])
    keys = _mix_tables(rng, "epiano", "mellow")
    for bar in range(bars):
        root = key + int(prog[bar % 4])
        for start, length, gain in ((0.0, 2.2, 0.9), (2.5, 1.2, 0.7)):
            key808 = ("808", root, length)
            if key808 not in mix.cache:
                mix.cache[key808] = sub808(rng, sr, root, length * beat)
            mix.add("bass", (bar * 4 + start) * beat, mix.cache[key808], gain)
        chord = voicing(root + 24, "m7" if rng.uniform() < 0.7 else "m9", key + 19, key + 34)
        mix.chord("harmony", bar * 4 * beat, 2 * beat, chord, keys, 0.5, attack=0.01, decay=0.8, sustain=0.3)
        mix.chord("harmony", (bar * 4 + 2.5) * beat, 1.5 * beat, chord, keys, 0.35, attack=0.01, decay=0.6)
    return (
        tempo,
        {"drums": 1.0, "bass": 1.0, "harmony": 0.5},
        {"lofi": rng.uniform(3500, 6500), "crackle": True},
    )


def _jazz(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(116, 200)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    swing = 2 / 3
    key = int(rng.integers(36, 46))
    r = ride(rng, sr)
    rt = _grid(bars, beat, 4, [0, 1, 1.5, 2, 3, 3.5], swing)
    mix.hits("drums", rt, r, np.tile([0.7, 0.8, 0.5, 0.7, 0.8, 0.5], bars), jitter=0.008)
    mix.hits("drums", _grid(bars, beat, 4, [1, 3]), hat(rng, sr, 0.015), 0.35, jitter=0.008)
    comp = _grid(bars, beat, 4, [0.5, 1.5, 2.5, 3.5], swing)
    comp = comp[rng.uniform(size=len(comp)) < 0.25]
    mix.hits("drums", comp, snare(rng, sr, tau=0.06, bright=0.7), 0.25, jitter=0.01)
    mix.hits("drums", _grid(bars, beat, 4, [0, 1, 2, 3]), kick(rng, sr, tau=0.1), 0.15, jitter=0.01)
    # ii7 - V7 - Imaj7 - VI7, two beats or a bar each
    prog = [(2, "m7"), (7, "7"), (0, "maj7"), (9, "7")]
    per = 2 if rng.uniform() < 0.5 else 4
    upright = _mix_tables(rng, "bass", "sine")
    piano = _mix_tables(rng, "epiano", "bright")
    n_chords = int(bars * 4 / per) + 1
    for c in range(n_chords):
        iv, q = prog[c % 4]
        root = key + iv
        next_root = key + prog[(c + 1) % 4][0]
        tones = [root, root + QUALITY[q][1], root + 7, root + QUALITY[q][-1] - 12]
        for b in range(per):
            t = (c * per + b) * beat
            m = tones[b % len(tones)] if b < per - 1 else next_root + int(rng.choice([-1, 1]))
            mix.note("bass", t, beat * 0.9, m, upright, 0.9, attack=0.005, decay=0.35, sustain=0.2)
        voice = voicing(root + 12, q if q != "7" else "9", key + 10, key + 28)[1:]  # rootless
        for t in (
            c * per * beat
            + np.sort(rng.choice([swing, 1.0, 1 + swing, per - 1 + swing], 2, replace=False)) * beat
        ):
            mix.chord(
                "harmony", float(t), beat * float(rng.choice([0.3, 0.5, 0.8])), voice, piano, 0.55, decay=0.5
            )
    if rng.uniform() < 0.6:
        sax = _mix_tables(rng, "reed", "saw")
        pool = scale_notes(key, (0, 2, 3, 4, 5, 7, 9, 10, 11), key + 17, key + 36)
        t = rng.uniform(0, 2) * beat
        while t < duration:
            for m in _melody(rng, pool, int(rng.integers(4, 10)), step_max=3):
                d = beat * float(rng.choice([swing, 1 - swing, 1.0]))
                mix.note("lead", t, d, m, sax, 0.45, attack=0.02, decay=0.4, sustain=0.6, vibrato=(5, 0.008))
                t += d
            t += beat * rng.uniform(1, 3)
    return tempo, {"drums": 0.7, "bass": 0.9, "harmony": 0.6, "lead": 0.5}, {"reverb": rng.uniform(0.3, 0.6)}


def _metal(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(100, 136)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.integers(37, 41))  # C#2 .. E2
    k = kick(rng, sr, f_hi=rng.uniform(150, 200), tau=0.06)
    mix.hits("drums", _grid(bars, beat, 4, np.arange(16) / 4), k, 0.8, jitter=0.002)
    mix.hits("drums", _grid(bars, beat, 4, [1, 3]), snare(rng, sr, tau=0.12, bright=1.2), 1.0, jitter=0.002)
    mix.hits("drums", _grid(bars, beat, 4, [0]), crash(rng, sr), 0.8, jitter=0.002)
    mix.hits("drums", _grid(bars, beat, 4, [0.5, 1.5, 2.5, 3.5]), ride(rng, sr, 0.2), 0.4, jitter=0.002)
    guitar = _mix_tables(rng, "saw", "square")
    riff_pool = [key + iv for iv in PHRYGIAN[:5]]
    for bar in range(bars):
        for i in range(16):
            t = (bar * 4 + i / 4) * beat
            if i % 8 < 6:  # palm-muted chugs on the root
                mix.chord("guitar", t, beat * 0.18, [key, key + 7], guitar, 0.9, decay=0.05, sustain=0.1)
            elif i % 8 == 6:
                root = int(rng.choice(riff_pool))
                mix.chord(
                    "guitar", t, beat * 0.5, [root, root + 7, root + 12], guitar, 1.0, decay=0.5, sustain=0.6
                )
        mix.note("bass", bar * 4 * beat, 4 * beat, key - 12, TABLES["saw"], 0.6, decay=2, sustain=0.8)
    return (
        tempo,
        {"drums": 0.9, "guitar": 1.0, "bass": 0.6},
        {"drive": ("guitar", rng.uniform(12, 30)), "master_drive": 2.0},
    )


def _pop(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(96, 128)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.integers(41, 50))
    prog = rng.choice([[0, 7, 9, 5], [9, 5, 0, 7], [0, 5, 9, 7]])
    qual = {0: "maj", 7: "maj", 9: "min", 5: "maj"}
    mix.hits("drums", _grid(bars, beat, 4, [0, 2, 2.5]), kick(rng, sr, tau=0.14), jitter=0.003)
    mix.hits("drums", _grid(bars, beat, 4, [1, 3]), clap(rng, sr), 0.9, jitter=0.003)
    mix.hits("drums", _grid(bars, beat, 4, np.arange(8) / 2), hat(rng, sr, 0.03), 0.35, jitter=0.003)
    pad = _mix_tables(rng, "saw", "string")
    pluck = _mix_tables(rng, "bright", "epiano")
    for bar in range(bars):
        root = key + int(prog[bar % 4])
        chord = voicing(root + 12, qual[int(prog[bar % 4])], key + 12, key + 26)
        mix.chord(
            "harmony",
            bar * 4 * beat,
            4 * beat,
            chord,
            pad,
            0.45,
            attack=0.08,
            decay=1,
            sustain=0.8,
            release=0.2,
        )
        arp = chord + [chord[0] + 12]
        for i in range(8):
            mix.note(
                "arp", (bar * 4 + i / 2) * beat, beat * 0.4, arp[i % len(arp)] + 12, pluck, 0.35, decay=0.12
            )
        for i in range(8):
            mix.note(
                "bass",
                (bar * 4 + i / 2) * beat,
                beat * 0.45,
                root - 12,
                TABLES["bass"],
                0.7,
                decay=0.2,
                sustain=0.5,
            )
    voice = _mix_tables(rng, "vowel", "sine")
    pool = scale_notes(key, PENTA_MAJOR, key + 24, key + 38)
    t = rng.uniform(0, 1) * beat
    while t < duration:
        for m in _melody(rng, pool, int(rng.integers(4, 9)), step_max=2):
            d = beat * float(rng.choice([0.5, 0.5, 1.0, 1.5]))
            mix.note(
                "lead",
                t,
                d,
                m,
                voice,
                0.55,
                attack=0.03,
                decay=0.6,
                sustain=0.8,
                release=0.08,
                vibrato=(5.5, 0.012),
            )
            t += d
        t += beat * rng.uniform(1, 2)
    return (
        tempo,
        {"drums": 0.9, "harmony": 0.5, "arp": 0.5, "bass": 0.7, "lead": 0.7},
        {"sidechain": (beat, 0.5)},
    )


def _reggae(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(62, 84)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.integers(38, 46))
    minor = rng.uniform() < 0.5
    prog = rng.choice([[0, 0, 5, 5], [0, 5, 0, 7], [0, 0, 7, 5]])
    q = "min" if minor else "maj"
    mix.hits("drums", _grid(bars, beat, 4, [2]), kick(rng, sr, tau=0.2), jitter=0.006)
    mix.hits("drums", _grid(bars, beat, 4, [2]), rim(rng, sr), 0.9, jitter=0.006)
    hh = _grid(bars, beat, 4, np.arange(8) / 2, rng.uniform(0.5, 0.6))
    mix.hits("drums", hh, hat(rng, sr, 0.04), np.tile([0.35, 0.2], len(hh) // 2), jitter=0.006)
    skank = _mix_tables(rng, "bright", "organ")
    organ = TABLES["organ"]
    bass_pattern = [(0.5, 0), (1.0, 0), (1.5, 7), (2.5, 12), (3.0, 10), (3.5, 7)]
    for bar in range(bars):
        root = key + int(prog[bar % 4])
        chord = voicing(root + 12, q, key + 17, key + 31)
        for b in (0.5, 1.5, 2.5, 3.5):
            mix.chord("harmony", (bar * 4 + b) * beat, 0.07, chord, skank, 0.8, strum=0.004, decay=0.05)
            mix.chord("organ", (bar * 4 + b + 0.25) * beat, 0.06, chord, organ, 0.4, decay=0.05)
        for p, iv in bass_pattern:
            if rng.uniform() < 0.85:
                iv = iv if not (minor and iv == 4) else 3
                mix.note(
                    "bass",
                    (bar * 4 + p) * beat,
                    beat * 0.45,
                    root - 12 + iv,
                    TABLES["bass"],
                    1.0,
                    decay=0.4,
                    sustain=0.5,
                )
    return tempo, {"drums": 0.8, "harmony": 0.55, "organ": 0.4, "bass": 1.1}, {"bass_lowpass": 500.0}


def _rock(mix: _Mix, rng, duration: float):
    sr = mix.sr
    tempo = rng.uniform(108, 150)
    beat = 60 / tempo
    bars = int(duration / (4 * beat)) + 2
    key = int(rng.choice([40, 45, 43, 38, 42]))
    prog = rng.choice([[0, 10, 5, 0], [0, 5, 7, 5], [0, 7, 9, 5], [0, 3, 5, 0]])
    mix.hits("drums", _grid(bars, beat, 4, [0, 2, 2.5]), kick(rng, sr, tau=0.12), jitter=0.004)
    mix.hits("drums", _grid(bars, beat, 4, [1, 3]), snare(rng, sr, tau=0.14), 0.9, jitter=0.004)
    mix.hits("drums", _grid(bars, beat, 4, np.arange(8) / 2), hat(rng, sr, 0.04), 0.4, jitter=0.004)
    mix.hits("drums", _grid(bars, beat, 4, [0])[::4], crash(rng, sr), 0.6)
    guitar = _mix_tables(rng, "saw", "bright")
    for bar in range(bars):
        root = key + int(prog[bar % 4])
        shape = (
            [root + 12, root + 19, root + 24]
            if rng.uniform() < 0.6
            else voicing(root + 12, "maj", key + 12, key + 28)
        )
        for i in range(8):
            mix.chord(
                "guitar",
                (bar * 4 + i / 2) * beat,
                beat * 0.45,
                shape,
                guitar,
                0.8 if i % 2 == 0 else 0.6,
                strum=0.006,
                decay=0.3,
                sustain=0.5,
            )
            mix.note(
                "bass",
                (bar * 4 + i / 2) * beat,
                beat * 0.45,
                root,
                TABLES["bass"],
                0.8,
                decay=0.2,
                sustain=0.5,
            )
    if rng.uniform() < 0.5:
        pool = scale_notes(key, PENTA_MINOR, key + 24, key + 41)
        t = rng.uniform(0, 4) * beat
        while t < duration:
            for m in _melody(rng, pool, int(rng.integers(3, 8))):
                d = beat * float(rng.choice([0.5, 1.0]))
                mix.note("lead", t, d, m, guitar, 0.5, decay=0.6, sustain=0.6, vibrato=(6, 0.01))
                t += d
            t += beat * rng.uniform(2, 4)
    return (
        tempo,
        {"drums": 0.9, "guitar": 0.9, "bass": 0.7, "lead": 0.5},
        {"drive": ("guitar", rng.uniform(3, 7)), "drive_lead": True},
    )


GENRE_SYNTHS = {
    "blues": _blues,
    "classical": _classical,
    "country": _country,
    "disco": _disco,
    "hiphop": _hiphop,
    "jazz": _jazz,
    "metal": _metal,
    "pop": _pop,
    "reggae": _reggae,
    "rock": _rock,
}


# ----------------------------------------------------------------------------------------------------------
# mixing and mastering
# ----------------------------------------------------------------------------------------------------------


def _filter(x: np.ndarray, sr: int, cutoff: float, kind: str, order: int) -> np.ndarray:
    """Butterworth filter (first order: `lfilter`, higher: second-order sections); scipy's float64 paths are
    the fast ones, so filter in float64 and return float32."""
    x = np.asarray(x, dtype=np.float64)
    if order == 1:
        b, a = signal.butter(1, min(cutoff, 0.45 * sr), kind, fs=sr)
        return signal.lfilter(b, a, x).astype(np.float32)
    sos = signal.butter(order, min(cutoff, 0.45 * sr), kind, fs=sr, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def _lowpass(x: np.ndarray, sr: int, cutoff: float, order: int = 2) -> np.ndarray:
    return _filter(x, sr, cutoff, "lowpass", order)


def _highpass(x: np.ndarray, sr: int, cutoff: float, order: int = 2) -> np.ndarray:
    return _filter(x, sr, cutoff, "highpass", order)


def _reverb(x: np.ndarray, sr: int, rng, seconds: float) -> np.ndarray:
    n = int(seconds * sr)
    ir = rng.standard_normal(n, dtype=np.float32) * _decay(n, sr, seconds / 6.9)
    ir = _lowpass(ir, sr, 5000)
    ir[0] = 0.0
    wet = signal.fftconvolve(x, ir)[: len(x)]
    wet *= np.std(x) / (np.std(wet) + 1e-9)
    return (x + 0.35 * wet).astype(np.float32)


def synthesize_track(
    genre: str, duration_seconds: float, sampling_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One synthetic track of `genre`, float32 mono in [-1, 1]."""
    sr = sampling_rate
    n = int(round(duration_seconds * sr))
    mix = _Mix(n, sr, rng)
    _, levels, fx = GENRE_SYNTHS[genre](mix, rng, duration_seconds)
    if "drive" in fx:  # distortion: normalise, tanh, then a cabinet-like low-pass
        target, drive = fx["drive"]
        bus = mix.buses[target]
        bus /= np.max(np.abs(bus)) + 1e-9
        mix.buses[target] = _lowpass(np.tanh(drive * bus), sr, 5500 if drive > 10 else 7000, order=2)
        if fx.get("drive_lead") and "lead" in mix.buses:
            lead = mix.buses["lead"] / (np.max(np.abs(mix.buses["lead"])) + 1e-9)
            mix.buses["lead"] = _lowpass(np.tanh(drive * lead), sr, 6500)
    if "harmony" in mix.buses and fx.get("lofi"):
        mix.buses["harmony"] = _lowpass(mix.buses["harmony"], sr, fx["lofi"])
    if "bass" in mix.buses and fx.get("bass_lowpass"):
        mix.buses["bass"] = _lowpass(mix.buses["bass"], sr, fx["bass_lowpass"])
    out = np.zeros(n, dtype=np.float32)
    for name, bus in mix.buses.items():
        level = levels.get(name, 0.5) * 10 ** (rng.normal(0, 1.5) / 20)  # +-3 dB mix variation
        rms = np.sqrt(np.mean(bus**2)) + 1e-9
        out += (level * 0.1 / rms) * bus
    if "sidechain" in fx:  # pumping: duck everything but the drums on each beat
        beat, depth = fx["sidechain"]
        t = _time(n, sr)
        duck = 1.0 - np.float32(depth) * np.exp((t % np.float32(beat)) * np.float32(-1.0 / (0.12 * beat)))
        drums = mix.buses.get("drums", np.zeros(n, np.float32))
        d_level = levels.get("drums", 0.5) * 0.1 / (np.sqrt(np.mean(drums**2)) + 1e-9)
        out = ((out - d_level * drums) * duck + d_level * drums).astype(np.float32)
    if "reverb" in fx:
        out = _reverb(out, sr, rng, fx["reverb"])
    if fx.get("swell"):
        t = _time(n, sr)
        period = rng.uniform(6, 14)
        out *= 0.6 + 0.4 * np.sin(t * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3)))
    if fx.get("crackle"):
        pops = np.zeros(n, dtype=np.float32)
        idx = rng.integers(0, n, int(duration_seconds * rng.uniform(8, 25)))
        pops[idx] = rng.uniform(-1, 1, len(idx)) * np.max(np.abs(out)) * 0.3
        out += _highpass(pops, sr, 1000, order=1)
    # per-track tilt EQ and noise floor
    tilt = rng.uniform(-0.35, 0.35)
    if tilt > 0:
        out = out + np.float32(tilt) * _highpass(out, sr, 2500, order=1)
    else:
        out = out + np.float32(-tilt) * (_lowpass(out, sr, 1500, order=1) - out)
    peak = np.max(np.abs(out)) + 1e-9
    out /= peak
    if "master_drive" in fx:
        out = np.tanh(fx["master_drive"] * out) / np.tanh(fx["master_drive"])
    noise_db = rng.uniform(-60, -38)
    out += np.float32(10 ** (noise_db / 20)) * _noise(rng, n, sr)
    out *= rng.uniform(0.45, 0.95) / (np.max(np.abs(out)) + 1e-9)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------------------------------------


def _manifest(tracks_per_genre: int, duration_seconds: float, sampling_rate: int, seed: int) -> dict:
    return {
        "generator": "ast_dora.data.synthetic",
        "version": GENERATOR_VERSION,
        "tracks_per_genre": int(tracks_per_genre),
        "duration_seconds": float(duration_seconds),
        "sampling_rate": int(sampling_rate),
        "seed": int(seed),
        "genres": list(GTZAN_GENRES),
    }


def _write_track(root: Path, g: int, i: int, duration_seconds: float, sampling_rate: int, seed: int) -> Path:
    genre = GTZAN_GENRES[g]
    audio = synthesize_track(genre, duration_seconds, sampling_rate, np.random.default_rng([seed, g, i]))
    path = root / genre / f"{genre}.{i:05d}.wav"
    sf.write(path, audio, sampling_rate, subtype="PCM_16")
    return path


def generate_synthetic_gtzan(
    root: str | Path,
    tracks_per_genre: int = 20,
    duration_seconds: float = 12.0,
    sampling_rate: int = 22050,
    seed: int = 0,
    num_workers: int = 1,
) -> list[Path]:
    """Write `<root>/<genre>/<genre>.NNNNN.wav` (16-bit PCM) for GTZAN's ten genres plus `manifest.json`.

    Track `i` of genre `g` is drawn from `np.random.default_rng([seed, g, i])`, so any subset regenerates
    identically whatever `num_workers` (processes) is. Returns the written paths.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for genre in GTZAN_GENRES:
        (root / genre).mkdir(exist_ok=True)
    jobs = [(g, i) for g in range(len(GTZAN_GENRES)) for i in range(tracks_per_genre)]
    if num_workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        from ..workers import mp_context

        # fork where no native thread pool runs in this process, forkserver where one may (`workers.py`)
        with ProcessPoolExecutor(num_workers, mp_context=mp_context()) as pool:
            n = len(jobs)
            paths = list(
                pool.map(
                    _write_track,
                    [root] * n,
                    [g for g, _ in jobs],
                    [i for _, i in jobs],
                    [duration_seconds] * n,
                    [sampling_rate] * n,
                    [seed] * n,
                    chunksize=8,
                )
            )
    else:
        paths = [_write_track(root, g, i, duration_seconds, sampling_rate, seed) for g, i in jobs]
    manifest = _manifest(tracks_per_genre, duration_seconds, sampling_rate, seed)
    manifest["files"] = len(paths)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info(
        "Generated %d synthetic tracks (%.1f s each) in %s in %.1f s",
        len(paths),
        duration_seconds,
        root,
        time.perf_counter() - start,
    )
    return paths


def ensure_synthetic_gtzan(
    root: str | Path,
    tracks_per_genre: int,
    duration_seconds: float,
    seed: int = 0,
    sampling_rate: int = 22050,
    num_workers: int = 1,
) -> Path:
    """Generate the synthetic set into `root` unless a manifest there says it was made with these parameters.

    A folder holding other audio (no manifest) is never overwritten.
    """
    root = Path(root)
    wanted = _manifest(tracks_per_genre, duration_seconds, sampling_rate, seed)
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            found = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            found = {}
        found_files = found.pop("files", None)
        expected = [root / g / f"{g}.{i:05d}.wav" for g in GTZAN_GENRES for i in range(tracks_per_genre)]
        if found == wanted and found_files == len(expected) and all(p.is_file() for p in expected):
            logger.info("Reusing synthetic GTZAN in %s (%s)", root, manifest_path)
            return root
        logger.info(
            "Synthetic GTZAN in %s was made with other parameters (%s); regenerating with %s",
            root,
            found,
            wanted,
        )
        for genre in GTZAN_GENRES:
            if (root / genre).is_dir():
                shutil.rmtree(root / genre)
        manifest_path.unlink()
    elif root.is_dir() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists and holds files but no {MANIFEST_NAME}: it is not a synthetic GTZAN made by this "
            "project, so it is left alone. Pass another data_dir for --synthetic, or drop --synthetic to train on it."
        )
    generate_synthetic_gtzan(root, tracks_per_genre, duration_seconds, sampling_rate, seed, num_workers)
    return root


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.data.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out_dir", help="Folder to write <genre>/<genre>.NNNNN.wav into.")
    parser.add_argument("--tracks_per_genre", type=int, default=20)
    parser.add_argument("--duration", type=float, default=12.0, help="Seconds per track.")
    parser.add_argument("--sampling_rate", type=int, default=22050)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=1, help="Processes writing tracks in parallel.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    paths = generate_synthetic_gtzan(
        args.out_dir, args.tracks_per_genre, args.duration, args.sampling_rate, args.seed, args.num_workers
    )
    print(f"wrote {len(paths)} tracks to {args.out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
