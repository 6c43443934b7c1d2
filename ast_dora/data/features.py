"""Tracks -> windows -> features with one batched `Dataset.map`, cached by `datasets`.

One map call decodes each track once (FFmpeg resamples and downmixes), cuts it into windows and runs the
model's feature extractor batched over all windows of the batch of tracks. Its output rows are windows:
`input_values`, `labels`, `track_id`, `window_start`, plus per-track facts for the run summary
(`track_seconds`, `source_sampling_rate`, `source_channels`) that `build_datasets` drops afterwards.

Caching: the Arrow file is named by a fingerprint of the source's content, the tracks mapped, the window
settings and the feature extractor's `to_json_string()` (`new_fingerprint=`), so changing any of them maps
again and nothing stale is reused; the same inputs load the file instead (a cache hit).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset
from datasets.fingerprint import Hasher

from ..workers import datasets_start_method, in_worker_process
from .decode import AudioDecodeError, decode_audio
from .windows import cut_windows

logger = logging.getLogger(__name__)

# Bump when the map function's output changes for the same inputs: old cache files are then ignored.
CACHE_VERSION = 1
SUMMARY_COLUMNS = ("track_seconds", "source_sampling_rate", "source_channels")
_ARRAY_TYPES = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}


def feature_extractor_id(feature_extractor) -> str:
    """The extractor's class and full config (what decides its output).

    `auto_map` only says where the code lives (set once an extractor is saved or loaded with remote code),
    not what it computes, so it is left out: a reloaded extractor reuses the cache of the one it was saved from.
    """
    try:
        config = json.loads(feature_extractor.to_json_string())
        config.pop("auto_map", None)
        config = json.dumps(config, sort_keys=True)
    except Exception:  # not a transformers FeatureExtractionMixin: fall back to its attributes
        config = repr(sorted((k, repr(v)) for k, v in vars(feature_extractor).items()))
    return f"{type(feature_extractor).__module__}.{type(feature_extractor).__qualname__}\n{config}"


# Windows per feature-extractor call. Extractors work window by window (equal lengths, no cross-window
# padding), so chunking changes no number; it keeps the intermediate spectrogram frames in cache: the
# ViT-hybrid extractor is ~20% slower per window on a batch of 56 windows than on 16.
FEATURE_CHUNK = 16


def extract_features(
    feature_extractor, windows, sampling_rate: int, chunk: int = FEATURE_CHUNK
) -> np.ndarray:
    """`feature_extractor(windows)["input_values"]` as one float32 array (B, ...), `chunk` windows per call."""
    windows = list(windows)
    parts = [
        np.asarray(
            feature_extractor(windows[i : i + chunk], sampling_rate=sampling_rate, return_tensors="np")[
                "input_values"
            ],
            dtype=np.float32,
        )
        for i in range(0, len(windows), chunk)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def probe_feature_type(feature_extractor, window: int, sampling_rate: int):
    """The `datasets` feature type of one window's `input_values` (e.g. `Array2D((1024, 128), 'float32')`)."""
    shape = extract_features(feature_extractor, [np.zeros(window, dtype=np.float32)], sampling_rate).shape[1:]
    if len(shape) == 1:
        return datasets.List(datasets.Value("float32"), length=shape[0]), shape
    if len(shape) not in _ARRAY_TYPES:
        raise ValueError(
            f"feature extractor returns input_values of shape {shape} per window; expected 1-5 dims"
        )
    return _ARRAY_TYPES[len(shape)](shape=tuple(int(s) for s in shape), dtype="float32"), shape


def window_features(labels_feature, input_feature) -> datasets.Features:
    return datasets.Features(
        {
            "input_values": input_feature,
            "labels": labels_feature,
            "track_id": datasets.Value("string"),
            "window_start": datasets.Value("float32"),
            "track_seconds": datasets.Value("float32"),
            "source_sampling_rate": datasets.Value("int32"),
            "source_channels": datasets.Value("int32"),
        }
    )


def tracks_to_windows(
    batch, *, feature_extractor, sampling_rate: int, window: int, hop: int, as_waveform: bool
):
    """Batched map function: a batch of tracks in, all their windows out (features, or raw float32 bytes).

    An unreadable track is skipped with one warning naming it; it yields no rows (counted by the caller).
    """
    if in_worker_process():  # a `num_proc` worker: one thread each, the processes are the parallelism
        import torch

        torch.set_num_threads(1)
    out = {
        "input_values": [],
        "labels": [],
        "track_id": [],
        "window_start": [],
        "track_seconds": [],
        "source_sampling_rate": [],
        "source_channels": [],
    }
    chunks = []
    for audio, label, track_id in zip(batch["audio"], batch["labels"], batch["track_id"], strict=True):
        source = audio.get("bytes") or audio.get("path")
        try:
            decoded = decode_audio(source, sampling_rate)
        except AudioDecodeError as error:
            logger.warning(
                "Skipping unreadable audio %s (%s): %s", track_id, audio.get("path") or "<bytes>", error
            )
            continue
        windows, starts = cut_windows(decoded.waveform, window, hop)
        chunks.append(windows)
        n = len(windows)
        out["labels"] += [label] * n
        out["track_id"] += [track_id] * n
        out["window_start"] += (starts / sampling_rate).tolist()
        out["track_seconds"] += [decoded.duration] * n
        out["source_sampling_rate"] += [decoded.source_sampling_rate] * n
        out["source_channels"] += [decoded.source_channels] * n
    if chunks:
        windows = np.concatenate(chunks)
        if as_waveform:
            out["input_values"] = [w.tobytes() for w in windows]
        else:
            out["input_values"] = extract_features(feature_extractor, windows, sampling_rate)
    return out


@dataclass
class MapResult:
    dataset: Dataset
    cache_hit: bool
    fingerprint: str
    cache_file: str | None


def cache_fingerprint(
    kind: str,
    source_fingerprint: str,
    track_ids: list[str],
    sampling_rate: int,
    window: int,
    hop: int,
    feature_extractor=None,
) -> str:
    parts = [
        f"ast_dora.{kind}",
        CACHE_VERSION,
        source_fingerprint,
        list(track_ids),
        int(sampling_rate),
        int(window),
        int(hop),
    ]
    if feature_extractor is not None:
        parts.append(feature_extractor_id(feature_extractor))
    return Hasher.hash(parts)


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "ast_dora_features"


def _cache_exists(cache_file: str) -> bool:
    prefix, ext = os.path.splitext(cache_file)
    return os.path.exists(cache_file) or bool(glob.glob(f"{glob.escape(prefix)}_*_of_*{ext}"))


def map_tracks_to_windows(
    tracks: Dataset,
    *,
    kind: str,
    fingerprint: str,
    feature_extractor,
    labels_feature,
    sampling_rate: int,
    window: int,
    hop: int,
    num_proc: int | None,
    cache_dir: str | os.PathLike | None,
    use_cache: bool = True,
    batch_size: int = 4,
) -> MapResult:
    """Run `tracks_to_windows` over `tracks` (cached under `cache_dir/<kind>-<fingerprint>.arrow`)."""
    as_waveform = kind == "waveforms"
    if as_waveform:
        input_feature = datasets.Value("binary")
    else:
        input_feature, _ = probe_feature_type(feature_extractor, window, sampling_rate)
    features = window_features(labels_feature, input_feature)
    cache_file = None
    hit = False
    if use_cache:
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        cache_file = str(folder / f"{kind}-{fingerprint}.arrow")
        hit = _cache_exists(cache_file)
    if num_proc is not None and num_proc > len(tracks):
        num_proc = max(1, len(tracks))
    # Workers start by fork only where no native thread pool (OpenVINO, ONNX Runtime) runs here (`workers.py`).
    with datasets_start_method():
        mapped = tracks.map(
            tracks_to_windows,
            batched=True,
            batch_size=batch_size,
            # a few tracks' windows per Arrow record batch: big rows (a 1024x128 AST window is 512 KB)
            writer_batch_size=64,
            remove_columns=tracks.column_names,
            features=features,
            fn_kwargs={
                "feature_extractor": feature_extractor,
                "sampling_rate": int(sampling_rate),
                "window": int(window),
                "hop": int(hop),
                "as_waveform": as_waveform,
            },
            num_proc=num_proc if (num_proc or 1) > 1 else None,
            load_from_cache_file=use_cache,
            cache_file_name=cache_file,
            keep_in_memory=not use_cache,
            new_fingerprint=fingerprint,
            desc=f"Decoding + {'windows' if as_waveform else 'features'} ({kind})",
        )
    logger.info(
        "%s: %d windows from %d tracks (%s)",
        kind,
        len(mapped),
        len(tracks),
        "cache hit"
        if hit
        else ("computed, cached at " + cache_file if cache_file else "computed, not cached"),
    )
    return MapResult(mapped, hit, fingerprint, cache_file)


def summarize_windows(
    dataset: Dataset, requested_ids: list[str], window_seconds: float, sampling_rate: int
) -> dict:
    """Run summary from the per-track columns of a mapped dataset (one row per track: its first window)."""
    table = dataset.data
    track_ids = table.column("track_id").to_pylist()
    starts = table.column("window_start").to_numpy()
    seconds = table.column("track_seconds").to_numpy()
    rates = table.column("source_sampling_rate").to_numpy()
    channels = table.column("source_channels").to_numpy()
    first = np.flatnonzero(starts == 0)
    present = {track_ids[i] for i in first}
    skipped = [t for t in requested_ids if t not in present]
    short = [(track_ids[i], float(seconds[i])) for i in first if seconds[i] < window_seconds - 1e-6]
    stereo = [track_ids[i] for i in first if channels[i] > 1]
    resampled = [track_ids[i] for i in first if rates[i] != sampling_rate]
    rate_counts: dict[int, int] = {}
    for i in first:
        rate_counts[int(rates[i])] = rate_counts.get(int(rates[i]), 0) + 1
    return {
        "tracks_requested": len(requested_ids),
        "tracks_decoded": len(present),
        "windows": len(track_ids),
        "skipped_unreadable": skipped,
        "padded_short": [t for t, _ in short],
        "downmixed_multichannel": stereo,
        "resampled": len(resampled),
        "source_sampling_rates": rate_counts,
        "audio_seconds": float(seconds[first].sum()) if len(first) else 0.0,
    }
