"""Helpers shared by the inference, app and browser tests: tiny random-weight models of both kinds saved like
trained ones, songs (real recordings from ../shared when present, generated otherwise) and the demo app served on
a free localhost port inside the test process."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO_ROOT.parent / "shared" / "real-audio"


def save_tiny_model(model_type: str, output_dir: Path) -> Path:
    """A few-layer random model of `model_type`, written by the factory's save path (AST-DoRA: merged + adapter)."""
    from ast_dora.benchmarks.song import random_genre_model
    from ast_dora.models.factory import save_trained_model

    if not (output_dir / "config.json").is_file():
        model, feature_extractor = random_genre_model(model_type, size="tiny")
        save_trained_model(model, feature_extractor, output_dir)
    return output_dir


def export_tiny_onnx(model_dir: Path) -> Path:
    """`model_dir/onnx/` (fp32 and int8) as `python -m ast_dora.export onnx model_dir --quantize int8` writes it."""
    from ast_dora.export import export_onnx

    if not (model_dir / "onnx" / "model_quantized.onnx").is_file():
        export_onnx(model_dir, quantize="int8")
    return model_dir


def generated_wav(
    path: Path,
    seconds: float,
    sampling_rate: int = 44100,
    channels: int = 2,
    genre: str = "rock",
    seed: int = 0,
) -> Path:
    from ast_dora.data import synthesize_track

    mono = synthesize_track(genre, seconds, sampling_rate, np.random.default_rng(seed))
    audio = mono if channels == 1 else np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sampling_rate, subtype="PCM_16")
    return path


def wav_song(folder: Path) -> Path:
    """A 30-s real GTZAN wav when the shared folder is there, else 12 s of generated 44.1-kHz stereo."""
    real = REAL_AUDIO / "gtzan" / "rock" / "rock.00000.wav"
    return real if real.is_file() else generated_wav(folder / "song.wav", 12.0)


def mp3_song(folder: Path) -> Path:
    """A real 139-s mp3 when the shared folder is there, else 25 s of generated music encoded to mp3 by FFmpeg."""
    real = REAL_AUDIO / "formats" / "rock_total_breakdown.mp3"
    if real.is_file():
        return real
    from ast_dora.benchmarks.song import generated_song

    return generated_song(folder / "song.mp3", seconds=25.0)


def short_song(folder: Path) -> Path:
    """A 0.5-s clip (too short to classify)."""
    return generated_wav(folder / "short.wav", 0.5, channels=1)


def silent_song(folder: Path, seconds: float = 3.0) -> Path:
    path = folder / "silent.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000, subtype="PCM_16")
    return path


def text_named_wav(folder: Path) -> Path:
    path = folder / "notes.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("These are my notes, not a recording.\n" * 20)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_app_module():
    """`app.py` from the repository root, imported as a module (it is a script, not part of the package)."""
    if "genre_demo_app" in sys.modules:
        return sys.modules["genre_demo_app"]
    spec = importlib.util.spec_from_file_location("genre_demo_app", REPO_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["genre_demo_app"] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def running_app(
    model_dirs: list[Path],
    work_dir: Path,
    max_seconds: float = 600.0,
    max_file_size: str = "50mb",
    backend: str = "torch",
    classifier_hook=None,
    **classifier_options,
):
    """Serve the demo with `model_dirs` on 127.0.0.1 at a free port, the way `python app.py` does; yields its URL.

    `backend` and `classifier_options` (e.g. batch_size) go to the classifiers; `classifier_hook(classifier)` may
    adjust each one before serving."""
    app = load_app_module()
    specs = [str(d) for d in model_dirs]
    classifiers = app.load_classifiers(specs, max_seconds=max_seconds, backend=backend, **classifier_options)
    for classifier in classifiers.values():
        if classifier_hook is not None:
            classifier_hook(classifier)
    examples = app.example_files(work_dir / "examples")
    demo = app.build_demo(classifiers, examples, max_seconds=max_seconds)
    port = free_port()
    app.launch(
        demo,
        server_name="127.0.0.1",
        port=port,
        max_file_size=max_file_size,
        allowed_paths=[str(work_dir / "examples")],
        prevent_thread_lock=True,
        quiet=True,
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
