"""Shared fixtures: generated audio folders in GTZAN's layout, a local parquet dataset with the Hub schema,
tiny feature extractors and the shared real-audio folder. Nothing here downloads anything.

Folder fixtures are session-scoped and must be treated as read-only; use `make_gtzan_folder` (a plain
function, also exposed as the `gtzan_folder_factory` fixture) to build a folder of your own.
"""

from __future__ import annotations

import io
import logging
import os
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import BatchFeature, SequenceFeatureExtractor

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
REPO_ROOT = Path(__file__).resolve().parents[1]
# `../shared` beside the repository; AST_DORA_SHARED_DIR names it for a checkout elsewhere (a git worktree).
SHARED_DIR = Path(os.environ.get("AST_DORA_SHARED_DIR") or REPO_ROOT.parent / "shared")


@pytest.fixture(autouse=True)
def _restore_project_log_levels():
    """A training run in the test process sets the project's and the libraries' log levels for the process
    (`ast_dora.training.setup_logging`, e.g. `log_level: error` in a tiny config); tests run in random order, so
    each test gets back the levels it started with, and a later test's `caplog` still sees the warnings."""
    import datasets
    import transformers

    loggers = [logging.getLogger(name) for name in ("ast_dora", "ast_dora.training")]
    levels = [logger.level for logger in loggers]
    verbosity = transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity()
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    transformers.utils.logging.set_verbosity(verbosity[0])
    datasets.utils.logging.set_verbosity(verbosity[1])


# ----------------------------------------------------------------------------------------------------------
# audio helpers (plain functions, importable as `from conftest import ...` in tests of this folder)
# ----------------------------------------------------------------------------------------------------------


def tone(
    seconds: float, sampling_rate: int, freq: float = 440.0, channels: int = 1, seed: int = 0
) -> np.ndarray:
    """A decaying tone plus a little noise, float32 in [-0.5, 0.5]; shape (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sampling_rate))
    t = np.arange(n) / sampling_rate
    x = 0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-t % 0.5) + 0.02 * rng.standard_normal(n)
    x = x.astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (0.5 + 0.5 * c / max(channels - 1, 1)) for c in range(channels)], axis=1)


def write_audio(path: Path, audio: np.ndarray, sampling_rate: int) -> Path:
    """Write `.wav`/`.flac`/`.ogg` with soundfile and `.au` (Sun/NeXT, 16-bit big-endian) by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".au":
        pcm = np.clip(np.asarray(audio).reshape(len(audio), -1), -1, 1)
        channels = pcm.shape[1]
        data = (pcm * 32767).astype(">i2").tobytes()
        header = b".snd" + np.array([24, len(data), 3, sampling_rate, channels], dtype=">u4").tobytes()
        path.write_bytes(header + data)
    else:
        sf.write(path, audio, sampling_rate, subtype="PCM_16" if path.suffix == ".wav" else None)
    return path


def wav_bytes(audio: np.ndarray, sampling_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, sampling_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_dataset(rows: dict, features: dict, audio_feature=None):
    """`datasets.Dataset` of `rows` whose `audio` column ({"bytes", "path"} dicts) gets `audio_feature` (default
    `datasets.Audio()`). Built as a plain struct, then cast, as the project does: encoding rows into an `Audio`
    feature imports torchcodec (datasets' `Audio.encode_example`), which the project does not install."""
    import datasets

    from ast_dora.data.sources import AUDIO_STORAGE

    plain = datasets.Features({**features, "audio": AUDIO_STORAGE})
    return datasets.Dataset.from_dict(rows, features=plain).cast_column(
        "audio", audio_feature or datasets.Audio()
    )


def make_gtzan_folder(
    root: Path,
    tracks_per_genre: int = 2,
    seconds: float = 3.0,
    sampling_rate: int = 22050,
    genres=GENRES,
    extension: str = ".wav",
) -> Path:
    """`root/<genre>/<genre>.NNNNN<ext>` tones (a different pitch per genre). Returns `root`."""
    for g, genre in enumerate(genres):
        for i in range(tracks_per_genre):
            audio = tone(seconds, sampling_rate, freq=110.0 * 2 ** (g / 4), seed=g * 100 + i)
            write_audio(root / genre / f"{genre}.{i:05d}{extension}", audio, sampling_rate)
    return root


def make_silent_wav(path: Path, seconds: float = 0.05, sampling_rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sampling_rate)
        w.writeframes(b"\0\0" * int(seconds * sampling_rate))


@dataclass
class MessyGTZAN:
    """A GTZAN-layout folder with the usual real-world problems, and what a loader should find in it."""

    root: Path
    track_ids: list[str]
    corrupt: str  # garbage bytes named .wav
    stereo: str
    short: str  # 2 s, shorter than a 4-s window
    au_tracks: list[str]
    sampling_rates: dict[str, int] = field(default_factory=dict)  # track id -> file's rate


# ----------------------------------------------------------------------------------------------------------
# programs outside Python
# ----------------------------------------------------------------------------------------------------------


def running_in_ci(environ=os.environ) -> bool:
    return environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_installed(found: bool, name: str, install: str, environ=os.environ) -> None:
    """For a test that needs something the README's install command does not bring (a browser, a database server)
    or that may be absent (torchcodec, which only a comparison test uses). Absent: skip with one line naming it and
    the command that installs it, so that `python -m pytest` passes on a machine with nothing but pip; except under
    `CI=true`, where CI installs it and the test must run: fail then (a missing install step in CI must not turn
    into a skip nobody reads)."""
    if found:
        return
    message = f"{name} is not installed: {install}"
    if running_in_ci(environ):
        pytest.fail(f"{message} (CI=true: CI installs it, so this test must run)", pytrace=False)
    pytest.skip(message)


# ----------------------------------------------------------------------------------------------------------
# feature extractors
# ----------------------------------------------------------------------------------------------------------


class TinyLogSpecFeatureExtractor(SequenceFeatureExtractor):
    """A cheap stand-in for a model's feature extractor: log band energies of fixed frames, (frames, n_bands)
    per window. Behaves like transformers' extractors: `sampling_rate`, batched call, `to_json_string()`."""

    model_input_names = ["input_values"]

    def __init__(
        self,
        sampling_rate: int = 8000,
        n_bands: int = 8,
        frame_length: int = 400,
        feature_size: int = 1,
        padding_value: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        self.n_bands = n_bands
        self.frame_length = frame_length

    def __call__(self, raw_speech, sampling_rate=None, return_tensors=None, **kwargs) -> BatchFeature:
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(f"expected audio at {self.sampling_rate} Hz, got {sampling_rate}")
        features = []
        for x in raw_speech:
            x = np.asarray(x, dtype=np.float32)
            n = len(x) // self.frame_length
            frames = x[: n * self.frame_length].reshape(n, self.frame_length)
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            bands = np.stack([b.mean(axis=1) for b in np.array_split(power, self.n_bands, axis=1)], axis=1)
            features.append(np.log(bands + 1e-6).astype(np.float32))
        return BatchFeature({"input_values": features}, tensor_type=return_tensors)


@pytest.fixture
def tiny_feature_extractor():
    """8 kHz, (frames, 8) log band energies per window: fast enough for any data test."""
    return TinyLogSpecFeatureExtractor()


@pytest.fixture(scope="session")
def ast_feature_extractor():
    from transformers import ASTFeatureExtractor

    return ASTFeatureExtractor()


# ----------------------------------------------------------------------------------------------------------
# folders
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def gtzan_folder_factory(tmp_path):
    """`factory(name="gtzan", **make_gtzan_folder kwargs)` -> a fresh GTZAN-layout folder under tmp_path."""

    def factory(name: str = "gtzan", **kwargs) -> Path:
        return make_gtzan_folder(tmp_path / name, **kwargs)

    return factory


@pytest.fixture(scope="session")
def messy_gtzan_folder(tmp_path_factory) -> MessyGTZAN:
    """All ten genres, 3 tracks each (4-5 s): wav and au files, sample rates 8/16/22.05/44.1 kHz, one corrupt
    file (`jazz.00001.wav`), one stereo file (`rock.00000.wav`) and one 2-s clip (`pop.00001.wav`)."""
    root = tmp_path_factory.mktemp("messy_gtzan")
    rates = [22050, 16000, 44100, 8000]
    ids, sampling_rates, au = [], {}, []
    for g, genre in enumerate(GENRES):
        for i in range(3):
            tid = f"{genre}.{i:05d}"
            sr = rates[(g + i) % len(rates)]
            seconds, channels, ext = 4.0 + (i % 2), 1, ".wav"
            if tid == "rock.00000":
                channels = 2
            if tid == "pop.00001":
                seconds = 2.0
            if genre in ("classical", "jazz") and i == 2:
                ext = ".au"
                au.append(tid)
            ids.append(tid)
            sampling_rates[tid] = sr
            if tid == "jazz.00001":
                (root / genre).mkdir(parents=True, exist_ok=True)
                (root / genre / f"{tid}.wav").write_bytes(
                    b"RIFF\x10\x00\x00\x00WAVEfmt garbage, not audio" * 3
                )
                continue
            write_audio(
                root / genre / f"{tid}{ext}",
                tone(seconds, sr, 110.0 * 2 ** (g / 4), channels, seed=g * 10 + i),
                sr,
            )
    return MessyGTZAN(
        root=root,
        track_ids=ids,
        corrupt="jazz.00001",
        stereo="rock.00000",
        short="pop.00001",
        au_tracks=au,
        sampling_rates=sampling_rates,
    )


@pytest.fixture(scope="session")
def gtzan_names_folder(tmp_path_factory) -> Path:
    """All 1000 GTZAN file names (`<genre>/<genre>.00000.wav` .. `.00099.wav`) as 0.05-s silent wavs: for split
    tests that only need the names (do not decode all of them in a test)."""
    root = tmp_path_factory.mktemp("gtzan_names")
    for genre in GENRES:
        for i in range(100):
            make_silent_wav(root / genre / f"{genre}.{i:05d}.wav")
    return root


@pytest.fixture(scope="session")
def parquet_gtzan_dataset(tmp_path_factory) -> Path:
    """A local parquet dataset with the Hub GTZAN mirror's schema (confit/gtzan-parquet): `data/{train,
    validation,test}-00000-of-00001.parquet` with columns `audio` (Audio, embedded wav bytes, path
    `<genre>.NNNNN.wav`), `genre` (string) and `label` (ClassLabel of the ten genres); 2/1/1 tracks per genre,
    3-s clips at 22.05 kHz. Load it with `load_dataset(str(path))` or `DataArguments(dataset_name=str(path))`."""
    import datasets

    root = tmp_path_factory.mktemp("parquet_gtzan")
    features = {"genre": datasets.Value("string"), "label": datasets.ClassLabel(names=list(GENRES))}
    layout = {"train": (0, 1), "validation": (2,), "test": (3,)}
    for split, indices in layout.items():
        rows = {"audio": [], "genre": [], "label": []}
        for g, genre in enumerate(GENRES):
            for i in indices:
                audio = tone(3.0, 22050, 110.0 * 2 ** (g / 4), seed=g * 7 + i)
                rows["audio"].append({"bytes": wav_bytes(audio, 22050), "path": f"{genre}.{i:05d}.wav"})
                rows["genre"].append(genre)
                rows["label"].append(g)
        (root / "data").mkdir(exist_ok=True)
        audio_dataset(rows, features, datasets.Audio(sampling_rate=22050)).to_parquet(
            str(root / "data" / f"{split}-00000-of-00001.parquet")
        )
    return root


@pytest.fixture(scope="session")
def synthetic_gtzan_folder(tmp_path_factory) -> Path:
    """The project's synthetic GTZAN, 3 tracks per genre of 6 s (made once per session)."""
    from ast_dora.data import generate_synthetic_gtzan

    root = tmp_path_factory.mktemp("synthetic_gtzan")
    generate_synthetic_gtzan(root, tracks_per_genre=3, duration_seconds=6.0)
    return root


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repo (real audio, split lists); tests using it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(
            f"shared material not found at {SHARED_DIR} (it sits beside the repository in the workplace)"
        )
    return SHARED_DIR


@pytest.fixture(scope="session")
def real_gtzan_dir(shared_dir) -> Path:
    """`../shared/real-audio/gtzan`: 11 real GTZAN tracks in GTZAN's layout (30 s, 22.05 kHz)."""
    path = shared_dir / "real-audio" / "gtzan"
    if not path.is_dir():
        pytest.skip(f"real GTZAN sample not found at {path}")
    return path


# ----------------------------------------------------------------------------------------------------------
# tiny models and torch settings
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_ast_dir(tmp_path_factory):
    """A random tiny AST checkpoint (`make_tiny_ast`, no pretraining), written once; read it, never write to it."""
    from ast_dora.models.tiny_ast import make_tiny_ast

    return make_tiny_ast(tmp_path_factory.mktemp("tiny_ast"))


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: on a shared 2-core machine a second OpenMP thread mostly waits for the first."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
