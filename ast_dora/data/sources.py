"""Where tracks come from, as one `datasets.Dataset` of tracks (not yet decoded).

Every source becomes a `TrackSource` whose `tracks` dataset has the columns

- `audio`: struct `{"bytes", "path"}` (a local path, or the embedded bytes of a parquet row),
- `labels`: int64 class id into `TrackSource.labels`,
- `track_id`: GTZAN's file stem such as `blues.00000` for GTZAN-named files, else the file's path relative to the
  folder (or manifest) without extension, such as `rock/live/x`,
- `source_split`: the split the source put the track in (`train` for a folder or a manifest without `split`),

plus a `fingerprint` that changes whenever the source's content does (it keys the feature cache).

Sources: a Hub parquet dataset or local parquet file/folder or `audiofolder` folder (`dataset_name`), a local
folder `<root>/<label>/.../<file>` with any label names (`data_dir`; GTZAN's layout, also under `genres/` or
Kaggle's `Data/genres_original/`, is one case of it), a manifest file `.csv` / `.jsonl` with `path,label[,split]`
(`data_dir` naming the file), and the synthetic generator (which writes a GTZAN-layout folder). Labels are sorted
by name, except that data whose labels are all GTZAN genres gets GTZAN's ten, in GTZAN's order.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import datasets
import pyarrow.compute as pc
from datasets import Audio, Dataset, concatenate_datasets
from datasets.fingerprint import Hasher

from ..errors import MissingComponentError
from .arguments import SCRIPT_DATASETS, DataArguments, is_manifest_path, script_dataset_message
from .gtzan import AUDIO_EXTENSIONS, GTZAN_GENRES, parse_track_id, track_id_from_name

# What an `Audio(decode=False)` column holds, as a plain struct: local sources are written with it, then cast
# (datasets' `Audio.encode_example` imports torchcodec, which needs a system FFmpeg; decoding is PyAV's).
AUDIO_STORAGE = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}

logger = logging.getLogger(__name__)

# Folder layouts that hold `<genre>/<file>` below the given root.
LAYOUT_SUBDIRS = ("", "genres", "genres_original", "Data/genres_original", "gtzan", "GTZAN")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
}


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
# local folder <root>/<label>/.../<file> (GTZAN's layout is one case of it) and manifest files
# ----------------------------------------------------------------------------------------------------------


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_audio(p) and not p.name.startswith("."))


def track_id_for(relative_path: str) -> str:
    """The track id of a file at `relative_path` (relative to the folder root or the manifest's folder).

    A file named in GTZAN's way (`<genre>.NNNNN.<ext>`, genre one of GTZAN's) keeps GTZAN's id, the stem
    `blues.00012`, wherever it lies (the split lists and published splits use those); any other file's id is its
    relative path without extension, `rock/live/x` for `rock/live/x.wav`.
    """
    path = PurePosixPath(relative_path.replace("\\", "/"))
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    parsed = parse_track_id(stem)
    if parsed is not None and parsed[0] in GTZAN_GENRES:
        return stem
    return str(path.with_name(stem))


def label_names_for(found: set[str] | list[str]) -> list[str]:
    """The label list of data with labels `found`: GTZAN's ten genres (ids unchanged) when every label is one of
    them, else the labels sorted by name."""
    if set(found) <= set(GTZAN_GENRES):
        return list(GTZAN_GENRES)
    return sorted(found)


def find_layout_root(root: Path) -> Path:
    """The folder whose sub-folders are the labels: GTZAN's `root/genres` or Kaggle's `root/Data/genres_original`
    when they hold genre folders, else `root` itself."""
    if not root.is_dir():
        raise DataSourceError(
            f"data_dir {str(root)!r} does not exist or is not a folder (or a .csv / .jsonl manifest)."
        )
    for sub in LAYOUT_SUBDIRS:
        candidate = root / sub if sub else root
        if candidate.is_dir() and any((candidate / g).is_dir() for g in GTZAN_GENRES):
            return candidate
    return root


def _dedupe(entries: list[tuple[Path, str, str]]) -> dict[str, tuple[Path, str, str]]:
    """One file per track id: a track present both as .wav and .au (say) keeps the first extension listed; the
    same id under two labels fails."""
    by_id: dict[str, tuple[Path, str, str]] = {}
    rank = {ext: i for i, ext in enumerate(AUDIO_EXTENSIONS)}
    for entry in entries:
        previous = by_id.get(entry[2])
        if previous is None:
            by_id[entry[2]] = entry
            continue
        if previous[1] != entry[1]:
            raise DataSourceError(
                f"Track id {entry[2]!r} appears under two labels: {previous[0]} ({previous[1]}) and {entry[0]} "
                f"({entry[1]}); rename one of the files (GTZAN-style names <genre>.NNNNN must be unique)."
            )
        keep = min(previous, entry, key=lambda e: rank.get(e[0].suffix.lower(), 99))
        logger.warning(
            "Track %s exists twice (%s, %s); using %s",
            entry[2],
            previous[0].name,
            entry[0].name,
            keep[0].name,
        )
        by_id[entry[2]] = keep
    return by_id


def scan_label_folder(root: str | Path) -> tuple[list[tuple[Path, int, str]], list[str]]:
    """`([(path, label id, track id), ...] sorted by track id, label names)` of a folder `<root>/<label>/.../<file>`.

    Every audio file at any depth below a label folder is a track of that label (ids: `track_id_for`); labels are
    the folder names, sorted (GTZAN's ten when they are all GTZAN genres). Nothing is left out silently: audio in
    hidden folders (`.x`, `__MACOSX`) is skipped with a warning, other files are counted in the log; audio lying
    beside the label folders and a folder without any audio fail, saying what was found.
    """
    root = Path(root)
    layout_root = find_layout_root(root)
    entries: list[tuple[Path, str, str]] = []
    skipped_hidden: list[str] = []
    other_files: dict[str, int] = {}
    for folder in sorted(p for p in layout_root.iterdir() if p.is_dir()):
        for directory, subdirs, files in os.walk(folder):
            directory = Path(directory)
            hidden = _hidden(folder.name) or any(
                _hidden(part) for part in directory.relative_to(folder).parts
            )
            for name in sorted(files):
                path = directory / name
                if not _is_audio(path):
                    other_files[path.suffix.lower() or name] = (
                        other_files.get(path.suffix.lower() or name, 0) + 1
                    )
                elif hidden or name.startswith("."):
                    skipped_hidden.append(path.relative_to(layout_root).as_posix())
                else:
                    entries.append(
                        (path, folder.name, track_id_for(path.relative_to(layout_root).as_posix()))
                    )
            subdirs.sort()
    loose = _audio_files(layout_root)
    if loose:
        raise DataSourceError(
            f"{len(loose)} audio file(s) lie directly in {str(layout_root)!r} (e.g. {loose[0].name}), without a label "
            "folder; expected every file below the folder of its label, <root>/<label>/.../<file>."
        )
    if not entries:
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in layout_root.iterdir())[:12]
        raise DataSourceError(
            f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) in the label folders of {str(layout_root)!r}; found "
            f"{present or 'nothing'}. Expected <root>/<label>/.../<file> (e.g. GTZAN's <genre>/<genre>.NNNNN.wav), "
            "or pass a .csv / .jsonl manifest."
        )
    if skipped_hidden:
        logger.warning(
            "Skipped %d audio file(s) in hidden folders or with hidden names (starting with '.' or '_'): %s",
            len(skipped_hidden),
            skipped_hidden[:5],
        )
    if other_files:
        logger.info(
            "Ignored %d file(s) that are not audio (%s) in %s",
            sum(other_files.values()),
            ", ".join(f"{ext} {n}" for ext, n in sorted(other_files.items())),
            layout_root,
        )
    by_id = _dedupe(entries)
    mislabeled = [
        tid
        for tid, (_, label, _) in by_id.items()
        if (parsed := parse_track_id(tid))
        and parsed[0] in GTZAN_GENRES
        and label in GTZAN_GENRES
        and parsed[0] != label
    ]
    if mislabeled:
        logger.warning(
            "%d file(s) are named after another genre than their folder (the folder wins): %s",
            len(mislabeled),
            mislabeled[:5],
        )
    labels = label_names_for({label for _, label, _ in by_id.values()})
    index = {name: i for i, name in enumerate(labels)}
    return [(path, index[label], tid) for tid, (path, label, _) in sorted(by_id.items())], labels


def _track_source(
    kind: str, where: str, rows: list[tuple[Path, int, str, str]], labels: list[str]
) -> TrackSource:
    """A `TrackSource` of local files `(path, label id, track id, source split)`."""
    stats = []
    for path, label, tid, split in rows:
        st = path.stat()
        stats.append((str(path.resolve()), st.st_size, st.st_mtime_ns, label, tid, split))
    tracks = Dataset.from_dict(
        {
            "audio": [{"bytes": None, "path": s[0]} for s in stats],
            "labels": [s[3] for s in stats],
            "track_id": [s[4] for s in stats],
            "source_split": [s[5] for s in stats],
        },
        features=datasets.Features(
            {
                # a plain struct, cast below: encoding rows into an `Audio` feature imports torchcodec
                # (datasets' `Audio.encode_example`), a cast does not.
                "audio": AUDIO_STORAGE,
                "labels": datasets.Value("int64"),
                "track_id": datasets.Value("string"),
                "source_split": datasets.Value("string"),
            }
        ),
    ).cast_column("audio", Audio(decode=False))
    fingerprint = Hasher.hash([kind, stats, labels])
    counts = {name: 0 for name in labels}
    for _, label, _, _ in rows:
        counts[labels[label]] += 1
    description = (
        f"{kind} {where} ({len(rows)} tracks: " + ", ".join(f"{g} {n}" for g, n in counts.items()) + ")"
    )
    logger.info("Data source: %s", description)
    return TrackSource(tracks, list(labels), fingerprint, description, ids_from_names=True)


def load_folder_source(root: str | Path) -> TrackSource:
    entries, labels = scan_label_folder(root)
    return _track_source(
        "folder", str(root), [(path, label, tid, "train") for path, label, tid in entries], labels
    )


MANIFEST_COLUMNS = ("path", "label", "split")


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """The rows of a manifest as `{"path", "label"[, "split"]}` strings, with the line each came from in `"line"`.

    CSV: a header naming `path,label[,split]` (other columns are ignored). JSON Lines: one object per line with
    those keys. Fails naming the file and line of anything missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"Manifest {str(path)!r} does not exist.")
    rows: list[dict[str, str]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in MANIFEST_COLUMNS[:2] if c not in header]
            if missing:
                raise DataSourceError(
                    f"Manifest {str(path)!r} has no {' / '.join(missing)} column (header: {header}); expected a header "
                    "line `path,label` or `path,label,split`."
                )
            for number, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                rows.append({**{c: row[c] for c in MANIFEST_COLUMNS if c in row}, "line": str(number)})
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataSourceError(
                    f"Manifest {str(path)!r} line {number} is not JSON ({error})."
                ) from None
            if not isinstance(row, dict):
                raise DataSourceError(
                    f"Manifest {str(path)!r} line {number} is not a JSON object with path and label."
                )
            rows.append(
                {
                    **{c: str(row[c]).strip() for c in MANIFEST_COLUMNS if row.get(c) is not None},
                    "line": str(number),
                }
            )
    if not rows:
        raise DataSourceError(f"Manifest {str(path)!r} lists no files.")
    for row in rows:
        empty = [c for c in MANIFEST_COLUMNS[:2] if not row.get(c)]
        if empty:
            raise DataSourceError(
                f"Manifest {str(path)!r} line {row['line']}: no {' / '.join(empty)}; every row needs "
                "a path (relative to the manifest) and a label."
            )
    return rows


def load_manifest_source(manifest: str | Path, need_splits: bool = False) -> TrackSource:
    """The tracks a manifest lists; paths are relative to the manifest's folder (or absolute). With a `split`
    column (train / validation / test, or their usual aliases) the tracks carry it (`split=predefined`)."""
    manifest = Path(manifest)
    rows = read_manifest(manifest)
    base = manifest.parent
    with_split = [row for row in rows if row.get("split")]
    if with_split and len(with_split) != len(rows):
        row = next(row for row in rows if not row.get("split"))
        raise DataSourceError(
            f"Manifest {str(manifest)!r} line {row['line']} has no split while other rows have one: "
            "give every row a split (train / validation / test), or none."
        )
    if need_splits and not with_split:
        raise DataSourceError(
            f"split=predefined uses the manifest's own split column, and {str(manifest)!r} has none: add a column "
            "`split` (train / validation / test), or use --split stratified or --split folds."
        )
    entries, missing, splits = [], [], []
    for row in rows:
        relative = row["path"].replace("\\", "/")
        path = Path(relative) if Path(relative).is_absolute() else base / relative
        if not path.is_file():
            missing.append(f"line {row['line']}: {row['path']}")
            continue
        split = row.get("split", "train")
        canonical = SPLIT_ALIASES.get(split.lower())
        if canonical is None:
            raise DataSourceError(
                f"Manifest {str(manifest)!r} line {row['line']}: split {split!r} is not one of "
                f"train / validation / test (or one of {sorted(SPLIT_ALIASES)})."
            )
        entries.append((path, row["label"], track_id_for(relative.lstrip("/"))))
        splits.append(canonical)
    if missing:
        raise DataSourceError(
            f"{len(missing)} of the {len(rows)} files listed in manifest {str(manifest)!r} do not exist (paths are "
            f"relative to {str(base)!r}): {missing[:5]}. Fix or remove those rows."
        )
    split_of = {entry[2]: split for entry, split in zip(entries, splits, strict=True)}
    seen_paths: dict[Path, str] = {}
    for path, _, tid in entries:
        resolved = path.resolve()
        if resolved in seen_paths:
            raise DataSourceError(f"Manifest {str(manifest)!r} lists {path} twice; list each file once.")
        seen_paths[resolved] = tid
    by_id = _dedupe(entries)
    labels = label_names_for({label for _, label, _ in by_id.values()})
    index = {name: i for i, name in enumerate(labels)}
    rows_out = [(path, index[label], tid, split_of[tid]) for tid, (path, label, _) in sorted(by_id.items())]
    return _track_source("manifest", str(manifest), rows_out, labels)


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
        if _needs_torchcodec(error):
            raise MissingComponentError(
                f"dataset_name={name!r}: datasets' audiofolder loader encodes audio through torchcodec, which is "
                "not installed or finds no FFmpeg (pip install torchcodec, plus FFmpeg: apt-get install ffmpeg); "
                "a folder in GTZAN's layout (genre subfolders) loads as data_dir=FOLDER without either."
            ) from None
        text = str(error)
        if "scripts are no longer supported" in text or ".py" in text and "script" in text.lower():
            raise DataSourceError(script_dataset_message(name)) from error
        raise
    if isinstance(loaded, Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _needs_torchcodec(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is datasets asking for torchcodec, or torchcodec finding no FFmpeg."""
    while error is not None:
        if "torchcodec" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


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
    original_names = list(first.features[label_col].names) if kind == "classlabel" else None
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
        paths = [
            p
            for chunk in ds.data.column(audio_col).chunks
            for p in pc.struct_field(chunk, "path").to_pylist()
        ]
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
    fingerprint = Hasher.hash(
        ["dataset", args.dataset_name, args.dataset_config_name, audio_col, label_col, fingerprints]
    )
    description = f"dataset {args.dataset_name} ({len(tracks)} tracks, splits {list(loaded)})"
    logger.info("Data source: %s", description)
    return TrackSource(tracks, label_names, fingerprint, description, ids_from_names)


def load_source(args: DataArguments) -> TrackSource:
    """The `TrackSource` of `args` (the synthetic folder must already exist; see `ensure_synthetic_gtzan`)."""
    if args.dataset_name:
        return load_dataset_source(args)
    if is_manifest_path(args.data_dir):
        return load_manifest_source(args.data_dir, need_splits=args.split == "predefined")
    return load_folder_source(args.data_dir)
