"""Decoding through PyAV (FFmpeg's libraries from its wheels): real files and generated m4a / opus decode with
torchcodec unimportable and no `ffmpeg` program; nothing maps a system FFmpeg library; the project's entry points
never import torchcodec; and where torchcodec is installed, both decoders give the same samples.

Each check runs in a fresh interpreter: what a process has imported or mapped is the point of these tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_installed

from ast_dora.data import decode_audio, encode_audio
from ast_dora.errors import MissingComponentError

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO_ROOT.parent / "shared" / "real-audio"
FORMATS = ("mp3", "ogg", "flac", "m4a", "opus", "wav", "au")
# PyAV against torchcodec, each resampling to the same rate with FFmpeg's libswresample. Measured: 0 on every file
# in ../shared/real-audio (124 files, 16 and 22.05 kHz) when torchcodec loads the FFmpeg build that PyAV ships; the
# issue measured at most 1.2e-7 (the ogg) against Debian 12's FFmpeg 5.1. The bound leaves room for other FFmpeg
# versions' float rounding, not for another resampler or downmix (those differ by 1e-3 and more).
DECODER_ATOL = 1e-5


def run_python(
    code: str, *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def synthetic_music(seconds: float, sampling_rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2 + 0.05 * np.sin(
        2 * np.pi * 1760 * t
    )
    return np.stack([mono * (1 - 0.3 * c) for c in range(channels)]).astype(np.float32)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> dict[str, Path]:
    """One file per format: the real recordings of ../shared/real-audio where present (mp3, ogg, flac, wav, au),
    generated ones for the rest (m4a / AAC, opus, and any real one missing), 44.1 kHz stereo."""
    folder = tmp_path_factory.mktemp("formats")
    real = {
        "mp3": REAL_AUDIO / "formats" / "rock_total_breakdown.mp3",
        "ogg": REAL_AUDIO / "formats" / "jazz_vibe_ace.ogg",
        "flac": REAL_AUDIO / "formats" / "electronic_dubstep.flac",
        "wav": REAL_AUDIO / "gtzan" / "rock" / "rock.00000.wav",
        "au": REAL_AUDIO / "gtzan-au" / "jazz" / "jazz.00000.au",
    }
    files = {kind: path for kind, path in real.items() if path.is_file()}
    for kind in FORMATS:
        if kind not in files and kind != "au":
            files[kind] = encode_audio(folder / f"music.{kind}", synthetic_music(6.0, 44100), 44100)
    return files


# ----------------------------------------------------------------------------------------------------------
# no torchcodec, no ffmpeg program, no system FFmpeg library
# ----------------------------------------------------------------------------------------------------------

BARE_DECODE = """
import json, sys
sys.modules["torchcodec"] = None  # `import torchcodec` fails; find_spec answers "not installed"
from ast_dora.data import decode_audio
from ast_dora.genre_classification.pipeline_genre_classification import _decode
results = {}
for path in sys.argv[1:]:
    decoded = decode_audio(path, 16000)
    piped = _decode(path, 16000)  # the saved pipeline's decoder
    results[path] = {"samples": len(decoded.waveform), "peak": float(abs(decoded.waveform).max()),
                     "channels": decoded.source_channels, "rate": decoded.source_sampling_rate,
                     "pipeline_same": bool(len(piped) == len(decoded.waveform) and (piped == decoded.waveform).all())}
# every FFmpeg library mapped into this process, by path
maps = open("/proc/self/maps").read().split("\\n") if sys.platform == "linux" else []
ffmpeg = sorted({line.split()[-1] for line in maps if line.split() and any(
    "lib" + name in line.split()[-1] for name in ("avcodec", "avformat", "avutil", "swresample"))})
print(json.dumps({"results": results, "ffmpeg_libraries": ffmpeg, "torchcodec": "torchcodec" in sys.modules
                  and sys.modules["torchcodec"] is not None}))
"""


def test_every_format_decodes_without_torchcodec_or_an_ffmpeg_program(audio_files, tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    paths = [str(audio_files[kind]) for kind in FORMATS if kind in audio_files]
    # PATH holds no `ffmpeg`: the pipeline's last fallback (the ffmpeg command) cannot be what decodes
    process = run_python(BARE_DECODE, *paths, env={"PATH": str(empty_bin)})
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == set(paths) and not report["torchcodec"]
    for path, result in report["results"].items():
        assert result["samples"] > 16000 and 0.01 < result["peak"] < 1.5, (path, result)
        assert result["pipeline_same"], f"the saved pipeline decodes {path} differently from the project"
    for kind in ("m4a", "opus"):
        result = report["results"][str(audio_files[kind])]
        assert result["channels"] == 2 and abs(result["samples"] / 16000 - 6.0) < 0.1, (kind, result)
    if sys.platform == "linux":
        import av

        wheel_dir = Path(av.__file__).resolve().parent.parent
        assert report["ffmpeg_libraries"], "no FFmpeg library mapped: the maps check looks at the wrong names"
        system = [
            lib for lib in report["ffmpeg_libraries"] if not Path(lib).resolve().is_relative_to(wheel_dir)
        ]
        assert not system, f"FFmpeg libraries loaded from outside PyAV's wheel ({wheel_dir}): {system}"


ENTRY_POINTS = """
import importlib.util, sys
import ast_dora.cli, ast_dora.training, ast_dora.predict, ast_dora.inference, ast_dora.hub, ast_dora.export
import ast_dora.bench, ast_dora.benchmarks.song, ast_dora.benchmarks.data, ast_dora.benchmarks.train
spec = importlib.util.spec_from_file_location("genre_demo_app", "app.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from ast_dora.data import decode_audio
from ast_dora.benchmarks.song import generated_song
decode_audio(str(generated_song(sys.argv[1], seconds=3.0)), 22050)
print(sorted(name for name in sys.modules if name.split(".")[0] == "torchcodec"))
"""


def test_entry_points_never_import_torchcodec(tmp_path):
    """Training, prediction, the app, the Hub tools and the benchmarks import no torchcodec, even where it is
    installed (an mp3 is written and decoded on the way)."""
    process = run_python(ENTRY_POINTS, str(tmp_path / "song.mp3"))
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------------------------------------
# missing pieces: one line naming what to install
# ----------------------------------------------------------------------------------------------------------

NO_DECODER = """
import sys
sys.modules["av"] = None
sys.modules["torchcodec"] = None
from ast_dora.errors import MissingComponentError
from ast_dora.data import decode_audio
try:
    decode_audio(sys.argv[1], 16000)
except MissingComponentError as error:
    print("project:", error)
from ast_dora.genre_classification.pipeline_genre_classification import _decode
try:
    _decode(sys.argv[1], 16000)
except ValueError as error:
    print("pipeline:", error)
"""


def test_without_any_decoder_the_message_names_pyav(audio_files, tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    process = run_python(NO_DECODER, str(audio_files["mp3"]), env={"PATH": str(empty_bin)})
    assert process.returncode == 0, process.stderr[-3000:]
    lines = process.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["project", "pipeline"], process.stdout
    assert all("pip install av" in line for line in lines), lines


def test_pyav_missing_is_a_missing_component(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingComponentError, match="pip install av"):
        decode_audio(str(REAL_AUDIO / "formats" / "electronic_dubstep.flac"), 16000)
    with pytest.raises(MissingComponentError, match="pip install av"):
        encode_audio("/nonexistent/x.wav", np.zeros(100, np.float32), 8000)


# ----------------------------------------------------------------------------------------------------------
# PyAV against torchcodec, where torchcodec is installed
# ----------------------------------------------------------------------------------------------------------

COMPARE = """
import importlib.util, json, sys
import numpy as np
from torchcodec.decoders import AudioDecoder
# the decoder's own file (numpy and av only), not the package: no transformers import in this process
spec = importlib.util.spec_from_file_location("audio_decoding", "ast_dora/genre_classification/audio_decoding.py")
audio_decoding = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audio_decoding)
report = {}
for path in sys.argv[1:]:
    for rate in (16000, 22050):
        data = AudioDecoder(path, sample_rate=rate).get_all_samples().data
        reference = (data[0] if data.shape[0] == 1 else data.mean(dim=0)).numpy()
        ours = audio_decoding.decode_with_av(path, rate)[0]
        n = min(len(reference), len(ours))
        report[f"{path}@{rate}"] = {"lengths": [len(reference), len(ours)],
                                    "max_abs_diff": float(np.abs(reference[:n] - ours[:n]).max())}
print(json.dumps(report))
"""
TORCHCODEC_UNLOADABLE = "Could not load libtorchcodec"


def ffmpeg_link_folder(folder: Path) -> list[Path]:
    """Links named as torchcodec asks for FFmpeg's libraries (`libavcodec.so.62`, ...) to those inside PyAV's
    wheel, and the wheel's library folder: the `LD_LIBRARY_PATH` under which torchcodec loads on a machine without
    a system FFmpeg (when PyAV's FFmpeg is a version torchcodec supports). Empty where PyAV carries no libraries."""
    import av

    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    if not libs.is_dir():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    for library in libs.glob("lib*-*.so.*"):  # libavcodec-5e6b81c2.so.62.28.102 -> libavcodec.so.62
        if not library.name.startswith(("libav", "libsw", "libpostproc")):
            continue  # the codecs' own libraries are found in av.libs itself
        stem, major = library.name.split("-")[0], library.name.split(".so.")[1].split(".")[0]
        (folder / f"{stem}.so.{major}").symlink_to(library)
    return [folder, libs]


def test_pyav_decodes_like_torchcodec(audio_files, tmp_path):
    import importlib.util

    require_installed(
        importlib.util.find_spec("torchcodec") is not None,
        "torchcodec (the comparison's reference)",
        'pip install -e ".[dev]"',
    )
    paths = [str(path) for path in audio_files.values()]
    process = run_python(COMPARE, *paths)  # torchcodec with the system's FFmpeg
    if process.returncode != 0 and TORCHCODEC_UNLOADABLE in process.stderr:
        folders = ffmpeg_link_folder(tmp_path / "ffmpeg_links")  # no system FFmpeg: PyAV's own build
        if folders:
            library_path = os.pathsep.join([*map(str, folders), os.environ.get("LD_LIBRARY_PATH", "")])
            process = run_python(COMPARE, *paths, env={"LD_LIBRARY_PATH": library_path})
        loads = not (process.returncode != 0 and TORCHCODEC_UNLOADABLE in process.stderr)
        require_installed(
            loads,
            "an FFmpeg that torchcodec loads (neither the system's nor PyAV's)",
            "apt-get install ffmpeg",
        )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert len(report) == 2 * len(audio_files)
    for key, result in report.items():
        reference, ours = result["lengths"]
        assert reference == ours, f"{key}: torchcodec gives {reference} samples, PyAV {ours}"
        assert result["max_abs_diff"] <= DECODER_ATOL, (key, result)
