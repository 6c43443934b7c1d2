"""Where tracks come from, as one `datasets.Dataset` of tracks (not yet decoded).

Every source becomes a `TrackSource` whose `tracks` dataset has the columns

- `audio`: `Audio(decode=False)` struct `{"bytes", "path"}` (a local path, or the embedded bytes of a parquet row),
- `labels`: int64 class id into `TrackSource.labels`,
- `track_id`: GTZAN file stem such as `blues.00000`,
- `source_split`: the split the source put the track in (`train` for a folder),

plus a `fingerprint` that changes whenever the source's content does (it keys the feature cache).

Sources: a Hub parquet dataset or local parquet file/folder or `audiofolder` folder (`dataset_name`), a local
folder in GTZAN's layout (`data_dir`, also Kaggle's `Data/genres_original/`), and the synthetic generator
(which writes such a folder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.compute as pc
from datasets import Audio, Dataset, concatenate_datasets
from datasets.fingerprint import Hasher

from .arguments import SCRIPT_DATASETS, DataArguments, script_dataset_message
from .gtzan import AUDIO_EXTENSIONS, GTZAN_GENRES, parse_track_id, track_id_from_name

logger = logging.getLogger(__name__)

# Folder layouts that hold `<genre>/<file>` below the given root.
LAYOUT_SUBDIRS = ("", "genres", "genres_original", "Data/genres_original", "gtzan", "GTZAN")
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test", "eval": "test"}


class DataSourceError(ValueError):
    """A source that cannot be read as GTZAN-style genre data."""


@dataclass
class TrackSource:
    tracks: Dataset
    labels: list[str]
    fingerprint: str
    description: str
    ids_from_names: bool  # track ids are real file names (needed by the list-based split protocols)


# ----------------------------------------------------------------------------------------------------------
# local folder in GTZAN's layout
# ----------------------------------------------------------------------------------------------------------


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not p.name.startswith("."))


def find_layout_root(root: Path) -> Path:
    """The folder whose sub-folders are the genres: `root`, `root/genres`, `root/Data/genres_original`, ..."""
    if not root.is_dir():
        raise DataSourceError(f"data_dir {str(root)!r} does not exist or is not a folder.")
    for sub in LAYOUT_SUBDIRS:
        candidate = root / sub if sub else root
        if candidate.is_dir() and any((candidate / g).is_dir() for g in GTZAN_GENRES):
            return candidate
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    raise DataSourceError(
        f"No GTZAN layout under {str(root)!r}: expected genre folders <root>/<genre>/<genre>.NNNNN.wav (or under "
        f"genres/ or Kaggle's Data/genres_original/) with genres {list(GTZAN_GENRES)}; found {found or 'nothing'}."
    )


def scan_gtzan_folder(root: str | Path) -> list[tuple[Path, int, str]]:
    """`(path, label id, track id)` of every audio file in a GTZAN-layout folder, sorted by track id.

    Fails on a sub-folder with audio whose name is not a GTZAN genre, on audio lying beside the genre
    folders, on duplicate track ids and on a layout without any audio, each time saying what was found.
    """
    root = Path(root)
    layout_root = find_layout_root(root)
    entries: list[tuple[Path, int, str]] = []
    unexpected = {}
    for folder in sorted(p for p in layout_root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        files = _audio_files(folder)
        if folder.name not in GTZAN_GENRES:
            if files:
                unexpected[folder.name] = len(files)
            continue
        label = GTZAN_GENRES.index(folder.name)
        entries.extend((path, label, track_id_from_name(path.name)) for path in files)
    loose = _audio_files(layout_root)
    if unexpected:
        raise DataSourceError(
            f"Unexpected genre folder(s) in {str(layout_root)!r}: "
            + ", ".join(f"{name}/ ({n} audio files)" for name, n in unexpected.items())
            + f". Expected only GTZAN's genres {list(GTZAN_GENRES)}; move or remove the others."
        )
    if loose:
        raise DataSourceError(
            f"{len(loose)} audio file(s) lie directly in {str(layout_root)!r} (e.g. {loose[0].name}); expected "
            "every file inside its genre folder, <root>/<genre>/<genre>.NNNNN.wav."
        )
    if not entries:
        present = sorted(p.name for p in layout_root.iterdir())[:12]
        raise DataSourceError(
            f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) in the genre folders of {str(layout_root)!r}; found "
            f"{present}. Expected <genre>/<genre>.NNNNN.wav or .au files."
        )
    # One file per track id: a track present both as .wav and .au (say) keeps the first extension listed.
    by_id: dict[str, tuple[Path, int, str]] = {}
    rank = {ext: i for i, ext in enumerate(AUDIO_EXTENSIONS)}
    for entry in entries:
        previous = by_id.get(entry[2])
        if previous is None:
            by_id[entry[2]] = entry
            continue
        if previous[1] != entry[1]:
            raise DataSourceError(
                f"Track id {entry[2]!r} appears in two genre folders: {previous[0]} and {entry[0]}; file stems must "
                "be unique."
            )
        keep = min(previous, entry, key=lambda e: rank.get(e[0].suffix.lower(), 99))
        logger.warning("Track %s exists twice (%s, %s); using %s", entry[2], previous[0].name, entry[0].name,
                       keep[0].name)
        by_id[entry[2]] = keep
    mislabeled = [tid for tid, (_, label, _) in by_id.items()
                  if (parsed := parse_track_id(tid)) and parsed[0] in GTZAN_GENRES and parsed[0] != GTZAN_GENRES[label]]
    if mislabeled:
        logger.warning("%d file(s) are named after another genre than their folder (the folder wins): %s",
                       len(mislabeled), mislabeled[:5])
    return [by_id[tid] for tid in sorted(by_id)]


def load_folder_source(root: str | Path) -> TrackSource:
    entries = scan_gtzan_folder(root)
    stats = []
    for path, label, tid in entries:
        st = path.stat()
        stats.append((str(path.resolve()), st.st_size, st.st_mtime_ns, label, tid))
    tracks = Dataset.from_dict(
        {
            "audio": [{"bytes": None, "path": s[0]} for s in stats],
            "labels": [s[3] for s in stats],
            "track_id": [s[4] for s in stats],
            "source_split": ["train"] * len(stats),
        },
        features=datasets.Features(
            {
                # A plain struct: `Audio.encode_example` would import torchcodec, which needs system FFmpeg.
                "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                "labels": datasets.Value("int64"),
                "track_id": datasets.Value("string"),
                "source_split": datasets.Value("string"),
            }
        ),
    )
    fingerprint = Hasher.hash(["folder", stats])
    counts = {g: 0 for g in GTZAN_GENRES}
    for _, label, _ in entries:
        counts[GTZAN_GENRES[label]] += 1
    description = f"folder {root} ({len(entries)} tracks: " + ", ".join(f"{g} {n}" for g, n in counts.items()) + ")"
    logger.info("Data source: %s", description)
    return TrackSource(tracks, list(GTZAN_GENRES), fingerprint, description, ids_from_names=True)


# ----------------------------------------------------------------------------------------------------------
# Hub / parquet / audiofolder through `datasets.load_dataset`
# ----------------------------------------------------------------------------------------------------------


def _load(args: DataArguments) -> datasets.DatasetDict:
    name = args.dataset_name
    if name in SCRIPT_DATASETS:
        raise DataSourceError(script_dataset_message(name))
    path = Path(name)
    try:
        if path.is_file():
            if path.suffix.lower() != ".parquet":
                raise DataSourceError(f"dataset_name={name!r} is a file but not a .parquet file.")
            loaded = datasets.load_dataset("parquet", data_files=str(path))
        else:
            loaded = datasets.load_dataset(name, args.dataset_config_name)
    except DataSourceError:
        raise
    except Exception as error:
        text = str(error)
        if "scripts are no longer supported" in text or ".py" in text and "script" in text.lower():
            raise DataSourceError(script_dataset_message(name)) from error
        raise
    if isinstance(loaded, Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _label_names(split_sets: dict[str, Dataset], column: str) -> tuple[list[str], str]:
    """(label names, 'classlabel' | 'string' | 'int') of the label column."""
    feature = next(iter(split_sets.values())).features[column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        kind = "classlabel"
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        names = sorted({v for ds in split_sets.values() for v in ds[column]})
        kind = "string"
    else:
        raise DataSourceError(
            f"label column {column!r} has type {feature}; expected a ClassLabel or genre-name strings."
        )
    if set(names) <= set(GTZAN_GENRES):
        return list(GTZAN_GENRES), kind  # GTZAN's fixed alphabetical ids whatever order the data uses
    return names, kind


def load_dataset_source(args: DataArguments) -> TrackSource:
    loaded = _load(args)
    audio_col, label_col = args.audio_column_name, args.label_column_name
    first = next(iter(loaded.values()))
    if audio_col not in first.column_names:
        raise DataSourceError(
            f"audio_column_name={audio_col!r} is not a column of {args.dataset_name!r}; columns: {first.column_names}."
        )
    if label_col not in first.column_names:
        if "label" in first.column_names and label_col == "genre":
            logger.info("No 'genre' column in %s; using 'label'", args.dataset_name)
            label_col = "label"
        else:
            raise DataSourceError(
                f"label_column_name={label_col!r} is not a column of {args.dataset_name!r}; columns: "
                f"{first.column_names}."
            )
    label_names, kind = _label_names(dict(loaded), label_col)
    original_names = (
        list(first.features[label_col].names) if kind == "classlabel" else None
    )
    parts, fingerprints = [], []
    ids_from_names = True
    per_genre_counter: dict[str, int] = {}
    for split_name, ds in loaded.items():
        fingerprints.append((split_name, ds._fingerprint))
        ds = ds.select_columns([c for c in (audio_col, label_col, "file") if c in ds.column_names])
        ds = ds.cast_column(audio_col, Audio(decode=False))
        raw_labels = ds[label_col]
        if kind == "classlabel":
            names = [original_names[i] for i in raw_labels]
        else:
            names = list(raw_labels)
        labels = [label_names.index(n) for n in names]
        # Only the `path` field: reading the column through Python would copy every audio file's bytes.
        paths = [p for chunk in ds.data.column(audio_col).chunks for p in pc.struct_field(chunk, "path").to_pylist()]
        if "file" in ds.column_names:
            names_for_ids = ds["file"]
        else:
            names_for_ids = paths
        if all(names_for_ids):
            track_ids = [track_id_from_name(p) for p in names_for_ids]
        else:
            ids_from_names = False
            track_ids = []
            for n in names:
                index = per_genre_counter.get(n, 0)
                per_genre_counter[n] = index + 1
                track_ids.append(f"{n}.{index:05d}")
        canonical = SPLIT_ALIASES.get(split_name.lower(), split_name)
        ds = ds.select_columns([audio_col])
        if audio_col != "audio":
            ds = ds.rename_column(audio_col, "audio")
        ds = ds.add_column("labels", labels, feature=datasets.Value("int64"))
        ds = ds.add_column("track_id", track_ids, feature=datasets.Value("string"))
        ds = ds.add_column("source_split", [canonical] * len(ds), feature=datasets.Value("string"))
        parts.append(ds)
    tracks = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    all_ids = tracks["track_id"]
    if len(set(all_ids)) != len(all_ids):
        seen, dupes = set(), []
        for t in all_ids:
            if t in seen:
                dupes.append(t)
            seen.add(t)
        raise DataSourceError(f"{len(dupes)} duplicate track ids in {args.dataset_name!r}, e.g. {dupes[:5]}.")
    if not ids_from_names:
        logger.warning("%s has no file names; track ids are <genre>.<index> in row order", args.dataset_name)
    fingerprint = Hasher.hash(["dataset", args.dataset_name, args.dataset_config_name, audio_col, label_col,
                               fingerprints])
    description = f"dataset {args.dataset_name} ({len(tracks)} tracks, splits {list(loaded)})"
    logger.info("Data source: %s", description)
    return TrackSource(tracks, label_names, fingerprint, description, ids_from_names)


def load_source(args: DataArguments) -> TrackSource:
    """The `TrackSource` of `args` (the synthetic folder must already exist; see `ensure_synthetic_gtzan`)."""
    if args.dataset_name:
        return load_dataset_source(args)
    return load_folder_source(args.data_dir)
