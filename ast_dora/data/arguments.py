"""`DataArguments`: where the audio comes from, how it is split, windowed, augmented and cached.

Parsed by `HfArgumentParser` (plain typed fields, lists as `list[float]`); `__post_init__` validates every
field and raises `ValueError` naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

SPLIT_PROTOCOLS = ("stratified", "folds", "fault_filtered", "kereliuk_stratified", "predefined")
CLASS_WEIGHTINGS = ("none", "balanced")
DEFAULT_SYNTHETIC_DIR = "data/synthetic_gtzan"
# Loading-script datasets that `datasets` >= 4 refuses, and the parquet mirror to use instead.
SCRIPT_DATASETS = {"marsyas/gtzan": "confit/gtzan-parquet"}
GTZAN_PARQUET_MIRROR = "confit/gtzan-parquet"
# A data_dir ending in one of these is a manifest file (path,label[,split]) rather than a folder.
MANIFEST_SUFFIXES = (".csv", ".jsonl")

# name -> (default range, lower bound, upper bound, help)
_AUGMENT_RANGES = {
    "augment_speed_range": ([0.9, 1.1], 0.5, 2.0, "speed/tempo factor (1.0 = unchanged)"),
    "augment_lowpass_cutoff_range": ([2000.0, 8000.0], 20.0, None, "low-pass cutoff in Hz"),
    "augment_highpass_cutoff_range": ([40.0, 400.0], 1.0, None, "high-pass cutoff in Hz"),
    "augment_echo_delay_range": ([0.05, 0.3], 0.001, 2.0, "echo delay in seconds"),
    "augment_echo_decay_range": (
        [0.2, 0.6],
        0.0,
        0.99,
        "echo tap gain (first tap; the second is its square)",
    ),
    "augment_gain_db_range": ([-6.0, 6.0], -40.0, 40.0, "gain in dB"),
    "augment_noise_snr_db_range": (
        [15.0, 40.0],
        -20.0,
        120.0,
        "signal-to-noise ratio of added white noise in dB",
    ),
}
AUGMENTATIONS = ("speed", "lowpass", "highpass", "echo", "gain", "noise")


def _range_field(name: str):
    default, low, high, what = _AUGMENT_RANGES[name]
    bounds = f"within [{low}, {high}]" if high is not None else f">= {low}"
    return field(
        default_factory=lambda: list(default),
        metadata={"help": f"Two numbers MIN MAX: {what}, drawn uniformly per window ({bounds})."},
    )


def _prob_field(what: str):
    return field(
        default=0.0, metadata={"help": f"Probability of applying {what} to a train window (0 = off)."}
    )


@dataclass
class DataArguments:
    """Data source, split protocol, windowing, augmentation and feature caching."""

    # --- source: exactly one of dataset_name, data_dir (synthetic writes into data_dir) ---
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"Hub dataset id of a parquet GTZAN (e.g. {GTZAN_PARQUET_MIRROR}), or a local parquet "
            "file/folder or `audiofolder` folder. Loading-script datasets such as marsyas/gtzan are refused."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Config (subset) of dataset_name."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local data: a folder <root>/<label>/.../<file> (any label names, files at any depth below their "
            "label folder; GTZAN's <root>/<genre>/<genre>.NNNNN.wav|.au, also under genres/ or Kaggle's "
            "Data/genres_original/), or a manifest file .csv / .jsonl with path,label[,split] (paths relative to "
            f"the manifest). With --synthetic the default is {DEFAULT_SYNTHETIC_DIR}."
        },
    )
    synthetic: bool = field(
        default=False,
        metadata={
            "help": "Generate a synthetic GTZAN-layout dataset into data_dir (regenerated when missing or made "
            "with other parameters; a manifest.json records them) and train on it."
        },
    )
    synthetic_tracks_per_genre: int = field(default=20, metadata={"help": "Synthetic tracks per genre."})
    synthetic_duration_seconds: float = field(
        default=12.0, metadata={"help": "Length of each synthetic track (s)."}
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic generator."})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column of dataset_name."})
    label_column_name: str = field(
        default="genre",
        metadata={"help": "Genre column of dataset_name (a ClassLabel or strings); falls back to 'label'."},
    )
    # --- splits (always by track, never by window) ---
    split: str = field(
        default="stratified",
        metadata={
            "help": "Split protocol: 'stratified' (seeded 8:1:1 per genre), 'folds' (k-fold over tracks, "
            "stratified per genre; `fold` is the test fold, the next one validation), 'fault_filtered' "
            "(Kereliuk & Sturm's 443/197/290 lists), 'kereliuk_stratified' (their 500/250/250 lists) or "
            "'predefined' (dataset_name's own train/validation/test splits, or a manifest's split column)."
        },
    )
    num_folds: int = field(default=10, metadata={"help": "Number of folds for split=folds (>= 3)."})
    fold: int = field(default=0, metadata={"help": "Test fold for split=folds (0 .. num_folds-1)."})
    cross_validate: bool = field(
        default=False,
        metadata={
            "help": "split=folds: run every fold in turn (fold k under output_dir/fold_k/, `fold` ignored) and write "
            "output_dir/cv_results.json (per-fold metrics, mean, sample sd) and cv_results.md. A rerun skips the "
            "folds already done and resumes the interrupted one from its last checkpoint."
        },
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the stratified and k-fold shuffles."})
    split_seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "cross_validate: repeat the folds for each of these split seeds (e.g. 42 7 13; seed s fold k under "
            "output_dir/seed_s/fold_k/); cv_results.json then has per-seed and overall mean ± sd."
        },
    )
    compare: str | None = field(
        default=None,
        metadata={
            "help": "cross_validate: output_dir of a finished cross-validation of another model on the same splits; "
            "cv_results.json then adds the paired per-fold differences (this minus that), their mean and sd, and "
            "folds won / tied / lost."
        },
    )
    split_lists_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with the Kereliuk/Sturm split lists (default: <repo>/data/gtzan_splits)."},
    )
    max_tracks_per_genre: int | None = field(
        default=None,
        metadata={"help": "Quick runs: keep at most this many tracks per genre (spread over the splits)."},
    )
    class_weighting: str = field(
        default="none",
        metadata={
            "help": "'none', or 'balanced': every model's loss weights each window by the inverse frequency of its "
            "class among the training split's windows, n_train / (n_classes * n_class) (mean weight 1); the counts "
            "and weights go to data_summary.json."
        },
    )
    # --- windows ---
    window_seconds: float | None = field(
        default=None, metadata={"help": "Window length in seconds (default: the model's, e.g. 4.0 or 10.24)."}
    )
    hop_seconds: float | None = field(
        default=None, metadata={"help": "Hop between windows in seconds (default: the model's, e.g. 2.0)."}
    )
    # --- processing / caching ---
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for decoding + features (`Dataset.map(num_proc=...)`)."}
    )
    cache_features: bool = field(
        default=True,
        metadata={
            "help": "Cache decoded windows/features as Arrow files fingerprinted by the source, the split's "
            "tracks, the window settings and the feature extractor config; a second run reuses them."
        },
    )
    features_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where cached features go (default: <HF_DATASETS_CACHE>/ast_dora_features)."},
    )
    # --- waveform augmentation (train split only, on the fly in the DataLoader workers) ---
    augment_seed: int | None = field(
        default=None, metadata={"help": "Seed of the augmentation streams (default: the training seed)."}
    )
    augment_speed_prob: float = _prob_field("speed/tempo change (torchaudio resampling)")
    augment_speed_range: list[float] = _range_field("augment_speed_range")
    augment_lowpass_prob: float = _prob_field("a low-pass biquad")
    augment_lowpass_cutoff_range: list[float] = _range_field("augment_lowpass_cutoff_range")
    augment_highpass_prob: float = _prob_field("a high-pass biquad")
    augment_highpass_cutoff_range: list[float] = _range_field("augment_highpass_cutoff_range")
    augment_echo_prob: float = _prob_field("an echo (two delayed taps, FFT convolution)")
    augment_echo_delay_range: list[float] = _range_field("augment_echo_delay_range")
    augment_echo_decay_range: list[float] = _range_field("augment_echo_decay_range")
    augment_gain_prob: float = _prob_field("a gain change")
    augment_gain_db_range: list[float] = _range_field("augment_gain_db_range")
    augment_noise_prob: float = _prob_field("white noise")
    augment_noise_snr_db_range: list[float] = _range_field("augment_noise_snr_db_range")

    def __post_init__(self):
        sources = [name for name in ("dataset_name", "data_dir") if getattr(self, name)]
        if self.synthetic and "dataset_name" in sources:
            raise ValueError(
                f"synthetic=True writes a local folder and cannot be combined with dataset_name={self.dataset_name!r}; "
                "give exactly one source: dataset_name, data_dir, or synthetic (with an optional data_dir)."
            )
        if self.synthetic and not self.data_dir:
            self.data_dir = DEFAULT_SYNTHETIC_DIR
            sources = ["data_dir"]
        if len(sources) != 1:
            given = {name: getattr(self, name) for name in sources}
            raise ValueError(
                f"Exactly one data source is needed, got {given or 'none'}: set dataset_name (e.g. "
                f"{GTZAN_PARQUET_MIRROR}), data_dir (a local GTZAN folder) or synthetic=True."
            )
        if self.dataset_name in SCRIPT_DATASETS:
            raise ValueError(script_dataset_message(self.dataset_name))
        if self.split not in SPLIT_PROTOCOLS:
            raise ValueError(
                f"split={self.split!r} is not a split protocol; allowed values: {SPLIT_PROTOCOLS}."
            )
        if self.split == "predefined" and not self.dataset_name and not is_manifest_path(self.data_dir):
            raise ValueError(
                "split='predefined' uses the source's own splits (dataset_name's, or a manifest's split "
                f"column); a local folder has none. Use one of {SPLIT_PROTOCOLS[:4]}."
            )
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(
                f"class_weighting={self.class_weighting!r} is not allowed; allowed values: {CLASS_WEIGHTINGS}."
            )
        _check_int(self, "num_folds", low=3)
        # split_seeds and compare mean nothing to one fold's run (`fold_run` keeps the command line it came from).
        if self.split_seeds and len(set(self.split_seeds)) != len(self.split_seeds):
            raise ValueError(f"split_seeds={self.split_seeds} repeats a seed; give each seed once.")
        if self.cross_validate and self.split != "folds":
            raise ValueError(
                f"cross_validate=True runs every fold of split=folds, but split={self.split!r}: pass --split folds "
                "(with --num_folds K), or drop --cross_validate."
            )
        _check_int(self, "fold", low=0, high=self.num_folds - 1)
        _check_int(self, "synthetic_tracks_per_genre", low=1)
        _check_positive(self, "synthetic_duration_seconds")
        _check_int(self, "max_tracks_per_genre", low=1, optional=True)
        _check_int(self, "preprocessing_num_workers", low=1, optional=True)
        _check_positive(self, "window_seconds", optional=True)
        _check_positive(self, "hop_seconds", optional=True)
        for name in AUGMENTATIONS:
            prob_name = f"augment_{name}_prob"
            value = getattr(self, prob_name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"{prob_name}={value!r} is not a probability; allowed values: 0 <= p <= 1.")
        for name, (_, low, high, _) in _AUGMENT_RANGES.items():
            value = getattr(self, name)
            ok = (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                and value[0] <= value[1]
                and value[0] >= low
                and (high is None or value[1] <= high)
            )
            if not ok:
                bounds = f"[{low}, {high}]" if high is not None else f"[{low}, inf)"
                raise ValueError(f"{name}={value!r} must be two numbers MIN <= MAX within {bounds}.")
            setattr(self, name, [float(v) for v in value])

    @property
    def augmentation_enabled(self) -> bool:
        return any(getattr(self, f"augment_{name}_prob") > 0 for name in AUGMENTATIONS)

    def augmentation_config(self) -> dict:
        """The augmentation fields as a plain dict (what `WaveformAugmenter` takes)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name.startswith("augment_") and f.name != "augment_seed"
        }


def is_manifest_path(data_dir) -> bool:
    """Whether `data_dir` names a manifest file (`.csv` / `.jsonl`) rather than a folder."""
    return bool(data_dir) and str(data_dir).lower().endswith(MANIFEST_SUFFIXES)


def script_dataset_message(name: str) -> str:
    return (
        f"dataset_name={name!r} is a loading-script dataset, which datasets >= 4 no longer runs. Use its parquet "
        f"mirror --dataset_name {SCRIPT_DATASETS.get(name, GTZAN_PARQUET_MIRROR)} (columns audio, genre, label; "
        "the fault-filtered 443/197/290 tracks), or download GTZAN and pass --data_dir <folder>."
    )


def _check_int(
    args, name: str, low: int | None = None, high: int | None = None, optional: bool = False
) -> None:
    value = getattr(args, name)
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        if optional:
            allowed += " or None"
        raise ValueError(f"{name}={value!r} is not allowed; allowed values: {allowed}.")


def _check_positive(args, name: str, optional: bool = False) -> None:
    value = getattr(args, name)
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        allowed = "a number > 0" + (" or None" if optional else "")
        raise ValueError(f"{name}={value!r} is not allowed; allowed values: {allowed}.")
