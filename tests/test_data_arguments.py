"""DataArguments: parsing with HfArgumentParser and validation messages."""

import pytest
from transformers import HfArgumentParser

from ast_dora.data import DataArguments
from ast_dora.data.arguments import DEFAULT_SYNTHETIC_DIR


def test_parsed_by_hf_argument_parser():
    parser = HfArgumentParser(DataArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--data_dir",
            "x",
            "--split",
            "folds",
            "--fold",
            "3",
            "--augment_gain_prob",
            "0.5",
            "--augment_gain_db_range",
            "-3",
            "3",
            "--window_seconds",
            "10.24",
            "--cache_features",
            "false",
        ]
    )
    assert args.split == "folds" and args.fold == 3
    assert args.augment_gain_db_range == [-3.0, 3.0]
    assert args.window_seconds == 10.24 and args.hop_seconds is None
    assert args.cache_features is False
    assert args.augmentation_enabled


def test_synthetic_defaults_to_its_folder():
    args = DataArguments(synthetic=True)
    assert args.data_dir == DEFAULT_SYNTHETIC_DIR
    assert DataArguments(synthetic=True, data_dir="elsewhere").data_dir == "elsewhere"
    assert not args.augmentation_enabled


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({}, ["Exactly one data source"]),
        ({"dataset_name": "a/b", "data_dir": "x"}, ["Exactly one data source", "dataset_name", "data_dir"]),
        ({"dataset_name": "a/b", "synthetic": True}, ["synthetic", "dataset_name"]),
        ({"dataset_name": "marsyas/gtzan"}, ["marsyas/gtzan", "loading-script", "confit/gtzan-parquet"]),
        ({"data_dir": "x", "split": "random"}, ["split", "'random'", "stratified", "fault_filtered"]),
        ({"data_dir": "x", "split": "predefined"}, ["predefined", "dataset_name"]),
        ({"data_dir": "x", "num_folds": 2}, ["num_folds", "2", ">= 3"]),
        ({"data_dir": "x", "fold": 10}, ["fold", "10", "[0, 9]"]),
        ({"data_dir": "x", "window_seconds": 0}, ["window_seconds", "0", "> 0"]),
        ({"data_dir": "x", "hop_seconds": -1.0}, ["hop_seconds", "-1.0"]),
        ({"data_dir": "x", "max_tracks_per_genre": 0}, ["max_tracks_per_genre", "0"]),
        ({"data_dir": "x", "preprocessing_num_workers": 0}, ["preprocessing_num_workers"]),
        ({"data_dir": "x", "synthetic_tracks_per_genre": 0}, ["synthetic_tracks_per_genre"]),
        ({"data_dir": "x", "augment_noise_prob": 1.5}, ["augment_noise_prob", "1.5", "0 <= p <= 1"]),
        (
            {"data_dir": "x", "augment_speed_range": [1.2, 0.8]},
            ["augment_speed_range", "[1.2, 0.8]", "MIN <= MAX"],
        ),
        ({"data_dir": "x", "augment_speed_range": [0.1, 1.0]}, ["augment_speed_range", "[0.5, 2.0]"]),
        ({"data_dir": "x", "augment_gain_db_range": [1.0]}, ["augment_gain_db_range", "two numbers"]),
    ],
)
def test_invalid_values_name_field_value_and_allowed(kwargs, words):
    with pytest.raises(ValueError) as error:
        DataArguments(**kwargs)
    for word in words:
        assert word in str(error.value), (word, str(error.value))
