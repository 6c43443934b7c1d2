"""Library tagging throughput: `python -m ast_dora.tag`'s engine (decode workers + model batched across songs)
against `predict`'s loop (`GenreClassifier.analyse`, one song after another) over the same files, in one process.

    flock /tmp/cpu-heavy.lock python -m ast_dora.bench tag --model_type vit_hybrid --backend openvino --songs 200
    flock /tmp/cpu-heavy.lock python -m ast_dora.bench tag --model_type ast_dora --backend openvino --songs 20
    flock /tmp/cpu-heavy.lock python -m ast_dora.bench tag --model runs/vit_hybrid --memory_songs 200 1000

The library is `--songs` symlinks (in a temporary folder) to the real recordings in `--audio_dir` (default
../shared/real-audio: 30-s GTZAN and metal clips, 2-3-minute mp3 / flac / ogg songs), cycled; the model is a
trained one (`--model`) or a random one of the real size (`--model_type`, exported to `--backend` first, as
`bench song` does). Both methods run the same classifier on the same files in the same process, predict first;
each reports songs/s, songs/s per core and the audio hours per hour. `--memory_songs N ...` also runs the real
command (`python -m ast_dora.tag`, a subprocess) on libraries of N files and samples the peak resident memory of
it and its workers together (`--memory_max_windows` windows per song there, default 2: the pipeline's memory, not
the model's time, is what grows or not with N).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..backends import BACKENDS
from ..models import model_types

# ../shared/real-audio beside the repository (or beside the folder of worktrees that holds it).
_REPO = Path(__file__).resolve().parents[2]
DEFAULT_AUDIO = next(
    (
        p
        for p in (_REPO.parent / "shared" / "real-audio", _REPO.parent.parent / "shared" / "real-audio")
        if p.is_dir()
    ),
    _REPO.parent / "shared" / "real-audio",
)
SOURCE_FOLDERS = ("gtzan", "metal-songs", "formats")


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", default=None, metavar="DIR_OR_HUB_ID", help="A trained model.")
    source.add_argument(
        "--model_type",
        default=None,
        choices=model_types(),
        help="A random model of the real size, exported to --backend first.",
    )
    parser.add_argument("--size", choices=("default", "tiny"), default="default")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="openvino",
        help="What runs the model in both methods (default openvino, int8 with --model_type).",
    )
    parser.add_argument("--songs", type=int, default=200, help="Files in the library (default 200).")
    parser.add_argument("--audio_dir", default=str(DEFAULT_AUDIO), help="Where the real recordings are.")
    parser.add_argument(
        "--workers", type=int, default=None, help="Decode workers of the tag engine (default cores-1)."
    )
    parser.add_argument(
        "--configs",
        nargs="*",
        default=[],
        metavar="WxT",
        help="Also time the tag engine with W decode workers and T model threads, e.g. 2x1 (same files).",
    )
    parser.add_argument("--skip_predict", action="store_true", help="Time the tag engine only.")
    parser.add_argument(
        "--memory_songs",
        type=int,
        nargs="*",
        default=[],
        help="Also measure the peak memory of `python -m ast_dora.tag` on libraries of these sizes.",
    )
    parser.add_argument("--memory_max_windows", type=int, default=2)


def source_files(audio_dir: str | Path) -> list[Path]:
    files = []
    for folder in SOURCE_FOLDERS:
        files += sorted(
            p
            for p in (Path(audio_dir) / folder).rglob("*")
            if p.is_file() and p.suffix != "" and p.suffix.lower() in (".wav", ".mp3", ".flac", ".ogg", ".au")
        )
    if not files:
        raise SystemExit(f"No recordings under {audio_dir}/{{{','.join(SOURCE_FOLDERS)}}}: give --audio_dir.")
    return files


def make_library(folder: Path, count: int, sources: list[Path]) -> list[str]:
    """`count` symlinks to `sources`, cycled, 50 per subfolder."""
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        path = folder / f"d{i // 50:03d}" / f"{i:05d}_{source.name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(source)
        paths.append(str(path))
    return paths


def peak_memory_of(command: list[str], interval: float = 0.1) -> tuple[float, float, int]:
    """(peak RSS in MB of the process and its children summed, seconds, return code)."""
    import psutil

    start = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            total = process.memory_info().rss + sum(
                c.memory_info().rss for c in process.children(recursive=True)
            )
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(interval)
    return peak / 2**20, time.perf_counter() - start, process.returncode


def run(args) -> dict:
    from ..backends import get_backend
    from ..inference import GenreClassifier
    from ..tagging.engine import FeaturePlan, ModelInfo, SongBatcher, default_workers, tag_files
    from ..tagging.walk import LibraryFile
    from .song import _export_random_model, random_genre_model

    workdir = Path(tempfile.mkdtemp(prefix="bench_tag_"))
    try:
        model = args.model
        if model is None and get_backend(args.backend).exported:
            model = str(_export_random_model(args.model_type, args.size, workdir / "model", args.backend))
        elif model is None:  # the saved model itself runs: nothing to export
            from ..models.factory import save_trained_model

            random_model, feature_extractor = random_genre_model(args.model_type, args.size)
            save_trained_model(random_model, feature_extractor, workdir / "model")
            model = str(workdir / "model")
        classifier = GenreClassifier.from_pretrained(model, backend=args.backend)
        sources = source_files(args.audio_dir)
        paths = make_library(workdir / "library", args.songs, sources)
        files = [LibraryFile(p, os.stat(p).st_size, os.stat(p).st_mtime) for p in paths]
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        results = {
            "benchmark": "tag",
            "model": model if args.model else f"random {args.model_type} ({args.size})",
            "backend": classifier.runner.describe(),
            "songs": len(files),
            "cores": cpu_count,
            "workers": default_workers() if args.workers is None else args.workers,
            "machine": platform.platform(),
            "cpu": _cpu_name(),
            "load_average_before": os.getloadavg(),
        }
        classifier.analyse(paths[0])  # warm-up (both methods then start warm)
        audio_seconds = 0.0
        if not args.skip_predict:
            start, cpu_start, failed = time.perf_counter(), _cpu_seconds(), 0
            for path in paths:
                try:
                    audio_seconds += classifier.analyse(path).duration
                except Exception:  # predict reports and goes on
                    failed += 1
            seconds = time.perf_counter() - start
            results["predict"] = {
                "seconds": seconds,
                "songs_per_s": len(paths) / seconds,
                "songs_per_s_per_core": len(paths) / seconds / cpu_count,
                "cpu_s": _cpu_seconds() - cpu_start,
                "failed": failed,
            }
        info = ModelInfo("bench", model, "", classifier.runner.describe())
        runs = [(args.workers, None)] + [tuple(int(v) for v in c.split("x")) for c in args.configs]
        results["tag_configs"] = []
        for workers, threads in runs:
            engine = (
                classifier
                if threads is None
                else GenreClassifier.from_pretrained(model, backend=args.backend, threads=threads)
            )
            batcher = SongBatcher([engine], info)
            start, cpu_start, rows = time.perf_counter(), _cpu_seconds(), []
            for batch in tag_files(files, batcher, [FeaturePlan.of(engine)], workers=workers):
                rows += batch
            seconds = time.perf_counter() - start
            audio_seconds = audio_seconds or sum(r["duration"] or 0 for r in rows)
            measured = {
                "workers": default_workers() if workers is None else workers,
                "model_threads": engine.runner.describe(),
                "seconds": seconds,
                "songs_per_s": len(rows) / seconds,
                "songs_per_s_per_core": len(rows) / seconds / cpu_count,
                "cpu_s_main": _cpu_seconds() - cpu_start,
                "failed": sum(r["status"] != "ok" for r in rows),
            }
            if "predict" in results:
                measured["speedup"] = measured["songs_per_s"] / results["predict"]["songs_per_s"]
            results["tag_configs"].append(measured)
        results["tag"] = max(results["tag_configs"], key=lambda m: m["songs_per_s"])
        results["audio_hours"] = audio_seconds / 3600
        if "predict" in results:
            results["speedup"] = results["tag"]["speedup"]
        results["memory"] = []
        for count in args.memory_songs:
            library = workdir / f"memory_{count}"
            make_library(library, count, sources)
            command = [
                sys.executable,
                "-m",
                "ast_dora.tag",
                str(library),
                "--model",
                model,
                "--backend",
                args.backend,
                "--output",
                str(workdir / f"memory_{count}.db"),
                "--quiet",
                "--chart",
                "none",
                "--max_windows",
                str(args.memory_max_windows),
            ]
            if args.workers is not None:
                command += ["--workers", str(args.workers)]
            peak, seconds, code = peak_memory_of(command)
            results["memory"].append(
                {"songs": count, "peak_rss_mb": peak, "seconds": seconds, "returncode": code}
            )
        results["load_average_after"] = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(results))
    return results


def _cpu_seconds() -> float:
    return time.process_time()


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(r: dict) -> str:
    lines = [
        f"tag benchmark: {r['model']}, {r['backend']}; {r['songs']} songs ({r['audio_hours']:.2f} h of audio), "
        f"{r['cores']} cores ({r['cpu']}), tag with {r['workers']} decode workers"
    ]
    measured = ([("predict", r["predict"])] if "predict" in r else []) + [
        (f"tag {m['workers']}w", m) for m in r["tag_configs"]
    ]
    for name, m in measured:
        lines.append(
            f"  {name:8s} {m['seconds']:8.1f} s  {m['songs_per_s']:6.2f} songs/s  "
            f"{m['songs_per_s_per_core']:6.2f} songs/s/core  "
            f"{r['audio_hours'] * 3600 / m['seconds']:6.0f}x real time  failed {m['failed']}"
            + (f"  {m['speedup']:.2f}x predict" if "speedup" in m else "")
            + (f"  [{m['model_threads']}]" if "model_threads" in m else "")
        )
    if "speedup" in r:
        lines.append(f"  best tag / predict throughput: {r['speedup']:.2f}x")
    for m in r["memory"]:
        lines.append(
            f"  python -m ast_dora.tag on {m['songs']} files: peak RSS (with workers) {m['peak_rss_mb']:.0f} MB "
            f"in {m['seconds']:.0f} s (exit {m['returncode']})"
        )
    return "\n".join(lines)
