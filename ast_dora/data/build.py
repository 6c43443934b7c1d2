"""`build_datasets`: source -> splits by track -> windows -> features (cached) -> `DatasetDict`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset, DatasetDict

from .arguments import DataArguments
from .augment import AugmentedFeatureTransform, WaveformAugmenter
from .features import SUMMARY_COLUMNS, cache_fingerprint, map_tracks_to_windows, summarize_windows
from .sources import TrackSource, load_source
from .splits import SPLIT_NAMES, make_splits, write_splits_json
from .windows import seconds_to_samples

logger = logging.getLogger(__name__)


def _no_main_process_first(desc: str = "", **_):
    return contextlib.nullcontext()


@dataclass
class GenreData:
    """What `build_datasets` returns."""

    datasets: DatasetDict  # "train", "validation", "test"; rows are windows
    labels: list[str]  # class names, label id i is labels[i]
    splits: dict[str, list[str]]  # track ids per split (also output_dir/splits.json)
    sampling_rate: int
    window_seconds: float
    hop_seconds: float
    summary: dict = field(default_factory=dict)  # decoded / skipped / padded / ... counts (data_summary.json)
    cache_hits: dict[str, bool] = field(default_factory=dict)  # "features" / "waveforms" -> loaded from cache
    # One loss weight per label (`class_weighting`), or None: what every model's loss reads from config.class_weights.
    class_weights: list[float] | None = None

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}


def _rows_of(dataset: Dataset, track_ids: list[str]) -> list[int]:
    """Row indices of all windows of `track_ids`, track by track in that order, windows in time order."""
    column = dataset.data.column("track_id").to_pylist()
    rows: dict[str, list[int]] = {}
    for i, tid in enumerate(column):
        rows.setdefault(tid, []).append(i)
    return [i for tid in track_ids for i in rows.get(tid, [])]


def _format(dataset: Dataset) -> Dataset:
    return dataset.with_format("torch", columns=["input_values", "labels"], output_all_columns=True)


def build_datasets(
    data_args: DataArguments,
    feature_extractor,
    default_window: tuple[float, float] = (4.0, 2.0),
    seed: int = 42,
    output_dir: str | os.PathLike | None = None,
    main_process_first=None,
) -> GenreData:
    """Build train / validation / test window datasets for `feature_extractor` (see docs/architecture.md).

    `default_window` is the model's (window_seconds, hop_seconds), overridden by `data_args.window_seconds` /
    `hop_seconds`; audio is decoded at `feature_extractor.sampling_rate`. `main_process_first` is a
    context-manager factory like `TrainingArguments.main_process_first` (rank 0 decodes, the others then
    hit the cache). `seed` seeds the augmentation streams unless `data_args.augment_seed` is set.
    """
    main_process_first = main_process_first or _no_main_process_first
    sampling_rate = int(feature_extractor.sampling_rate)
    window_seconds = float(data_args.window_seconds or default_window[0])
    hop_seconds = float(data_args.hop_seconds or default_window[1])
    window = seconds_to_samples(window_seconds, sampling_rate)
    hop = seconds_to_samples(hop_seconds, sampling_rate)

    with main_process_first(desc="data source"):
        if data_args.synthetic:
            from .synthetic import ensure_synthetic_gtzan

            # The tracks do not depend on the number of workers (each has its own seeded generator).
            ensure_synthetic_gtzan(
                data_args.data_dir,
                data_args.synthetic_tracks_per_genre,
                data_args.synthetic_duration_seconds,
                data_args.synthetic_seed,
                num_workers=data_args.preprocessing_num_workers or 1,
            )
        source: TrackSource = load_source(data_args)
    table = source.tracks.data
    track_ids = table.column("track_id").to_pylist()
    track_labels = table.column("labels").to_pylist()
    source_splits = table.column("source_split").to_pylist()
    splits = make_splits(
        data_args, track_ids, track_labels, source_splits, source.ids_from_names, source.labels
    )

    labels_feature = datasets.ClassLabel(names=list(source.labels))
    augmenting = data_args.augmentation_enabled
    row_of = {tid: i for i, tid in enumerate(track_ids)}
    feature_ids = sorted(splits["validation"] + splits["test"] + ([] if augmenting else splits["train"]))
    common = dict(
        labels_feature=labels_feature,
        sampling_rate=sampling_rate,
        window=window,
        hop=hop,
        num_proc=data_args.preprocessing_num_workers,
        cache_dir=data_args.features_cache_dir,
        use_cache=data_args.cache_features,
    )

    results = {}
    with main_process_first(desc="decode + features"):
        fp = cache_fingerprint(
            "features", source.fingerprint, feature_ids, sampling_rate, window, hop, feature_extractor
        )
        results["features"] = map_tracks_to_windows(
            source.tracks.select([row_of[t] for t in feature_ids]),
            kind="features",
            fingerprint=fp,
            feature_extractor=feature_extractor,
            **common,
        )
        if augmenting:
            train_ids = sorted(splits["train"])
            fp = cache_fingerprint("waveforms", source.fingerprint, train_ids, sampling_rate, window, hop)
            results["waveforms"] = map_tracks_to_windows(
                source.tracks.select([row_of[t] for t in train_ids]),
                kind="waveforms",
                fingerprint=fp,
                feature_extractor=None,
                **common,
            )

    summaries = [
        summarize_windows(r.dataset, ids, window_seconds, sampling_rate)
        for r, ids in (
            (results["features"], feature_ids),
            *([(results["waveforms"], sorted(splits["train"]))] if augmenting else []),
        )
    ]
    summary = _merge_summaries(summaries)
    skipped = set(summary["skipped_unreadable"])
    splits = {name: [t for t in ids if t not in skipped] for name, ids in splits.items()}

    features_ds = results["features"].dataset.remove_columns(list(SUMMARY_COLUMNS))
    out = {}
    for name in SPLIT_NAMES:
        if augmenting and name == "train":
            continue
        out[name] = _format(features_ds.select(_rows_of(features_ds, splits[name])))
    if augmenting:
        waves = results["waveforms"].dataset.remove_columns(list(SUMMARY_COLUMNS))
        train = waves.select(_rows_of(waves, splits["train"]))
        augmenter = WaveformAugmenter(data_args.augmentation_config(), sampling_rate)
        seed_value = data_args.augment_seed if data_args.augment_seed is not None else seed
        out["train"] = train.with_transform(
            AugmentedFeatureTransform(augmenter, feature_extractor, sampling_rate, seed_value)
        )
    dataset_dict = DatasetDict({name: out[name] for name in SPLIT_NAMES})

    label_of = dict(zip(track_ids, track_labels, strict=True))
    summary.update(
        source=source.description,
        split=data_args.split,
        labels=list(source.labels),
        tracks={name: len(ids) for name, ids in splits.items()},
        # per split and label: what class weighting (`class_weighting`) and a reader of an unbalanced library need
        class_counts={
            "tracks": {
                name: _per_label([label_of[t] for t in ids], source.labels) for name, ids in splits.items()
            },
            "windows": {
                name: _per_label(column_values(ds, "labels"), source.labels)
                for name, ds in dataset_dict.items()
            },
        },
        windows={name: len(ds) for name, ds in dataset_dict.items()},
        sampling_rate=sampling_rate,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        augmentation=augmenting,
        cache_hits={k: r.cache_hit for k, r in results.items()},
    )
    class_weights = None
    if data_args.class_weighting == "balanced":
        class_weights = balanced_class_weights(summary["class_counts"]["windows"]["train"], source.labels)
        summary["class_weights"] = dict(zip(source.labels, class_weights, strict=True))
    summary["class_weighting"] = data_args.class_weighting
    # Each unreadable file was warned about by name when it was decoded; on a cache hit nothing was decoded,
    # so the summary carries the one warning instead.
    _log_summary(summary, warn_skipped=any(r.cache_hit for r in results.values()))
    if output_dir is not None:
        write_splits_json(splits, output_dir)
        (Path(output_dir) / "data_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return GenreData(
        datasets=dataset_dict,
        labels=list(source.labels),
        splits=splits,
        sampling_rate=sampling_rate,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        summary=summary,
        cache_hits={k: r.cache_hit for k, r in results.items()},
        class_weights=class_weights,
    )


def balanced_class_weights(train_counts: dict[str, int], label_names: list[str]) -> list[float]:
    """Inverse class frequency, `n / (k * n_c)` for the k classes present among the n training windows (sklearn's
    "balanced": the weights average 1 over the training windows). A class absent from the training split gets 0
    (nothing of it is trained on; it would only weigh in the validation loss), with a warning."""
    present = {name: n for name, n in train_counts.items() if n > 0}
    total = sum(present.values())
    absent = [name for name in label_names if not train_counts.get(name)]
    if absent:
        logger.warning("class_weighting: no training windows of %s; weight 0", absent)
    return [total / (len(present) * present[name]) if name in present else 0.0 for name in label_names]


def _per_label(label_ids, label_names: list[str]) -> dict[str, int]:
    counts = {name: 0 for name in label_names}
    for label in label_ids:
        counts[label_names[int(label)]] += 1
    return counts


def _merge_summaries(parts: list[dict]) -> dict:
    merged = {
        "tracks_requested": 0,
        "tracks_decoded": 0,
        "windows_decoded": 0,
        "skipped_unreadable": [],
        "padded_short": [],
        "downmixed_multichannel": [],
        "resampled": 0,
        "source_sampling_rates": {},
        "audio_seconds": 0.0,
    }
    for p in parts:
        merged["tracks_requested"] += p["tracks_requested"]
        merged["tracks_decoded"] += p["tracks_decoded"]
        merged["windows_decoded"] += p["windows"]
        for key in ("skipped_unreadable", "padded_short", "downmixed_multichannel"):
            merged[key] += p[key]
        merged["resampled"] += p["resampled"]
        merged["audio_seconds"] += p["audio_seconds"]
        for rate, n in p["source_sampling_rates"].items():
            merged["source_sampling_rates"][rate] = merged["source_sampling_rates"].get(rate, 0) + n
    for key in ("skipped_unreadable", "padded_short", "downmixed_multichannel"):
        merged[key] = sorted(merged[key])
    return merged


def _log_summary(summary: dict, warn_skipped: bool) -> None:
    logger.info(
        "Data: %s | split %s, tracks %s, windows %s | %d tracks decoded (%.0f s of audio), source rates %s, "
        "%d resampled to %d Hz, %d multichannel downmixed, %d shorter than a window padded%s",
        summary["source"],
        summary["split"],
        summary["tracks"],
        summary["windows"],
        summary["tracks_decoded"],
        summary["audio_seconds"],
        summary["source_sampling_rates"],
        summary["resampled"],
        summary["sampling_rate"],
        len(summary["downmixed_multichannel"]),
        len(summary["padded_short"]),
        f" {summary['padded_short'][:5]}" if summary["padded_short"] else "",
    )
    if summary["skipped_unreadable"]:
        log = logger.warning if warn_skipped else logger.info
        log(
            "Skipped %d unreadable audio file(s): %s",
            len(summary["skipped_unreadable"]),
            ", ".join(summary["skipped_unreadable"][:10]),
        )


def column_values(dataset: Dataset, name: str) -> list:
    """A metadata column (`track_id`, `window_start`, `labels`) of a built split, read from Arrow without the
    split's format or transform. On the augmented train split `dataset["track_id"]` does not work: its
    transform returns only `input_values` and `labels`."""
    return list(dataset.with_format(None).select_columns([name])[name])


def window_counts(dataset: Dataset) -> dict[str, int]:
    """Windows per track of a built split (handy in tests and reports)."""
    ids = column_values(dataset, "track_id")
    return {tid: int(n) for tid, n in zip(*np.unique(ids, return_counts=True), strict=True)}
