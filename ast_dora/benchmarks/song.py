"""Song latency: one song end to end (decode -> windows -> features -> model) through `GenreClassifier.analyse`.

Times what a user waits for: `analyse(path)` on a whole file, the median of `--runs` runs after `--warmup` runs,
and prints it beside the song's duration with the split into decode / features / model. The model is a trained
one (`--model DIR_OR_HUB_ID`) or, with `--model_type`, a randomly initialised model of the real default size
(the 25.4 M-parameter ViT-hybrid, or the AudioSet-sized AST with the default DoRA adapters, merged), so no
checkpoint is needed: latency depends on the architecture, not on the weights. Without `--audio` the song is
3 minutes of generated music encoded as a 44.1-kHz stereo mp3, like a real download. Examples:

    python -m ast_dora.bench song --model_type vit_hybrid --json /tmp/song_vit.json
    python -m ast_dora.bench song --model_type ast_dora
    python -m ast_dora.bench song --model runs/vit_hybrid --audio my_song.flac
    python -m ast_dora.bench song --model_type ast_dora --backend onnx --json /tmp/song_ast_onnx.json
    python -m ast_dora.bench song --model_type ast_dora --backend openvino --json /tmp/song_ast_openvino.json

`--backend onnx` runs the model in ONNX Runtime on its `onnx/` export, `--backend openvino` in OpenVINO on its
`openvino/` export (int8 when present; `--onnx_precision` picks one of either); with `--model_type` the random
model is exported (fp32 and int8; OpenVINO's int8 calibrated on `--calibration_windows` windows of generated
music) to a temporary folder first, and the export's seconds are reported (`export_s`).
`first_result_s` is the time from the call to the first batch's probabilities (what the demo shows first), the
median over the timed runs like `latency_s`. For a model with the music check (AST-DoRA's AudioSet branch,
`ast_dora.music_detection`) `--runs` more pairs of runs are timed, without and with the check, alternating:
`music_check_share` is the share of the song's analysis time the check costs, (latency with it - latency without
it) / latency with it, from the medians (`music_check_cpu_share` the same in CPU seconds, steadier on a shared
machine; `music_check_model_share` for the model stage alone).

On a machine shared with other jobs, run it with `OMP_WAIT_POLICY=PASSIVE` in the environment: PyTorch's
OpenMP threads otherwise spin while waiting for each other, and with more runnable threads than cores a
descheduled thread makes the others spin for whole time slices (several times slower here).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..backends import BACKENDS, DEFAULT_BACKEND, FILE_PRECISIONS, get_backend
from ..models import model_types
from .flops import forward_flops_of_config
from .peak import measure_int8_matmul_peak, measure_matmul_peak


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", default=None, metavar="DIR_OR_HUB_ID", help="A trained model (either kind)."
    )
    source.add_argument(
        "--model_type",
        default=None,
        choices=model_types(),
        help="A randomly initialised model of the real default size instead of a checkpoint.",
    )
    parser.add_argument(
        "--size",
        choices=("default", "tiny"),
        default="default",
        help="With --model_type: default, the real architecture; tiny, a few-layer stand-in for tests.",
    )
    parser.add_argument(
        "--audio", default=None, help="Song to time (default: a generated 44.1-kHz stereo mp3)."
    )
    parser.add_argument(
        "--seconds", type=float, default=180.0, help="Length of the generated song (default 180)."
    )
    parser.add_argument("--runs", type=int, default=5, help="Timed runs; the median is reported (default 5).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed runs first (default 1).")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="Windows per forward pass (model's default)."
    )
    parser.add_argument(
        "--first_batch_size",
        type=int,
        default=None,
        help="Windows in the song's first batch (model's default: a short one, for first_result_s).",
    )
    parser.add_argument(
        "--hop_seconds",
        type=float,
        default=None,
        help="Seconds between windows (default: the window length, as `predict` analyses songs).",
    )
    parser.add_argument(
        "--no_bf16",
        action="store_true",
        help="Compute in fp32 on every backend (default: bf16 where it is measured faster than fp32, `ast_dora.hardware`).",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help="torch (default), onnx (ONNX Runtime on the model's onnx/ export) or openvino "
        "(OpenVINO on its openvino/ export).",
    )
    parser.add_argument(
        "--onnx_precision",
        choices=("auto", *FILE_PRECISIONS),
        default="auto",
        help="With --backend onnx / openvino: the int8 or fp32 file (default auto: int8 when present).",
    )
    parser.add_argument(
        "--calibration_windows",
        type=int,
        default=32,
        help="With --model_type and --backend openvino: windows of generated music the int8 export "
        "is calibrated on (default 32).",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, = cores)."
    )
    parser.add_argument(
        "--wait_idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="On a shared machine: after the warm-up, wait up to SECONDS for the CPUs to be idle "
        "(>= 90%% for 3 s, read from /proc/stat) before the timed runs. Default 0: no wait.",
    )


def random_genre_model(model_type: str, size: str = "default", labels=None, seed: int = 0):
    """(model in eval mode, feature extractor) with random weights, as `load_trained_model` would return them.

    `size="default"` is the real architecture (what latency depends on); `size="tiny"` a few-layer stand-in
    for tests. The model is built as a training run builds it (AST-DoRA: DoRA-wrapped with the default rank and
    layers), then made the model inference runs (AST-DoRA: merged).
    """
    from transformers import set_seed

    from ..config import ModelArguments
    from ..data import GTZAN_GENRES
    from ..models import get_model_spec

    if size not in ("default", "tiny"):
        raise ValueError(f"size must be 'default' or 'tiny', got {size!r}")
    spec = get_model_spec(model_type)
    set_seed(seed)
    model = spec.random_model(ModelArguments(model_type=model_type), size, list(labels or GTZAN_GENRES))
    return spec.for_inference(model).eval(), spec.default_feature_extractor()


def generated_song(
    path: str | Path, seconds: float = 180.0, sampling_rate: int = 44100, seed: int = 0
) -> Path:
    """`seconds` of synthetic music (a few genres one after another), stereo, encoded by FFmpeg (PyAV) to `path`'s
    format (the extension: .mp3, .wav, .flac, .m4a, ...)."""
    from ..data import GTZAN_GENRES, encode_audio, synthesize_track

    rng = np.random.default_rng(seed)
    section = 30.0
    parts, left = [], seconds
    genres = list(GTZAN_GENRES)
    while left > 0:
        genre = genres[len(parts) % len(genres)]
        parts.append(synthesize_track(genre, min(section, left), sampling_rate, rng))
        left -= section
    mono = np.concatenate(parts)[: int(round(seconds * sampling_rate))]
    stereo = np.stack([mono, np.roll(mono, 441) * 0.9]).astype(np.float32)
    return encode_audio(path, stereo, sampling_rate)


def song_waveform(seconds: float = 180.0, sampling_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """`seconds` of mono music-like audio as a float32 array, made with numpy alone (no synthesis library, no
    codec): for timing `GenreClassifier.analyse(array, sampling_rate=...)` where FFmpeg or scipy are absent.
    Chords that change every two seconds over a decaying noise beat; latency depends on length, not content."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sampling_rate)), dtype=np.float64) / sampling_rate
    chord = (t // 2.0).astype(np.int64)
    roots = 110.0 * 2.0 ** (rng.integers(0, 12, chord.max() + 1) / 12.0)
    audio = np.zeros_like(t)
    for ratio, gain in ((1.0, 0.3), (1.25, 0.2), (1.5, 0.2), (2.0, 0.1)):
        audio += gain * np.sin(2 * np.pi * roots[chord] * ratio * t)
    audio += 0.2 * np.exp(-12.0 * np.mod(t, 0.5)) * rng.standard_normal(len(t))
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def time_song_analysis(
    classifier, audio, runs: int, warmup: int, sampling_rate: int | None = None, wait_idle: float = 0.0
) -> dict:
    """Median latency of `classifier.analyse(audio, sampling_rate)` over `runs` runs after `warmup` untimed ones,
    the time to the first batch's result (`first_result_s`), the decode / features / model split (medians), the CPU
    seconds per run and the analysis' window count."""
    for _ in range(warmup):
        classifier.analyse(audio, sampling_rate=sampling_rate)
    waited = wait_for_idle_cpus(wait_idle) if wait_idle > 0 else 0.0
    load_before = list(os.getloadavg())
    latencies, first_results, cpu_times, splits = [], [], [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        # analyse() is this loop (it returns the stream's last value), so latency_s times what it does.
        stream = classifier.analyse_iter(audio, sampling_rate=sampling_rate)
        analysis = next(stream)
        first_results.append(time.perf_counter() - start)
        for analysis in stream:  # noqa: B007 (the last one is the whole song's analysis)
            pass
        latencies.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        splits.append(analysis.timings)
    median = {key: statistics.median(s[key] for s in splits) for key in splits[0]}
    return {
        "latency_s": statistics.median(latencies),
        "latencies_s": latencies,
        "first_result_s": statistics.median(first_results),
        "first_results_s": first_results,
        "decode_s": median["decode"],
        "features_s": median["features"],
        "model_s": median["model"],
        "cpu_s": statistics.median(cpu_times),
        "windows": len(analysis.window_starts),
        "song_seconds": analysis.duration,
        "waited_for_idle_s": waited,
        "load_average_before": load_before,
    }


def _cpu_idle_fraction(seconds: float) -> float:
    def read():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = read()
    time.sleep(seconds)
    idle1, total1 = read()
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle_cpus(timeout: float, idle: float = 0.9, quiet_seconds: int = 3) -> float:
    """Wait until the machine's CPUs are at least `idle` idle for `quiet_seconds` in a row, at most `timeout`
    seconds; returns the seconds waited. Linux only (a no-op elsewhere)."""
    if not os.path.exists("/proc/stat"):
        return 0.0
    start, quiet = time.perf_counter(), 0
    while quiet < quiet_seconds and time.perf_counter() - start < timeout:
        quiet = quiet + 1 if _cpu_idle_fraction(1.0) >= idle else 0
    return time.perf_counter() - start


def _export_random_model(
    model_type: str, size: str, folder: Path, backend: str, calibration_windows: int = 32
) -> Path:
    """Save a random model like a training run would and export it (fp32 and int8) for `backend`."""
    from ..export import export_model
    from ..models.factory import save_trained_model

    model, feature_extractor = random_genre_model(model_type, size)
    save_trained_model(model, feature_extractor, folder)
    del model
    options = {"calibration_windows": calibration_windows} if get_backend(backend).calibrated else {}
    export_model(backend, folder, quantize="int8", **options)
    return folder


def run(args) -> dict:
    from ..data import decode_audio
    from ..hardware import cpu_has_fast_bf16
    from ..inference import GenreClassifier

    if args.threads:
        torch.set_num_threads(args.threads)
    options = dict(
        batch_size=args.batch_size,
        first_batch_size=args.first_batch_size,
        bf16=False if args.no_bf16 else None,
        hop_seconds=args.hop_seconds,
    )
    if get_backend(args.backend).exported:
        options.update(backend=args.backend, onnx_precision=args.onnx_precision)
    workdir = tempfile.mkdtemp(prefix="bench_song_")
    try:
        export_seconds = None
        load_start = time.perf_counter()
        if args.model:
            classifier = GenreClassifier.from_pretrained(args.model, **options)
            model_name = args.model
        elif get_backend(args.backend).exported:
            _export_random_model(
                args.model_type, args.size, Path(workdir) / "model", args.backend, args.calibration_windows
            )
            export_seconds = time.perf_counter() - load_start
            load_start = time.perf_counter()
            classifier = GenreClassifier.from_pretrained(Path(workdir) / "model", **options)
            model_name = f"random {args.model_type} ({args.size} size), exported for {args.backend}"
        else:
            model, feature_extractor = random_genre_model(args.model_type, args.size)
            classifier = GenreClassifier(model, feature_extractor, **options)
            model_name = f"random {args.model_type} ({args.size} size)"
        load_seconds = time.perf_counter() - load_start

        song = Path(args.audio) if args.audio else generated_song(Path(workdir) / "song.mp3", args.seconds)
        song_seconds = decode_audio(str(song), classifier.sampling_rate).duration
        timing = time_song_analysis(classifier, song, args.runs, args.warmup, wait_idle=args.wait_idle)
        without_check = with_check = None
        if classifier.music_check:
            # Runs with and without the check alternate, so that a shared machine's changing load hits both alike.
            pairs = {False: [], True: []}
            try:
                for _ in range(args.runs):
                    for check in (False, True):
                        classifier.music_check = check
                        pairs[check].append(time_song_analysis(classifier, song, 1, 0))
            finally:
                classifier.music_check = True
            without_check, with_check = (
                {
                    key: statistics.median(run[key] for run in pairs[check])
                    for key in ("latency_s", "model_s", "cpu_s")
                }
                for check in (False, True)
            )
        parameters = classifier.runner.parameters  # (an ONNX runner reads them from its file, in workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    # The machine's matmul peak right after the timed runs: on a shared machine it swings by several times, and
    # the model stage can only be judged against it.
    peak = measure_matmul_peak(("bf16", "fp32"), seconds=1.0)
    model_tflops = forward_flops_of_config(classifier.config) * timing["windows"] / timing["model_s"] / 1e12
    # An int8 model is judged against its backend's own int8 matmul of a transformer layer's shape (tokens x
    # hidden @ hidden x 4 hidden), measured here beside the fp32 and bf16 peaks: that, not another backend, is
    # its yardstick.
    int8_peak = None
    if str(classifier.runner.precision).startswith("int8"):
        hidden = int(getattr(classifier.config, "hidden_size", 768))
        int8_peak = measure_int8_matmul_peak(
            classifier.backend, (512, hidden, 4 * hidden), threads=args.threads
        )
    precision = str(classifier.runner.precision)
    utilisation_of = (
        "int8" if int8_peak and precision.startswith("int8") else "bf16" if classifier.bf16 else "fp32"
    )
    peak_of = {**peak, "int8": int8_peak["tops"] if int8_peak else None}
    results = {
        "benchmark": "song",
        "model": model_name,
        "model_type": classifier.model_type,
        "parameters": parameters,
        "song": str(song) if args.audio else f"generated {args.seconds:g}-s 44.1-kHz stereo mp3",
        "song_seconds": song_seconds,
        "windows": timing["windows"],
        "window_seconds": classifier.window_seconds,
        "hop_seconds": classifier.hop_seconds,
        "batch_size": classifier.batch_size,
        "first_batch_size": classifier.first_batch_size,
        "backend": classifier.backend,
        "precision": classifier.runner.precision,
        "backend_description": classifier.runner.describe(),
        "bf16": classifier.bf16,
        "cpu_native_bf16": cpu_has_fast_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": timing["load_average_before"],
        "load_average": list(os.getloadavg()),
        "waited_for_idle_s": timing["waited_for_idle_s"],
        "machine": platform.platform(),
        "latency_s": timing["latency_s"],
        "latencies_s": timing["latencies_s"],
        "first_result_s": timing["first_result_s"],
        "first_results_s": timing["first_results_s"],
        "decode_s": timing["decode_s"],
        "features_s": timing["features_s"],
        "model_s": timing["model_s"],
        "x_realtime": song_seconds / timing["latency_s"],
        "peak_bf16_tflops": peak["bf16"],
        "peak_fp32_tflops": peak["fp32"],
        "model_tflops": model_tflops,
        "peak_int8_tops": int8_peak["tops"] if int8_peak else None,
        "peak_int8": int8_peak,
        "model_utilisation": model_tflops / peak_of[utilisation_of],
        "model_utilisation_of": utilisation_of,
        # CPU seconds of all threads per run: on a shared machine the wall-clock latency grows with the other
        # processes' load; the CPU time much less so (on idle cores, latency ~ cpu_s / threads at best).
        "cpu_s": timing["cpu_s"],
        "model_load_s": load_seconds,
        "onnx_export_s": export_seconds,  # the older name of export_s
        "export_s": export_seconds,
        "calibration_windows": args.calibration_windows
        if export_seconds and get_backend(classifier.backend).calibrated
        else None,
        # the runtime's version, under its package name (onnxruntime, openvino)
        **(get_backend(classifier.backend).versions() if get_backend(classifier.backend).exported else {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "music_check": without_check is not None,
        "latency_with_music_check_s": None if with_check is None else with_check["latency_s"],
        "latency_without_music_check_s": None if without_check is None else without_check["latency_s"],
        "music_check_share": None
        if with_check is None
        else (with_check["latency_s"] - without_check["latency_s"]) / with_check["latency_s"],
        "music_check_cpu_share": None
        if with_check is None
        else (with_check["cpu_s"] - without_check["cpu_s"]) / with_check["cpu_s"],
        "music_check_model_share": None
        if with_check is None
        else (with_check["model_s"] - without_check["model_s"]) / with_check["model_s"],
    }
    print(format_table(results))
    return results


def format_table(r: dict) -> str:
    return "\n".join(
        [
            f"song benchmark: {r['model']} ({r['parameters'] / 1e6:.1f} M parameters), {r['song']}",
            f"  backend {r['backend_description']}; {r['windows']} windows of {r['window_seconds']:g} s / "
            f"{r['hop_seconds']:g} s hop, batches of {r['first_batch_size']} then {r['batch_size']}, "
            f"bf16={r['bf16']} (native bf16: {r['cpu_native_bf16']}), {r['torch_threads']} threads on {r['cpu_count']} cores, "
            f"load average {r['load_average_before'][0]:.2f} before / {r['load_average'][0]:.2f} after the timed runs",
            f"  song {r['song_seconds']:.1f} s -> latency {r['latency_s']:.2f} s (median of {len(r['latencies_s'])}: "
            + ", ".join(f"{t:.2f}" for t in r["latencies_s"])
            + f"), {r['x_realtime']:.0f}x real time; first result "
            f"after {r['first_result_s']:.2f} s",
            f"  decode {r['decode_s']:.2f} s + features {r['features_s']:.2f} s + model {r['model_s']:.2f} s; "
            f"{r['cpu_s']:.2f} CPU s; peak RSS {r['peak_rss_mb']:.0f} MB",
            f"  model stage {r['model_tflops']:.2f} TFLOP/s = {r['model_utilisation']:.0%} of this machine's measured "
            f"{r['model_utilisation_of']} matmul peak (bf16 {r['peak_bf16_tflops']:.2f}, fp32 "
            f"{r['peak_fp32_tflops']:.2f} TFLOP/s"
            + (
                f"; int8 {r['peak_int8_tops']:.2f} TOP/s: {r['peak_int8']['kernel']}, "
                f"{'x'.join(map(str, r['peak_int8']['shape']))}"
                if r.get("peak_int8")
                else ""
            )
            + ")",
            *(
                [
                    f"  music check (AudioSet head): {r['music_check_share']:.1%} of the song's analysis time "
                    f"({r['latency_with_music_check_s']:.2f} s with it, {r['latency_without_music_check_s']:.2f} s without, "
                    f"medians of {len(r['latencies_s'])} alternating pairs); {r['music_check_cpu_share']:.1%} of its CPU "
                    f"time; model stage {r['music_check_model_share']:.1%}"
                ]
                if r.get("music_check")
                else []
            ),
        ]
    )
