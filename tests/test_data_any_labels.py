"""Your own music: folders with any label names and files at any depth, manifests (CSV / JSON Lines, with and
without a split column), the list protocols' refusal of non-GTZAN data, and a run on three made-up labels end to
end (class weighting, data_summary.json, config, model card, saved pipeline, song analysis and the demo)."""

import json
import logging
from pathlib import Path

import pytest
from conftest import make_gtzan_folder, tone, write_audio

from ast_dora.data import DataArguments, DataSourceError, load_source, make_splits, scan_label_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = (
    "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,hidden_dropout_prob=0.0,"
    "drop_path_rate=0.0,pooling=mean,initializer_range=0.1,num_freq_masks=0"
)
# label folder -> files below it (any depth, any names); 5 / 3 / 3 tracks: unbalanced on purpose
LIBRARY = {
    "Ambient Drones": ["a.wav", "b.flac", "live/2019/c.wav", "live/d.wav", "e.ogg"],
    "chiptune": ["x.wav", "nes/y.wav", "nes/z.wav"],
    "zydeco": ["one.wav", "two.wav", "Box Set/three.wav"],
}


def make_library(root: Path, seconds: float = 0.5, sampling_rate: int = 22050) -> Path:
    for g, (label, files) in enumerate(LIBRARY.items()):
        for i, name in enumerate(files):
            write_audio(
                root / label / name,
                tone(seconds, sampling_rate, freq=110.0 * 2**g, seed=10 * g + i),
                sampling_rate,
            )
    return root


def expected_ids() -> dict[str, str]:
    return {f"{label}/{name.rsplit('.', 1)[0]}": label for label, files in LIBRARY.items() for name in files}


def test_folder_with_any_labels_keeps_every_file_at_any_depth(tmp_path, caplog):
    root = make_library(tmp_path / "library")
    (root / "chiptune" / "nes" / "cover.jpg").write_bytes(b"not audio")
    write_audio(root / "zydeco" / ".hidden" / "skip.wav", tone(0.3, 8000), 8000)
    with caplog.at_level(logging.INFO, logger="ast_dora"):
        entries, labels = scan_label_folder(root)
    assert labels == ["Ambient Drones", "chiptune", "zydeco"]  # sorted by name
    assert {tid: labels[label] for _, label, tid in entries} == expected_ids()
    assert [tid for _, _, tid in entries] == sorted(expected_ids())
    # Nothing left out silently: the hidden audio file is warned about, the other file is counted.
    assert "zydeco/.hidden/skip.wav" in caplog.text and "Skipped 1 audio file" in caplog.text
    assert "Ignored 1 file(s) that are not audio (.jpg 1)" in caplog.text


def test_gtzan_layout_keeps_gtzan_ids_and_labels(tmp_path):
    root = make_gtzan_folder(tmp_path / "gtzan", tracks_per_genre=1, seconds=0.3, genres=("blues", "rock"))
    write_audio(root / "rock" / "live" / "rock.00042.wav", tone(0.3, 8000), 8000)  # nested, GTZAN-named
    write_audio(root / "rock" / "live" / "bootleg.wav", tone(0.3, 8000), 8000)  # nested, any name
    source = load_source(DataArguments(data_dir=str(root)))
    assert (
        source.labels[:3] == ["blues", "classical", "country"] and len(source.labels) == 10
    )  # GTZAN's ten ids
    assert source.tracks["track_id"] == ["blues.00000", "rock.00000", "rock.00042", "rock/live/bootleg"]
    assert source.tracks["labels"] == [0, 9, 9, 9]


def write_manifest(tmp_path: Path, kind: str, with_split: bool) -> Path:
    audio = make_library(tmp_path / "audio")
    rows = []
    for n, (tid, label) in enumerate(sorted(expected_ids().items())):
        file = next(p for p in audio.glob(f"{tid}.*"))
        row = {"path": str(file.relative_to(tmp_path)), "label": label}
        if with_split:
            row["split"] = ("train", "valid", "test")[n % 3]  # 'valid' is an alias of validation
        rows.append(row)
    path = tmp_path / f"manifest.{kind}"
    if kind == "csv":
        columns = list(rows[0])
        path.write_text(
            ",".join(columns) + "\n" + "".join(",".join(f'"{r[c]}"' for c in columns) + "\n" for r in rows)
        )
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_without_split_column(tmp_path, kind):
    manifest = write_manifest(tmp_path, kind, with_split=False)
    source = load_source(DataArguments(data_dir=str(manifest)))
    assert source.labels == ["Ambient Drones", "chiptune", "zydeco"]
    # ids: the path relative to the manifest's folder, without extension
    assert dict(
        zip(source.tracks["track_id"], (source.labels[i] for i in source.tracks["labels"]), strict=True)
    ) == {f"audio/{tid}": label for tid, label in expected_ids().items()}
    assert set(source.tracks["source_split"]) == {"train"}
    with pytest.raises(
        DataSourceError, match="has none: add a column `split`.*--split stratified or --split folds"
    ):
        load_source(DataArguments(data_dir=str(manifest), split="predefined"))


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_with_split_column_gives_the_predefined_split(tmp_path, kind):
    manifest = write_manifest(tmp_path, kind, with_split=True)
    args = DataArguments(data_dir=str(manifest), split="predefined")
    source = load_source(args)
    table = source.tracks
    splits = make_splits(
        args, table["track_id"], table["labels"], table["source_split"], source.ids_from_names, source.labels
    )
    ids = sorted(f"audio/{tid}" for tid in expected_ids())
    assert splits == {"train": ids[0::3], "validation": ids[1::3], "test": ids[2::3]}


def test_bad_manifests_say_what_is_wrong(tmp_path):
    make_library(tmp_path / "audio")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,genre\naudio/zydeco/one.wav,zydeco\n")
    with pytest.raises(DataSourceError, match=r"no path / label column .*`path,label`"):
        load_source(DataArguments(data_dir=str(bad)))
    bad.write_text("path,label\naudio/zydeco/one.wav,zydeco\naudio/zydeco/missing.wav,zydeco\n")
    with pytest.raises(
        DataSourceError, match=r"1 of the 2 files listed .* do not exist .*line 3: audio/zydeco/missing.wav"
    ):
        load_source(DataArguments(data_dir=str(bad)))
    bad.write_text("path,label,split\naudio/zydeco/one.wav,zydeco,holdout\n")
    with pytest.raises(
        DataSourceError, match="line 2: split 'holdout' is not one of train / validation / test"
    ):
        load_source(DataArguments(data_dir=str(bad)))
    bad.write_text("path,label\naudio/zydeco/one.wav,\n")
    with pytest.raises(DataSourceError, match="line 2: no label"):
        load_source(DataArguments(data_dir=str(bad)))


@pytest.mark.parametrize("protocol", ["fault_filtered", "kereliuk_stratified"])
def test_list_protocols_refuse_data_that_is_not_gtzan(tmp_path, protocol):
    root = make_library(tmp_path / "library", seconds=0.2)
    args = DataArguments(data_dir=str(root), split=protocol)
    source = load_source(args)
    table = source.tracks
    with pytest.raises(
        DataSourceError, match=r"not GTZAN's genres: use --split stratified .* or --split folds"
    ):
        make_splits(
            args,
            table["track_id"],
            table["labels"],
            table["source_split"],
            source.ids_from_names,
            source.labels,
        )


def test_three_made_up_labels_train_end_to_end_with_class_weighting(tmp_path):
    from ast_dora.cli import main
    from ast_dora.model_card import RunRecords, build_model_card

    root = make_library(tmp_path / "library", seconds=5.0)
    output_dir = tmp_path / "run"
    main(
        [
            "--config",
            str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
            "--config_overrides",
            TINY_MODEL,
            "--data_dir",
            str(root),
            "--split",
            "stratified",
            "--class_weighting",
            "balanced",
            "--output_dir",
            str(output_dir),
            "--features_cache_dir",
            str(tmp_path / "features"),
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--preprocessing_num_workers",
            "1",
            "--disable_tqdm",
            "true",
            "--report_to",
            "none",
        ]
    )
    labels = ["Ambient Drones", "chiptune", "zydeco"]
    summary = json.loads((output_dir / "data_summary.json").read_text())
    train_tracks = summary["class_counts"]["tracks"]["train"]
    assert train_tracks == {
        "Ambient Drones": 3,
        "chiptune": 1,
        "zydeco": 1,
    }  # 5 / 3 / 3 tracks, 8:1:1 per label
    train_windows = summary["class_counts"]["windows"]["train"]
    total = sum(train_windows.values())
    expected_weights = [total / (3 * train_windows[name]) for name in labels]
    assert list(summary["class_weights"].values()) == pytest.approx(expected_weights, abs=1e-12)
    config = json.loads((output_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == labels
    assert config["class_weights"] == pytest.approx(expected_weights, abs=1e-6)
    splits = json.loads((output_dir / "splits.json").read_text())
    assert sorted(t for ids in splits.values() for t in ids) == sorted(expected_ids())

    card = str(build_model_card(RunRecords.read(output_dir), repo_id="me/my-library"))
    assert "**Labels (3):** Ambient Drones, chiptune, zydeco" in card
    assert "marsyas/gtzan" not in card and "GTZAN's ten genres" not in card
    assert "Class weighting" in card

    # The saved pipeline, song analysis and the demo all speak the run's labels.
    from transformers import pipeline

    song = root / "chiptune" / "nes" / "y.wav"
    classify = pipeline("audio-classification", model=str(output_dir), trust_remote_code=True)
    assert {row["label"] for row in classify(str(song), top_k=None)} == set(labels)
    from ast_dora.inference import GenreClassifier

    classifier = GenreClassifier.from_pretrained(str(output_dir))
    analysis = classifier.analyse(str(song))
    assert set(analysis.label_probabilities()) == set(labels) and analysis.genre in labels
    import app

    *_, (label_probabilities, _plot, result, summary_line) = app.make_analyse({str(output_dir): classifier})(
        str(song)
    )
    assert set(label_probabilities) == set(labels) and result["genre"] in labels
    assert f"**{result['genre']}**" in summary_line
