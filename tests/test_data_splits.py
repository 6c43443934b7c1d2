"""Splits by track: protocol sizes on GTZAN's 1000 names, disjointness, missing-track reports, splits.json."""

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from ast_dora.data import DataArguments, load_source, make_splits
from ast_dora.data.gtzan import DEFAULT_SPLIT_LISTS_DIR, resolve_split_lists_dir
from ast_dora.data.splits import read_split_list, write_splits_json

PROTOCOLS = ["stratified", "folds", "fault_filtered", "kereliuk_stratified"]


@pytest.fixture(scope="module")
def names_source(gtzan_names_folder):
    source = load_source(DataArguments(data_dir=str(gtzan_names_folder)))
    return source.tracks["track_id"], source.tracks["labels"]


def _splits(names_source, **kwargs):
    ids, labels = names_source
    return make_splits(DataArguments(data_dir="unused", **kwargs), ids, labels)


def _genre_counts(ids):
    return Counter(t.split(".")[0] for t in ids)


def test_fault_filtered_sizes(names_source):
    splits = _splits(names_source, split="fault_filtered")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [443, 197, 290]


def test_kereliuk_stratified_sizes(names_source):
    splits = _splits(names_source, split="kereliuk_stratified")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [500, 250, 250]


def test_stratified_sizes_per_genre(names_source):
    splits = _splits(names_source, split="stratified")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [800, 100, 100]
    for name, per_genre in (("train", 80), ("validation", 10), ("test", 10)):
        assert set(_genre_counts(splits[name]).values()) == {per_genre}
    assert _splits(names_source, split="stratified") == splits  # seeded
    assert _splits(names_source, split="stratified", split_seed=1) != splits


def test_folds_cover_every_track_once(names_source):
    ids, _ = names_source
    tests = []
    for fold in range(10):
        splits = _splits(names_source, split="folds", fold=fold)
        assert [len(splits[s]) for s in ("train", "validation", "test")] == [800, 100, 100]
        assert set(_genre_counts(splits["test"]).values()) == {10}
        nxt = _splits(names_source, split="folds", fold=(fold + 1) % 10)
        assert splits["validation"] == nxt["test"]  # validation is the next fold
        tests += splits["test"]
    assert sorted(tests) == sorted(ids)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("cap", [None, 5])
def test_no_track_in_two_splits(names_source, protocol, cap):
    splits = _splits(names_source, split=protocol, max_tracks_per_genre=cap)
    seen = Counter(t for ids in splits.values() for t in ids)
    assert seen and max(seen.values()) == 1
    if cap:
        assert max(_genre_counts([t for ids in splits.values() for t in ids]).values()) <= cap
        assert all(splits[s] for s in ("train", "validation", "test"))


def test_missing_listed_tracks_are_reported(tmp_path, caplog):
    ids = [f"{g}.{i:05d}" for g in ("blues", "rock") for i in range(20)]  # lists name tracks beyond these
    labels = [0] * 20 + [9] * 20
    with caplog.at_level(logging.WARNING, logger="ast_dora"):
        splits = make_splits(DataArguments(data_dir="x", split="fault_filtered"), ids, labels)
    present = set(ids)
    assert all(t in present for s in splits.values() for t in s)
    text = caplog.text
    assert (
        "listed tracks are not in the data" in text
        and "first:" in text
        and "missing from the data in total" in text
    )


def test_lists_matching_nothing_fail_with_a_hint():
    with pytest.raises(ValueError, match="split=predefined"):
        make_splits(
            DataArguments(data_dir="x", split="fault_filtered"),
            ["song_a", "song_b"],
            [0, 1],
            ids_from_names=False,
        )


def test_predefined_split_from_parquet(parquet_gtzan_dataset):
    args = DataArguments(dataset_name=str(parquet_gtzan_dataset), split="predefined")
    source = load_source(args)
    table = source.tracks
    splits = make_splits(args, table["track_id"], table["labels"], table["source_split"])
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [20, 10, 10]
    assert "blues.00002" in splits["validation"] and "blues.00003" in splits["test"]


def test_split_lists_copied_into_repo():
    folder = resolve_split_lists_dir(None)
    assert folder == DEFAULT_SPLIT_LISTS_DIR
    sizes = {f.name: len(read_split_list(f)) for f in sorted(folder.glob("*.txt"))}
    assert sizes == {
        "test_filtered.txt": 290,
        "test_stratified.txt": 250,
        "train_filtered.txt": 443,
        "train_stratified.txt": 500,
        "valid_filtered.txt": 197,
        "valid_stratified.txt": 250,
    }
    assert (folder.parent / "README.md").is_file()
    with pytest.raises(FileNotFoundError, match="--split_lists_dir"):
        resolve_split_lists_dir("/nonexistent/lists")


def test_writes_splits_json(tmp_path):
    splits = {"train": ["a"], "validation": ["b"], "test": ["c"]}
    path = write_splits_json(splits, tmp_path / "run")
    assert json.loads(Path(path).read_text()) == splits
