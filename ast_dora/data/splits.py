"""Train / validation / test splits by track, never by window.

Protocols (`DataArguments.split`):

- `stratified`: per genre, a seeded shuffle cut 8:1:1 (at least one validation and one test track per genre
  once a genre has 3 tracks),
- `folds`: k folds over tracks, stratified per genre (each genre's shuffled tracks are dealt round-robin,
  continuing across genres so the folds stay balanced); `fold` is the test fold, `fold + 1` validation,
- `fault_filtered`: Kereliuk, Sturm & Larsen's fault-filtered lists (443 / 197 / 290),
- `kereliuk_stratified`: the same authors' 500 / 250 / 250 stratified lists,
- `predefined`: the source dataset's own train / validation / test splits.

Listed tracks missing from the data are logged (count and first names), never silently dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .arguments import DataArguments
from .gtzan import GTZAN_GENRES, resolve_split_lists_dir, track_id_from_name
from .sources import DataSourceError

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
LIST_FILES = {
    "fault_filtered": {
        "train": "train_filtered.txt",
        "validation": "valid_filtered.txt",
        "test": "test_filtered.txt",
    },
    "kereliuk_stratified": {
        "train": "train_stratified.txt",
        "validation": "valid_stratified.txt",
        "test": "test_stratified.txt",
    },
}


def _by_label(track_ids: list[str], labels: list[int]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = defaultdict(list)
    for tid, label in zip(track_ids, labels, strict=True):
        groups[int(label)].append(tid)
    return {label: sorted(ids) for label, ids in sorted(groups.items())}


def stratified_split(track_ids, labels, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    out = {name: [] for name in SPLIT_NAMES}
    for label, ids in _by_label(track_ids, labels).items():
        ids = list(ids)
        np.random.default_rng([seed, label]).shuffle(ids)
        n = len(ids)
        if n >= 3:
            n_val = max(1, int(round(n * fractions[1])))
            n_test = max(1, int(round(n * fractions[2])))
        else:
            n_val = n_test = 0
            logger.warning("Genre id %d has only %d track(s): all go to train", label, n)
        out["test"] += ids[:n_test]
        out["validation"] += ids[n_test : n_test + n_val]
        out["train"] += ids[n_test + n_val :]
    return {name: sorted(ids) for name, ids in out.items()}


def fold_split(track_ids, labels, num_folds: int, fold: int, seed: int) -> dict[str, list[str]]:
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    position = 0
    for label, ids in _by_label(track_ids, labels).items():
        ids = list(ids)
        np.random.default_rng([seed, label]).shuffle(ids)
        for tid in ids:
            folds[position % num_folds].append(tid)
            position += 1
    test, validation = folds[fold], folds[(fold + 1) % num_folds]
    train = [tid for k, f in enumerate(folds) if k not in (fold, (fold + 1) % num_folds) for tid in f]
    return {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}


def read_split_list(path: Path) -> list[str]:
    """Track ids of a list file whose lines are `<genre>/<genre>.NNNNN.wav`."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(track_id_from_name(line))
    return ids


def list_split(
    protocol: str, track_ids, lists_dir: str | None, ids_from_names: bool = True
) -> dict[str, list[str]]:
    folder = resolve_split_lists_dir(lists_dir)
    available = set(track_ids)
    out, missing_all, listed_all = {}, [], set()
    for name, filename in LIST_FILES[protocol].items():
        listed = read_split_list(folder / filename)
        listed_all.update(listed)
        present = [t for t in listed if t in available]
        missing = [t for t in listed if t not in available]
        if missing:
            missing_all += missing
            logger.warning(
                "%s %s: %d of %d listed tracks are not in the data (first: %s)",
                protocol,
                name,
                len(missing),
                len(listed),
                ", ".join(missing[:5]),
            )
        out[name] = sorted(present)
    if not any(out.values()):
        hint = (
            " The source has no file names (track ids were made up as <genre>.<index>); for a dataset that ships "
            "the split itself (e.g. confit/gtzan-parquet, already fault-filtered) use split=predefined."
            if not ids_from_names
            else ""
        )
        raise ValueError(
            f"split={protocol!r}: none of the {len(listed_all)} tracks listed in {folder} is in the data "
            f"(data track ids look like {sorted(available)[:3]}).{hint}"
        )
    unlisted = available - listed_all
    if unlisted:
        logger.info(
            "%s: %d track(s) of the data are in none of the lists and are left out (e.g. %s)",
            protocol,
            len(unlisted),
            sorted(unlisted)[:3],
        )
    if missing_all:
        logger.warning("%s: %d listed track(s) missing from the data in total", protocol, len(missing_all))
    return out


def predefined_split(track_ids, source_splits) -> dict[str, list[str]]:
    out = {name: [] for name in SPLIT_NAMES}
    unknown = set()
    for tid, split in zip(track_ids, source_splits, strict=True):
        if split in out:
            out[split].append(tid)
        else:
            unknown.add(split)
    if unknown:
        raise ValueError(
            f"split='predefined': the dataset's split(s) {sorted(unknown)} are not train/validation/test."
        )
    empty = [name for name, ids in out.items() if not ids]
    if empty:
        raise ValueError(
            f"split='predefined': the dataset has no {empty} split; use split=stratified or split=folds instead."
        )
    return {name: sorted(ids) for name, ids in out.items()}


def cap_tracks_per_genre(
    splits: dict[str, list[str]], label_of: dict[str, int], cap: int
) -> dict[str, list[str]]:
    """Keep at most `cap` tracks per genre, shared between the splits in proportion (each non-empty split of a
    genre keeps at least one track when the cap allows it; train is served first)."""
    out = {name: [] for name in SPLIT_NAMES}
    for label in sorted(set(label_of.values())):
        per_split = {name: [t for t in splits[name] if label_of[t] == label] for name in SPLIT_NAMES}
        total = sum(len(v) for v in per_split.values())
        if total <= cap:
            for name in SPLIT_NAMES:
                out[name] += per_split[name]
            continue
        keep = {name: 0 for name in SPLIT_NAMES}
        budget = cap
        for name in SPLIT_NAMES:  # one each first
            if per_split[name] and budget:
                keep[name] = 1
                budget -= 1
        shares = {name: len(per_split[name]) / total * cap for name in SPLIT_NAMES}
        while budget > 0:
            name = max(
                SPLIT_NAMES, key=lambda n: (shares[n] - keep[n]) if keep[n] < len(per_split[n]) else -1e9
            )
            keep[name] += 1
            budget -= 1
        for name in SPLIT_NAMES:
            # spread the kept tracks over the (sorted) list rather than taking a prefix
            ids = per_split[name]
            if keep[name] < len(ids):
                idx = np.linspace(0, len(ids) - 1, keep[name]).round().astype(int) if keep[name] else []
                ids = [ids[i] for i in idx]
            out[name] += ids
    return {name: sorted(ids) for name, ids in out.items()}


def check_disjoint(splits: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for tid in splits[name]:
            if tid in seen:
                raise AssertionError(f"track {tid} is in both {seen[tid]} and {name}")
            seen[tid] = name


def check_list_protocol(protocol: str, label_names: list[str] | None) -> None:
    """The list-based protocols name GTZAN tracks: refuse data with other labels, saying what to use instead."""
    if protocol in LIST_FILES and label_names is not None and list(label_names) != list(GTZAN_GENRES):
        shown = list(label_names)[:8] + (["..."] if len(label_names) > 8 else [])
        raise DataSourceError(
            f"split={protocol!r} uses Kereliuk, Sturm & Larsen's lists of GTZAN tracks, and this data's labels "
            f"{shown} are not GTZAN's genres: use --split stratified (seeded 8:1:1 per label) or --split folds "
            "(k-fold over tracks, with --num_folds K and --fold K or --cross_validate true)."
        )


def make_splits(
    args: DataArguments,
    track_ids: list[str],
    labels: list[int],
    source_splits: list[str] | None = None,
    ids_from_names: bool = True,
    label_names: list[str] | None = None,
) -> dict[str, list[str]]:
    """`{"train": [...], "validation": [...], "test": [...]}` sorted track ids for `args.split`.

    `label_names` (the source's labels) lets the list-based protocols refuse data that is not GTZAN's."""
    check_list_protocol(args.split, label_names)
    if args.split == "stratified":
        splits = stratified_split(track_ids, labels, args.split_seed)
    elif args.split == "folds":
        splits = fold_split(track_ids, labels, args.num_folds, args.fold, args.split_seed)
    elif args.split in LIST_FILES:
        splits = list_split(args.split, track_ids, args.split_lists_dir, ids_from_names)
    elif args.split == "predefined":
        splits = predefined_split(track_ids, source_splits or ["train"] * len(track_ids))
    else:  # validated by DataArguments
        raise ValueError(f"unknown split protocol {args.split!r}")
    if args.max_tracks_per_genre:
        label_of = {tid: int(v) for tid, v in zip(track_ids, labels, strict=True)}
        splits = cap_tracks_per_genre(splits, label_of, args.max_tracks_per_genre)
    check_disjoint(splits)
    logger.info("Split %s: %s tracks", args.split, {name: len(ids) for name, ids in splits.items()})
    return splits


def write_splits_json(splits: dict[str, list[str]], output_dir: str | os.PathLike) -> Path:
    path = Path(output_dir) / "splits.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps({name: list(splits[name]) for name in SPLIT_NAMES}, indent=1) + "\n")
    os.replace(tmp, path)
    return path
