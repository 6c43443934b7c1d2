"""Data throughput: decode + resample + windows + features for both models' feature extractors.

For each model (AST: `ASTFeatureExtractor()`, 10.24 s / 10.24 s windows at 16 kHz; ViT-hybrid:
`GenreViTHybridFeatureExtractor()`, 4 s / 2 s at 22.05 kHz) it times

- decode only: PyAV decode + resample of a sample of the files, in this process,
- first pass: `build_datasets` with an empty feature cache (decode, resample, window, featurise, write Arrow),
- cached pass: the same call again (the features load from the cache),
- cached read: reading every window's `input_values` as torch tensors in batches of 64,

and reports clips/s and x real time (seconds of audio per second). Example:

    python -m ast_dora.data.synthetic /tmp/gtzan1000 --tracks_per_genre 100 --duration 30
    python -m ast_dora.bench data --data_dir /tmp/gtzan1000 --json bench_data.json
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import time

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument(
        "--data_dir", required=True, help="GTZAN-layout folder to read (e.g. 1000 x 30-s clips)."
    )
    from ast_dora.models import get_model_spec, model_types

    names = [
        name for model_type in model_types() for name in (model_type, *get_model_spec(model_type).aliases)
    ]
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(model_types()),
        choices=names,
        help=f"Models whose features to time (default all: {', '.join(model_types())}).",
    )
    parser.add_argument(
        "--num_proc",
        type=int,
        default=os.cpu_count() or 1,
        help="preprocessing_num_workers for the map (default: all CPU cores).",
    )
    parser.add_argument("--max_tracks_per_genre", type=int, default=None, help="Benchmark on a subset.")
    parser.add_argument(
        "--decode_sample", type=int, default=100, help="Files timed for the decode-only figure."
    )
    parser.add_argument(
        "--cache_dir",
        default=None,
        help="Feature cache folder (default: a fresh temporary folder, deleted afterwards).",
    )


def feature_extractor_for(model: str):
    """(feature extractor, default (window_seconds, hop_seconds)) of a model; None when not importable."""
    from ast_dora.models import get_model_spec

    spec = get_model_spec(model, aliases=True)
    return spec.default_feature_extractor(), spec.default_windows


def _time_decode(paths, sampling_rate: int) -> tuple[float, float]:
    from ast_dora.data.decode import decode_audio

    start = time.perf_counter()
    seconds = 0.0
    for path in paths:
        seconds += decode_audio(str(path), sampling_rate).duration
    return time.perf_counter() - start, seconds


def _time_read(dataset) -> float:
    start = time.perf_counter()
    for i in range(0, len(dataset), 64):
        batch = dataset[i : i + 64]["input_values"]
        assert batch.shape[0] > 0
    return time.perf_counter() - start


def run(args) -> dict:
    from ast_dora.data import DataArguments, build_datasets, scan_label_folder

    package_logger = logging.getLogger("ast_dora")
    previous_level = package_logger.level
    package_logger.setLevel(logging.WARNING)  # keep the per-run summaries out of the table
    entries, _ = scan_label_folder(args.data_dir)
    cache_root = args.cache_dir or tempfile.mkdtemp(prefix="ast_dora_bench_")
    results = {
        "benchmark": "data",
        "data_dir": str(args.data_dir),
        "files": len(entries),
        "num_proc": args.num_proc,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "models": {},
    }
    try:
        for model in args.models:
            try:
                fe, window = feature_extractor_for(model)
            except Exception as error:  # the ViT-hybrid package may not exist yet
                results["models"][model] = {"skipped": f"{type(error).__name__}: {error}"}
                print(f"{model}: skipped ({type(error).__name__}: {error})")
                continue
            sr = int(fe.sampling_rate)
            rng = np.random.default_rng(0)
            sample = [
                entries[i][0]
                for i in rng.choice(len(entries), min(args.decode_sample, len(entries)), replace=False)
            ]
            decode_s, decode_audio_s = _time_decode(sample, sr)
            cache_dir = os.path.join(cache_root, model)
            data_args = DataArguments(
                data_dir=args.data_dir,
                split="stratified",
                preprocessing_num_workers=args.num_proc,
                features_cache_dir=cache_dir,
                max_tracks_per_genre=args.max_tracks_per_genre,
            )
            start = time.perf_counter()
            data = build_datasets(data_args, fe, default_window=window)
            first_s = time.perf_counter() - start
            start = time.perf_counter()
            data2 = build_datasets(data_args, fe, default_window=window)
            cached_s = time.perf_counter() - start
            read_s = sum(_time_read(ds) for ds in data2.datasets.values())
            clips = data.summary["tracks_decoded"]
            audio_s = data.summary["audio_seconds"]
            windows = sum(len(ds) for ds in data.datasets.values())
            shape = tuple(data.datasets["train"][0]["input_values"].shape)
            cache_bytes = sum(
                os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(cache_dir) for f in fs
            )
            results["models"][model] = {
                "feature_extractor": type(fe).__name__,
                "sampling_rate": sr,
                "window_seconds": window[0],
                "hop_seconds": window[1],
                "input_values_shape": shape,
                "clips": clips,
                "windows": windows,
                "audio_seconds": audio_s,
                "decode_only": {
                    "clips": len(sample),
                    "seconds": decode_s,
                    "clips_per_s": len(sample) / decode_s,
                    "x_realtime": decode_audio_s / decode_s,
                },
                "first_pass": {
                    "seconds": first_s,
                    "clips_per_s": clips / first_s,
                    "x_realtime": audio_s / first_s,
                    "windows_per_s": windows / first_s,
                },
                "cached_pass": {
                    "seconds": cached_s,
                    "clips_per_s": clips / cached_s,
                    "x_realtime": audio_s / cached_s,
                    "speedup_vs_first": first_s / cached_s,
                    "cache_hits": data2.cache_hits,
                },
                "cached_read": {
                    "seconds": read_s,
                    "windows_per_s": windows / read_s,
                    "x_realtime": audio_s / read_s,
                },
                "cache_bytes": cache_bytes,
            }
    finally:
        package_logger.setLevel(previous_level)
        if not args.cache_dir:
            shutil.rmtree(cache_root, ignore_errors=True)
    print(format_table(results))
    return results


def format_table(results: dict) -> str:
    head = (
        f"{'model':<11}{'clips':>6}{'audio h':>8} | {'decode x RT':>11} | {'1st pass s':>10}{'clips/s':>8}"
        f"{'x RT':>7} | {'cached s':>9}{'x RT':>9}{'speedup':>8} | {'read s':>7}{'x RT':>8}"
    )
    lines = [
        f"data benchmark: {results['files']} files in {results['data_dir']}, num_proc={results['num_proc']}, "
        f"{results['cpu_count']} CPU cores",
        head,
        "-" * len(head),
    ]
    for model, r in results["models"].items():
        if "skipped" in r:
            lines.append(f"{model:<11} skipped: {r['skipped']}")
            continue
        f, c, d, rd = r["first_pass"], r["cached_pass"], r["decode_only"], r["cached_read"]
        lines.append(
            f"{model:<11}{r['clips']:>6}{r['audio_seconds'] / 3600:>8.2f} | {d['x_realtime']:>11.0f} | "
            f"{f['seconds']:>10.1f}{f['clips_per_s']:>8.1f}{f['x_realtime']:>7.0f} | {c['seconds']:>9.2f}"
            f"{c['x_realtime']:>9.0f}{c['speedup_vs_first']:>7.0f}x | {rd['seconds']:>7.1f}{rd['x_realtime']:>8.0f}"
        )
    return "\n".join(lines)
