"""Sources: GTZAN-layout folders (plain, genres/, Kaggle), parquet datasets with the Hub schema, bad layouts."""

import shutil

import datasets
import pytest
from conftest import GENRES, audio_dataset, make_gtzan_folder, tone, wav_bytes, write_audio

from ast_dora.data import GTZAN_GENRES, DataArguments, DataSourceError, load_source, scan_label_folder
from ast_dora.data.sources import load_dataset_source


def test_gtzan_genres_alphabetical():
    assert list(GTZAN_GENRES) == sorted(GTZAN_GENRES) == list(GENRES)


@pytest.mark.parametrize("sub", ["", "genres", "Data/genres_original"])
def test_folder_layouts(tmp_path, sub):
    make_gtzan_folder(tmp_path / sub if sub else tmp_path, tracks_per_genre=1, seconds=0.5)
    if sub == "Data/genres_original":
        (tmp_path / "Data" / "images_original" / "blues").mkdir(parents=True)  # Kaggle's spectrogram images
    source = load_source(DataArguments(data_dir=str(tmp_path)))
    assert source.labels == list(GTZAN_GENRES)
    assert source.tracks["track_id"] == [f"{g}.00000" for g in GENRES]
    assert source.tracks["labels"] == list(range(10))
    assert source.ids_from_names


def test_folder_mixed_extensions_and_fingerprint(tmp_path):
    make_gtzan_folder(tmp_path, tracks_per_genre=1, seconds=0.5, genres=("blues", "jazz"))
    write_audio(tmp_path / "jazz" / "jazz.00001.au", tone(0.5, 22050), 22050)
    (tmp_path / "jazz" / "notes.txt").write_text("not audio")
    first = load_source(DataArguments(data_dir=str(tmp_path)))
    assert first.tracks["track_id"] == ["blues.00000", "jazz.00000", "jazz.00001"]
    assert load_source(DataArguments(data_dir=str(tmp_path))).fingerprint == first.fingerprint
    write_audio(tmp_path / "blues" / "blues.00000.wav", tone(0.6, 22050), 22050)  # content changed
    assert load_source(DataArguments(data_dir=str(tmp_path))).fingerprint != first.fingerprint


def test_folder_with_a_non_gtzan_label_gets_sorted_label_names(tmp_path):
    make_gtzan_folder(tmp_path, tracks_per_genre=1, seconds=0.5, genres=("blues", "rock"))
    make_gtzan_folder(tmp_path, tracks_per_genre=1, seconds=0.5, genres=("polka",))
    entries, labels = scan_label_folder(tmp_path)
    assert labels == ["blues", "polka", "rock"]  # not GTZAN's ten once one label is not a GTZAN genre
    assert [(tid, labels[label]) for _, label, tid in entries] == [
        ("blues.00000", "blues"),
        ("polka/polka.00000", "polka"),
        ("rock.00000", "rock"),
    ]


def test_no_audio_fails_clearly(tmp_path):
    (tmp_path / "blues").mkdir()
    (tmp_path / "blues" / "readme.txt").write_text("empty")
    with pytest.raises(
        DataSourceError, match=r"No audio files .* found \['blues/'\]\. Expected <root>/<label>/"
    ):
        scan_label_folder(tmp_path)
    with pytest.raises(DataSourceError, match=r"lie directly in .* \(e.g. a.wav\), without a label folder"):
        empty = tmp_path / "flat"
        write_audio(empty / "a.wav", tone(0.2, 8000), 8000)
        scan_label_folder(empty)
    with pytest.raises(DataSourceError, match="does not exist"):
        scan_label_folder(tmp_path / "missing")


def test_loose_files_and_duplicates(tmp_path):
    make_gtzan_folder(tmp_path, tracks_per_genre=1, seconds=0.3, genres=("blues",))
    write_audio(tmp_path / "stray.wav", tone(0.2, 8000), 8000)
    with pytest.raises(DataSourceError, match="lie directly in"):
        scan_label_folder(tmp_path)
    (tmp_path / "stray.wav").unlink()
    write_audio(tmp_path / "rock" / "blues.00000.wav", tone(0.2, 8000), 8000)
    with pytest.raises(DataSourceError, match="appears under two labels"):
        scan_label_folder(tmp_path)
    shutil.rmtree(tmp_path / "rock")
    write_audio(tmp_path / "blues" / "blues.00000.au", tone(0.2, 8000), 8000)  # same track twice: wav wins
    entries, _ = scan_label_folder(tmp_path)
    assert [(p.name, tid) for p, _, tid in entries] == [("blues.00000.wav", "blues.00000")]


def test_parquet_dataset_with_hub_schema(parquet_gtzan_dataset):
    source = load_source(DataArguments(dataset_name=str(parquet_gtzan_dataset)))
    assert source.labels == list(GTZAN_GENRES)
    assert len(source.tracks) == 40
    ids = source.tracks["track_id"]
    assert "blues.00000" in ids and "rock.00003" in ids and source.ids_from_names
    assert sorted(set(source.tracks["source_split"])) == ["test", "train", "validation"]
    row = source.tracks[0]
    assert row["audio"]["bytes"][:4] == b"RIFF"  # undecoded: bytes + path
    assert GTZAN_GENRES[row["labels"]] == row["track_id"].split(".")[0]
    # the string `genre` column and the ClassLabel `label` column give the same ids
    by_label = load_source(DataArguments(dataset_name=str(parquet_gtzan_dataset), label_column_name="label"))
    assert by_label.tracks["labels"] == source.tracks["labels"]


def test_parquet_without_file_names_gets_genre_index_ids(tmp_path):
    rows = {"audio": [], "genre": []}
    for genre in ("rock", "blues", "rock"):
        rows["audio"].append({"bytes": wav_bytes(tone(0.3, 8000), 8000), "path": None})
        rows["genre"].append(genre)
    audio_dataset(rows, {"genre": datasets.Value("string")}).to_parquet(str(tmp_path / "train.parquet"))
    source = load_source(DataArguments(dataset_name=str(tmp_path / "train.parquet")))
    assert source.tracks["track_id"] == ["rock.00000", "blues.00000", "rock.00001"]
    assert not source.ids_from_names


def test_file_column_names_tracks(tmp_path):
    rows = {
        "file": ["/cache/genres/jazz/jazz.00042.wav"],
        "audio": [{"bytes": wav_bytes(tone(0.3, 8000), 8000), "path": None}],
        "genre": ["jazz"],
    }
    features = {"file": datasets.Value("string"), "genre": datasets.Value("string")}
    audio_dataset(rows, features).to_parquet(str(tmp_path / "d.parquet"))
    assert load_source(DataArguments(dataset_name=str(tmp_path / "d.parquet"))).tracks["track_id"] == [
        "jazz.00042"
    ]


def test_bad_columns_and_script_dataset(parquet_gtzan_dataset):
    with pytest.raises(DataSourceError, match="audio_column_name='sound'.*columns"):
        load_source(DataArguments(dataset_name=str(parquet_gtzan_dataset), audio_column_name="sound"))
    with pytest.raises(DataSourceError, match="label_column_name='style'"):
        load_source(DataArguments(dataset_name=str(parquet_gtzan_dataset), label_column_name="style"))
    args = DataArguments(dataset_name=str(parquet_gtzan_dataset))
    args.dataset_name = (
        "marsyas/gtzan"  # bypassing __post_init__: the loader refuses it too, before any download
    )
    with pytest.raises(DataSourceError, match="confit/gtzan-parquet"):
        load_dataset_source(args)


def test_audiofolder_without_torchcodec_names_what_to_install(tmp_path, monkeypatch):
    """datasets' audiofolder loader encodes audio through torchcodec, which the project no longer installs: one
    line naming it and the way around it (the same folder as data_dir), not datasets' generation traceback."""
    import sys

    from ast_dora.errors import MissingComponentError

    folder = make_gtzan_folder(
        tmp_path / "audiofolder", tracks_per_genre=1, seconds=0.5, genres=("rock", "jazz")
    )
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    monkeypatch.setattr(
        datasets.config, "TORCHCODEC_AVAILABLE", False
    )  # as datasets finds it where it is absent
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingComponentError, match=r"torchcodec.*data_dir="):
        load_source(DataArguments(dataset_name=str(folder)))
    assert len(load_source(DataArguments(data_dir=str(folder))).tracks) == 2
