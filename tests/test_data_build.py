"""build_datasets end to end: bad data, rows and features, splits.json, caching."""

import json
import logging

import numpy as np
import pytest
import torch

import ast_dora.data.features as features_module
from ast_dora.data import DataArguments, build_datasets, decode_audio
from ast_dora.data.build import window_counts
from ast_dora.data.windows import cut_windows, seconds_to_samples


def _args(root, cache, **kwargs):
    return DataArguments(data_dir=str(root), features_cache_dir=str(cache), **kwargs)


@pytest.fixture(scope="module")
def messy_build(messy_gtzan_folder, tmp_path_factory):
    from conftest import TinyLogSpecFeatureExtractor

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("run")
    fe = TinyLogSpecFeatureExtractor()
    data = build_datasets(
        _args(messy_gtzan_folder.root, cache), fe, default_window=(4.0, 2.0), seed=0, output_dir=out
    )
    return data, fe, out


def test_bad_data_is_skipped_padded_downmixed_resampled(messy_build, messy_gtzan_folder):
    data, _, _ = messy_build
    summary = data.summary
    assert summary["skipped_unreadable"] == [messy_gtzan_folder.corrupt]
    assert summary["padded_short"] == [messy_gtzan_folder.short]
    assert summary["downmixed_multichannel"] == [messy_gtzan_folder.stereo]
    rates = {t: r for t, r in messy_gtzan_folder.sampling_rates.items() if t != messy_gtzan_folder.corrupt}
    expected = {r: list(rates.values()).count(r) for r in set(rates.values())}
    assert summary["source_sampling_rates"] == expected and len(expected) == 4
    assert summary["resampled"] == 29 - expected[8000]  # all but the 8-kHz files (the tiny extractor's rate)
    assert summary["tracks_decoded"] == 29
    all_ids = [t for ids in data.splits.values() for t in ids]
    assert messy_gtzan_folder.corrupt not in all_ids and len(all_ids) == 29
    for name, ds in data.datasets.items():
        assert messy_gtzan_folder.corrupt not in set(ds["track_id"]), name


def test_corrupt_file_warned_once_by_name(messy_gtzan_folder, tmp_path, tiny_feature_extractor, caplog):
    args = _args(messy_gtzan_folder.root, tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="ast_dora"):
        build_datasets(args, tiny_feature_extractor, default_window=(4.0, 2.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    named = [m for m in warnings if messy_gtzan_folder.corrupt in m]
    assert len(named) == 1 and "jazz.00001.wav" in named[0], warnings
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ast_dora"):  # cache hit: the summary carries the one warning
        data = build_datasets(args, tiny_feature_extractor, default_window=(4.0, 2.0))
    assert data.cache_hits == {"features": True}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["Skipped 1 unreadable audio file(s): jazz.00001"]
    assert "1 shorter than a window padded ['pop.00001']" in caplog.text


def test_rows_are_windows_with_exact_features(messy_build, messy_gtzan_folder):
    data, fe, _ = messy_build
    assert list(data.datasets) == ["train", "validation", "test"]
    assert data.labels[0] == "blues" and len(data.labels) == 10
    sr = fe.sampling_rate
    window, hop = seconds_to_samples(4.0, sr), seconds_to_samples(2.0, sr)
    for name, ds in data.datasets.items():
        assert ds.column_names == ["input_values", "labels", "track_id", "window_start"]
        counts = window_counts(ds)
        assert sorted(counts) == data.splits[name]
        ids = ds["track_id"]
        assert ids == sorted(ids)  # stable order: by track, then time
    tid = messy_gtzan_folder.stereo
    split = next(n for n, ids in data.splits.items() if tid in ids)
    ds = data.datasets[split]
    rows = [i for i, t in enumerate(ds["track_id"]) if t == tid]
    path = messy_gtzan_folder.root / "rock" / "rock.00000.wav"
    windows, starts = cut_windows(decode_audio(str(path), sr).waveform, window, hop)
    expected = fe(list(windows), sampling_rate=sr)["input_values"]
    assert len(rows) == len(windows) == 1  # a 4-s stereo track: one window
    for k, i in enumerate(rows):
        row = ds[i]
        assert isinstance(row["input_values"], torch.Tensor)
        np.testing.assert_array_equal(row["input_values"].numpy(), expected[k])
        assert row["window_start"] == pytest.approx(starts[k] / sr)
        assert int(row["labels"]) == data.labels.index("rock")
    five = "blues.00001"  # 5 s: windows [0, 4) and [1, 5), the last one aligned to the end
    five_split = next(n for n, ids in data.splits.items() if five in ids)
    five_ds = data.datasets[five_split]
    starts = [r for t, r in zip(five_ds["track_id"], five_ds["window_start"], strict=True) if t == five]
    assert starts == [0.0, 1.0]
    short_split = next(n for n, ids in data.splits.items() if messy_gtzan_folder.short in ids)
    assert window_counts(data.datasets[short_split])[messy_gtzan_folder.short] == 1


def test_splits_json_and_summary_written(messy_build):
    data, _, out = messy_build
    written = json.loads((out / "splits.json").read_text())
    assert written == data.splits
    assert set(written["train"]).isdisjoint(written["test"]) and set(written["train"]).isdisjoint(
        written["validation"]
    )
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["skipped_unreadable"] == ["jazz.00001"]


def test_cache_hit_then_miss_when_feature_config_changes(synthetic_gtzan_folder, tmp_path, monkeypatch):
    from conftest import TinyLogSpecFeatureExtractor

    calls = []
    original = features_module.tracks_to_windows

    def counting(batch, **kwargs):
        calls.append(len(batch["track_id"]))
        return original(batch, **kwargs)

    monkeypatch.setattr(features_module, "tracks_to_windows", counting)
    args = _args(synthetic_gtzan_folder, tmp_path / "cache")
    first = build_datasets(args, TinyLogSpecFeatureExtractor(), default_window=(2.0, 1.0))
    assert first.cache_hits == {"features": False} and sum(calls) == 30
    calls.clear()
    second = build_datasets(args, TinyLogSpecFeatureExtractor(), default_window=(2.0, 1.0))
    assert second.cache_hits == {"features": True} and calls == []
    np.testing.assert_array_equal(
        second.datasets["test"][0]["input_values"], first.datasets["test"][0]["input_values"]
    )
    changed = build_datasets(args, TinyLogSpecFeatureExtractor(n_bands=4), default_window=(2.0, 1.0))
    assert changed.cache_hits == {"features": False} and sum(calls) == 30
    assert changed.datasets["test"][0]["input_values"].shape[-1] == 4
    calls.clear()
    other_window = build_datasets(args, TinyLogSpecFeatureExtractor(), default_window=(3.0, 1.0))
    assert other_window.cache_hits == {"features": False} and sum(calls) == 30
    calls.clear()
    uncached = build_datasets(
        _args(synthetic_gtzan_folder, tmp_path / "cache", cache_features=False),
        TinyLogSpecFeatureExtractor(),
        default_window=(2.0, 1.0),
    )
    assert uncached.cache_hits == {"features": False} and sum(calls) == 30
    assert len(uncached.datasets["train"]) == len(first.datasets["train"])


def test_window_override_and_parquet_source(parquet_gtzan_dataset, tmp_path, tiny_feature_extractor):
    args = DataArguments(
        dataset_name=str(parquet_gtzan_dataset),
        split="predefined",
        window_seconds=1.0,
        hop_seconds=1.0,
        features_cache_dir=str(tmp_path),
    )
    data = build_datasets(
        args, tiny_feature_extractor, default_window=(4.0, 2.0), output_dir=tmp_path / "run"
    )
    assert (data.window_seconds, data.hop_seconds) == (1.0, 1.0)
    assert {n: len(ds) for n, ds in data.datasets.items()} == {"train": 60, "validation": 30, "test": 30}
    assert data.datasets["validation"][0]["track_id"] == "blues.00002"


def test_ast_feature_extractor_and_parallel_map(synthetic_gtzan_folder, tmp_path, ast_feature_extractor):
    args = _args(
        synthetic_gtzan_folder, tmp_path / "cache", preprocessing_num_workers=2, max_tracks_per_genre=2
    )
    data = build_datasets(args, ast_feature_extractor, default_window=(10.24, 10.24))
    ds = data.datasets["train"]
    assert ds[0]["input_values"].shape == (1024, 128) and ds[0]["input_values"].dtype == torch.float32
    assert all(n == 1 for n in window_counts(ds).values())  # 6-s tracks: one padded 10.24-s window each
    assert len(data.summary["padded_short"]) == 20
    x = decode_audio(str(synthetic_gtzan_folder / "blues" / f"{ds[0]['track_id']}.wav"), 16000).waveform
    window, _ = cut_windows(x, 163840, 163840)
    expected = ast_feature_extractor(list(window), sampling_rate=16000)["input_values"][0]
    np.testing.assert_array_equal(ds[0]["input_values"].numpy(), expected)


def test_default_data_collator_batches(messy_build):
    from transformers import default_data_collator

    data, _, _ = messy_build
    ds = data.datasets["train"].remove_columns(["track_id", "window_start"])  # what the Trainer does
    batch = default_data_collator([ds[i] for i in range(4)])
    assert batch["input_values"].shape[0] == 4 and batch["labels"].dtype == torch.int64


def test_decode_downmixes_to_the_channel_mean_and_resamples(tmp_path):
    from conftest import tone, write_audio

    stereo = tone(1.0, 44100, channels=2)  # right = 2 x left
    write_audio(tmp_path / "s.wav", stereo, 44100)
    write_audio(tmp_path / "m.flac", stereo.mean(axis=1), 44100)
    a, b = decode_audio(str(tmp_path / "s.wav"), 16000), decode_audio(str(tmp_path / "m.flac"), 16000)
    assert (a.source_channels, a.source_sampling_rate, a.sampling_rate) == (2, 44100, 16000)
    assert len(a.waveform) == 16000 and a.waveform.ndim == 1
    np.testing.assert_allclose(a.waveform, b.waveform, atol=2e-4)
