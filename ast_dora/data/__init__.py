"""The data layer: sources, synthetic GTZAN, splits by track, windows, augmentation and feature caching.

from ast_dora.data import DataArguments, build_datasets
data = build_datasets(data_args, feature_extractor, default_window=(4.0, 2.0), seed=42, output_dir="runs/x")
data.datasets  # DatasetDict train / validation / test; rows are windows:
               # input_values, labels, track_id, window_start
data.labels    # the class names: GTZAN's ten genres, or the data's own labels sorted by name
data.splits    # track ids per split (also written to output_dir/splits.json)
"""

import importlib

# Every name is imported from its module on first use: building data sets needs `datasets` and torch, while
# decoding, windows and generated music (what song analysis and the demo's examples use) need neither, so a
# process without them (song analysis on an exported model) can import those. It also keeps
# `python -m ast_dora.data.synthetic` from finding its module already imported (runpy's warning).
_HOMES = {
    "arguments": ("SPLIT_PROTOCOLS", "DataArguments"),
    "augment": ("AugmentedFeatureTransform", "WaveformAugmenter"),
    "build": ("GenreData", "build_datasets", "column_values", "window_counts"),
    "decode": ("AudioDecodeError", "DecodedAudio", "decode_audio", "encode_audio"),
    "gtzan": ("GTZAN_GENRES",),
    "sources": ("DataSourceError", "TrackSource", "load_source", "scan_label_folder"),
    "splits": ("make_splits",),
    "windows": ("cut_windows", "window_starts"),
    "synthetic": ("ensure_synthetic_gtzan", "generate_synthetic_gtzan", "synthesize_track"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name in _HOME_OF:
        return getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GTZAN_GENRES",
    "SPLIT_PROTOCOLS",
    "AudioDecodeError",
    "AugmentedFeatureTransform",
    "DataArguments",
    "DataSourceError",
    "DecodedAudio",
    "GenreData",
    "TrackSource",
    "WaveformAugmenter",
    "build_datasets",
    "column_values",
    "cut_windows",
    "decode_audio",
    "encode_audio",
    "ensure_synthetic_gtzan",
    "generate_synthetic_gtzan",
    "load_source",
    "make_splits",
    "scan_label_folder",
    "synthesize_track",
    "window_counts",
    "window_starts",
]
