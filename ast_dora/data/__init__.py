"""The data layer: sources, synthetic GTZAN, splits by track, windows, augmentation and feature caching.

    from ast_dora.data import DataArguments, build_datasets
    data = build_datasets(data_args, feature_extractor, default_window=(4.0, 2.0), seed=42, output_dir="runs/x")
    data.datasets  # DatasetDict train / validation / test; rows are windows:
                   # input_values, labels, track_id, window_start
    data.labels    # the class names: GTZAN's ten genres, or the data's own labels sorted by name
    data.splits    # track ids per split (also written to output_dir/splits.json)
"""

from .arguments import SPLIT_PROTOCOLS, DataArguments
from .augment import AugmentedFeatureTransform, WaveformAugmenter
from .build import GenreData, build_datasets, column_values, window_counts
from .decode import AudioDecodeError, DecodedAudio, decode_audio, encode_audio
from .gtzan import GTZAN_GENRES
from .sources import DataSourceError, TrackSource, load_source, scan_label_folder
from .splits import make_splits
from .windows import cut_windows, window_starts

_SYNTHETIC = ("ensure_synthetic_gtzan", "generate_synthetic_gtzan", "synthesize_track")


def __getattr__(name: str):
    # Imported on first use, so that `python -m ast_dora.data.synthetic` does not find the module already
    # imported by this package (runpy's "found in sys.modules" warning).
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
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
