"""Augmentation: changes train windows, reproducible with the same seed, evaluation untouched, and works
behind the Trainer's column removal and in DataLoader workers."""

import numpy as np
import pytest
import torch

from ast_dora.data import DataArguments, WaveformAugmenter, build_datasets, column_values
from ast_dora.data.arguments import AUGMENTATIONS

ALL_ON = {f"augment_{name}_prob": 1.0 for name in AUGMENTATIONS}


def _build(root, cache, fe, seed=0, **aug):
    args = DataArguments(data_dir=str(root), features_cache_dir=str(cache), **aug)
    return build_datasets(args, fe, default_window=(2.0, 1.0), seed=seed)


def _train_features(data, n=6):
    return np.stack([data.datasets["train"][i]["input_values"].numpy() for i in range(n)])


@pytest.fixture(scope="module")
def plain(synthetic_gtzan_folder, tmp_path_factory):
    from conftest import TinyLogSpecFeatureExtractor

    return _build(synthetic_gtzan_folder, tmp_path_factory.mktemp("plain"), TinyLogSpecFeatureExtractor())


def test_augmentation_changes_train_and_is_reproducible(
    synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, plain
):
    a = _build(synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, seed=1, **ALL_ON)
    assert a.cache_hits == {"features": False, "waveforms": False}
    assert len(a.datasets["train"]) == len(plain.datasets["train"])
    assert column_values(a.datasets["train"], "track_id") == plain.datasets["train"]["track_id"]
    fa = _train_features(a)
    assert fa.shape == _train_features(plain).shape
    assert not np.allclose(fa, _train_features(plain))  # augmented
    b = _build(synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, seed=1, **ALL_ON)
    assert b.cache_hits == {"features": True, "waveforms": True}
    np.testing.assert_array_equal(_train_features(b), fa)  # same seed, same order: same augmentation
    c = _build(synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, seed=2, **ALL_ON)
    assert not np.allclose(_train_features(c), fa)
    again = _train_features(b)
    assert not np.allclose(again, fa)  # every read is a fresh draw (new epoch, new augmentation)


def test_evaluation_splits_untouched(synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, plain):
    a = _build(synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, seed=1, **ALL_ON)
    for split in ("validation", "test"):
        assert a.datasets[split]["track_id"] == plain.datasets[split]["track_id"]
        np.testing.assert_array_equal(
            a.datasets[split][:]["input_values"].numpy(), plain.datasets[split][:]["input_values"].numpy()
        )


def test_zero_probability_train_equals_plain_features(
    synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, plain
):
    """The waveform path itself (bytes -> features in the transform) matches the cached features exactly."""
    args = DataArguments(
        data_dir=str(synthetic_gtzan_folder),
        features_cache_dir=str(tmp_path),
        augment_gain_prob=1.0,
        augment_gain_db_range=[0.0, 0.0],
    )
    data = build_datasets(args, tiny_feature_extractor, default_window=(2.0, 1.0))
    np.testing.assert_allclose(_train_features(data), _train_features(plain), rtol=0, atol=1e-5)


def test_transform_survives_trainer_column_removal_and_workers(
    synthetic_gtzan_folder, tmp_path, tiny_feature_extractor
):
    from transformers import default_data_collator

    data = _build(synthetic_gtzan_folder, tmp_path, tiny_feature_extractor, seed=3, augment_noise_prob=1.0)
    train = data.datasets["train"]
    assert train.column_names == ["input_values", "labels", "track_id", "window_start"]
    assert len(column_values(train, "track_id")) == len(train)
    with pytest.raises(KeyError):  # the transform returns only input_values and labels
        train[0]["track_id"]
    trimmed = train.remove_columns(["track_id", "window_start"])  # Trainer's remove_unused_columns
    row = trimmed[0]
    assert set(row) == {"input_values", "labels"} and row["input_values"].ndim == 2
    loader = torch.utils.data.DataLoader(
        trimmed,
        batch_size=4,
        num_workers=2,
        collate_fn=default_data_collator,
        generator=torch.Generator().manual_seed(0),
        shuffle=True,
    )
    batches = [b for _, b in zip(range(3), loader, strict=False)]
    assert batches[0]["input_values"].shape[0] == 4 and batches[0]["labels"].dtype == torch.int64
    again_loader = torch.utils.data.DataLoader(
        trimmed,
        batch_size=4,
        num_workers=2,
        collate_fn=default_data_collator,
        generator=torch.Generator().manual_seed(0),
        shuffle=True,
    )
    again = [b for _, b in zip(range(3), again_loader, strict=False)]
    torch.testing.assert_close(again[0]["input_values"], batches[0]["input_values"])  # same loader seed


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_changes_and_keeps_length(name):
    sr = 8000
    rng = np.random.default_rng(0)
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr) + 0.05 * rng.standard_normal(2 * sr)).astype(
        np.float32
    )
    config = DataArguments(data_dir="x", **{f"augment_{name}_prob": 1.0}).augmentation_config()
    if name == "speed":
        config["augment_speed_range"] = [1.2, 1.2]
    y = WaveformAugmenter(config, sr)(x, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert not np.allclose(x, y)
    off = DataArguments(data_dir="x").augmentation_config()
    np.testing.assert_array_equal(WaveformAugmenter(off, sr)(x, np.random.default_rng(1)), x)
