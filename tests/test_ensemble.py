"""Both models in one answer: `GenreClassifier.ensemble`, `predict --ensemble` and the app's "both" choice give the
weighted mean of the models' song probabilities (within 1e-6), with any backend mix; the timeline on a common
time grid."""

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from song_fixtures import export_tiny_onnx, generated_wav, running_app, save_tiny_model

from ast_dora import predict
from ast_dora.ensemble import EnsembleClassifier
from ast_dora.inference import GenreClassifier

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_models")
    return [export_tiny_onnx(save_tiny_model(kind, root / kind)) for kind in ("vit_hybrid", "ast_dora")]


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return generated_wav(tmp_path_factory.mktemp("ensemble_song") / "song.wav", 25.0, genre="disco")


@pytest.mark.parametrize("backends", [("torch", "torch"), ("onnx", "torch")], ids=["torch", "onnx+torch"])
def test_ensemble_is_the_weighted_mean_of_the_models(models, song, backends):
    classifiers = [
        GenreClassifier.from_pretrained(m, backend=b) for m, b in zip(models, backends, strict=True)
    ]
    alone = [c.analyse(song) for c in classifiers]
    both = GenreClassifier.ensemble(classifiers, weights=[1, 3])
    assert isinstance(both, EnsembleClassifier)
    partials = list(both.analyse_iter(song))
    result = partials[-1]
    expected = 0.25 * alone[0].probabilities + 0.75 * alone[1].probabilities
    np.testing.assert_allclose(result.probabilities, expected, atol=TOLERANCE)
    assert result.genre == both.labels[int(np.argmax(expected))] and result.complete
    assert [p.complete for p in partials] == [False] * (len(partials) - 1) + [True]
    # each model's windows are its own; the answer counts them all
    members = result.ensemble["members"]
    for member, own in zip(members, alone, strict=True):
        np.testing.assert_array_equal(member.window_starts, own.window_starts)
    assert result.windows_done == result.windows_total == sum(len(a.window_starts) for a in alone)
    # the timeline: 4-s cells (the shortest hop) covering the song, each the weighted mean of the covering windows
    np.testing.assert_allclose(result.window_starts, np.arange(0, 25.0, 4.0))
    assert result.window_ends[-1] == pytest.approx(25.0, abs=0.05)
    cell = 2  # 8-12 s: ViT window 2 (8-12 s), AST window 0 (0-10.24 s)
    np.testing.assert_allclose(
        result.window_probabilities[cell],
        0.25 * alone[0].window_probabilities[2] + 0.75 * alone[1].window_probabilities[0],
        atol=TOLERANCE,
    )
    data = result.to_dict()
    assert data["models"] == [str(m) for m in models] and data["weights"] == [0.25, 0.75]
    assert [row["model"] for row in data["per_model"]] == data["models"]
    assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=TOLERANCE)
    # equal weights by default
    equal = GenreClassifier.ensemble(classifiers).analyse(song)
    np.testing.assert_allclose(
        equal.probabilities, (alone[0].probabilities + alone[1].probabilities) / 2, atol=TOLERANCE
    )


def test_ensemble_refuses_what_it_cannot_combine(models):
    vit = GenreClassifier.from_pretrained(models[0])
    with pytest.raises(ValueError, match="at least two models"):
        GenreClassifier.ensemble([vit])
    with pytest.raises(ValueError, match="one weight per model"):
        GenreClassifier.ensemble([vit, vit], weights=[1.0])
    with pytest.raises(ValueError, match="not all zero"):
        GenreClassifier.ensemble([vit, vit], weights=[0, 0])
    other = GenreClassifier.from_pretrained(models[1])
    other.labels = [*other.labels[:-1], "polka"]
    with pytest.raises(ValueError, match="same genres"):
        GenreClassifier.ensemble([vit, other])


def test_predict_ensemble_prints_one_object_per_song(models, song, capsys):
    args = [
        str(song),
        "--model",
        str(models[0]),
        "--model",
        str(models[1]),
        "--ensemble",
        "--json",
        "--quiet",
    ]
    assert predict.main([*args, "--weights", "2", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    alone = [GenreClassifier.from_pretrained(m).analyse(song).label_probabilities() for m in models]
    assert row["models"] == [str(m) for m in models]
    for genre, p in row["probabilities"].items():
        assert p == pytest.approx((2 * alone[0][genre] + alone[1][genre]) / 3, abs=TOLERANCE)
    assert row["windows_analysed"] == row["windows_total"] == 7 + 3
    with pytest.raises(SystemExit):  # two models without --ensemble
        predict.main([str(song), "--model", str(models[0]), "--model", str(models[1])])
    with pytest.raises(SystemExit):  # a weight per model
        predict.main([*args, "--weights", "1"])


def test_app_both_choice_is_the_mean_of_the_two(models, song, tmp_path):
    with running_app(models, tmp_path, backend="onnx", min_music_probability=0.0) as url:
        client = Client(url, verbose=False)
        label, plot, details, summary = client.predict(handle_file(str(song)), "both", api_name="/predict")
        alone = [
            client.predict(handle_file(str(song)), str(m), api_name="/predict")[2]["probabilities"]
            for m in models
        ]
    assert details["model"] == "both" and details["models"] == [str(m) for m in models]
    for genre, p in details["probabilities"].items():
        assert p == pytest.approx((alone[0][genre] + alone[1][genre]) / 2, abs=TOLERANCE)
    assert label["label"] == details["genre"] and " + " in summary
    assert len(details["backend"]) == 2 and all(b.startswith("onnxruntime") for b in details["backend"])
