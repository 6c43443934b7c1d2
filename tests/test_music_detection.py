"""The music check: AudioSet's own head on the encoder as pretrained, carried by AST-DoRA models.

- the model side: `audioset_logits` of an AST-DoRA model (unmerged, merged and saved, loaded from its adapter
  folder) equal the base checkpoint's own `ASTForAudioClassification` logits, i.e. the model with adapters off;
- the whole mechanism offline, on the pretrained stand-in (an AudioSet-like head with "Music", "Speech", "Noise"):
  generated speech-like voices and noise are "not music" with their top class named, synthetic music is music,
  through `GenreClassifier` (torch and ONNX Runtime), `predict --json` and its table, and the app's `/predict` (also
  when the visitor picks the ViT-hybrid, which has no AudioSet head);
- a ViT-hybrid alone reports `music_probability: null`.
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from gradio_client import Client, handle_file
from peft import PeftModel
from song_fixtures import export_tiny_onnx, running_app, save_tiny_model
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from ast_dora import predict
from ast_dora.config import ModelArguments
from ast_dora.data.sounds import coloured_noise, speech_like
from ast_dora.data.synthetic import synthesize_track
from ast_dora.export import export_openvino
from ast_dora.inference import GenreClassifier
from ast_dora.models.ast_mlp.dora import build_ast_dora
from ast_dora.models.factory import load_trained_model, save_trained_model
from ast_dora.models.tiny_ast import STAND_IN_AUDIOSET_LABELS, TINY_AST_CONFIG, make_tiny_ast
from ast_dora.music_detection import MusicCheck, music_index

LABELS = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
# The AudioSet branch runs the same float32 ops as the checkpoint's own forward: rounding only.
ATOL = 1e-5
INT8_CALIBRATION_WINDOWS = 32  # a quarter of them speech-like voices and noise (export.NON_MUSIC_SHARE)


def model_args(path, **kwargs):
    defaults = dict(
        model_type="ast_dora", model_name_or_path=str(path), min_layer=2, classifier_hidden_size=16
    )
    return ModelArguments(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def named_base(tmp_path_factory):
    """A random tiny AST classifier whose classes have AudioSet names, with "Music" not at the real index."""
    path = tmp_path_factory.mktemp("named_base")
    labels = ["Dog", *STAND_IN_AUDIOSET_LABELS]
    torch.manual_seed(0)
    model = ASTForAudioClassification(
        ASTConfig(
            **{**TINY_AST_CONFIG, "num_labels": len(labels)},
            id2label=dict(enumerate(labels)),
            initializer_range=0.1,
        )
    )
    with torch.no_grad():
        model.audio_spectrogram_transformer.embeddings.position_embeddings.normal_(0, 0.1)
    model.save_pretrained(path)
    ASTFeatureExtractor().save_pretrained(path)
    return path


def spectrograms(batch=3, seed=1):
    return torch.randn(batch, 1024, 128, generator=torch.Generator().manual_seed(seed))


def test_audioset_output_is_the_pretrained_model_with_adapters_off(named_base, tmp_path):
    base = ASTForAudioClassification.from_pretrained(named_base).eval()
    inputs = spectrograms()
    with torch.no_grad():
        expected = base(input_values=inputs).logits
    model = build_ast_dora(model_args(named_base), LABELS)
    assert model.config.audioset_labels[music_index(model.config.audioset_labels)] == "Music"
    assert music_index(model.config.audioset_labels) == 2  # found by name
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # DoRA starts as the identity: give it weights so that the comparison can fail
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.eval()
    with torch.no_grad():
        output = model(input_values=inputs, output_audioset=True)
        with model.disable_adapter():
            adapters_off = model.base_model.model.audio_spectrogram_transformer(inputs).pooler_output
    torch.testing.assert_close(output.audioset_logits, expected, atol=ATOL, rtol=0)
    # the adapters do change the top layers' output (so the branch really is the pretrained path, not the adapted)
    with torch.no_grad():
        adapted = model.base_model.model.audio_spectrogram_transformer(inputs).pooler_output
    assert (adapted - adapters_off).abs().max() > 1e-3
    torch.testing.assert_close(base.classifier(adapters_off), expected, atol=ATOL, rtol=0)
    # without output_audioset (training, evaluation), the output has no AudioSet logits
    assert model(input_values=inputs).audioset_logits is None

    # merged and saved; and the adapter folder put on the base checkpoint again
    save_trained_model(model, ASTFeatureExtractor.from_pretrained(named_base), tmp_path / "run")
    for folder in (tmp_path / "run", tmp_path / "run" / "adapter"):
        loaded, _ = load_trained_model(str(folder))
        assert not isinstance(loaded, PeftModel)
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(input_values=inputs, output_audioset=True).audioset_logits, expected, atol=ATOL, rtol=0
            )


def test_music_check_summary_by_name():
    labels = ["Speech", "Dog", "Music"]
    check = MusicCheck(labels, np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1]]))
    assert check.music_probability == pytest.approx(0.15) and not check.is_music
    assert check.top(2) == [
        {"label": "Speech", "score": pytest.approx(0.85)},
        {"label": "Dog", "score": pytest.approx(0.2)},
    ]
    assert check.describe() == "not music (music 0.15); sounds like Speech 0.85"
    assert MusicCheck(labels, np.array([[0.1, 0.0, 0.7]])).is_music
    with pytest.raises(ValueError, match="no 'Music' class"):
        music_index(["Speech", "Dog"])


def test_vit_hybrid_alone_reports_null(tmp_path, capsys):
    vit = save_tiny_model("vit_hybrid", tmp_path / "vit")
    song = tmp_path / "song.wav"
    sf.write(song, synthesize_track("rock", 5.0, 22050, np.random.default_rng(0)), 22050)
    assert predict.main([str(song), "--model", str(vit), "--json", "--no_segments", "--quiet"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["music_probability"] is None and row["is_music"] is None and row["audioset_top"] is None
    assert row["genre"] in LABELS


# ---- the whole mechanism on the pretrained stand-in ------------------------------------------------------------


@pytest.fixture(scope="session")
def stand_in(request, tmp_path_factory):
    """The pretrained stand-in (the smoke runs' recipe): the smoke run's `data/tiny_ast` when it holds this recipe
    (read only), else one kept in pytest's cache, built once (about a minute of CPU on an idle 2-core machine) and
    reused while the recipe is the same (`make_tiny_ast` rebuilds it otherwise)."""
    from song_fixtures import REPO_ROOT

    from ast_dora.models.tiny_ast import STAND_IN_FILE, _stand_in_recipe

    smoke = REPO_ROOT / "data" / "tiny_ast"
    if (smoke / STAND_IN_FILE).is_file() and json.loads((smoke / STAND_IN_FILE).read_text()) == json.loads(
        json.dumps(_stand_in_recipe(0, pretrain=True))
    ):
        return smoke
    cache = getattr(
        request.config, "cache", None
    )  # absent under `-p no:cacheprovider`: build it for this session
    folder = (
        cache.mkdir("tiny_ast_stand_in")
        if cache is not None
        else tmp_path_factory.mktemp("tiny_ast_stand_in")
    )
    return make_tiny_ast(folder, pretrain=True)


@pytest.fixture(scope="module")
def stand_in_models(stand_in, tmp_path_factory):
    """An AST-DoRA model on the stand-in (genre head untrained: the music check does not depend on it), exported
    to ONNX, and a random ViT-hybrid."""
    root = tmp_path_factory.mktemp("stand_in_models")
    torch.manual_seed(0)
    model = build_ast_dora(model_args(stand_in), LABELS)
    save_trained_model(model, ASTFeatureExtractor.from_pretrained(stand_in), root / "ast_dora")
    export_tiny_onnx(root / "ast_dora")
    # NNCF int8, calibrated as the command does by default (generated music plus speech-like voices and noise)
    export_openvino(root / "ast_dora", quantize="int8", calibration_windows=INT8_CALIBRATION_WINDOWS)
    return {"ast_dora": root / "ast_dora", "vit_hybrid": save_tiny_model("vit_hybrid", root / "vit_hybrid")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """12-s clips drawn with other seeds than the stand-in's pretraining: a voice, pink noise, two songs."""
    root = tmp_path_factory.mktemp("clips")
    sr = 16000
    audio = {
        "speech": speech_like(12.0, sr, np.random.default_rng([5, 1])),
        "noise": coloured_noise("pink", 12.0, sr, np.random.default_rng([5, 2])),
        "rock": synthesize_track("rock", 12.0, sr, np.random.default_rng([5, 3])),
        "jazz": synthesize_track("jazz", 12.0, sr, np.random.default_rng([5, 4])),
    }
    paths = {}
    for name, waveform in audio.items():
        paths[name] = root / f"{name}.wav"
        sf.write(paths[name], waveform, sr, subtype="PCM_16")
    return paths


EXPECTED = {
    "speech": (False, "Speech"),
    "noise": (False, "Noise"),
    "rock": (True, None),
    "jazz": (True, None),
}


def check_music_fields(result, name):
    is_music, top = EXPECTED[name]
    assert result["is_music"] is is_music, (name, result["music_probability"], result["audioset_top"])
    assert (result["music_probability"] >= 0.5) is is_music
    if top is not None:
        assert result["audioset_top"][0]["label"] == top
    assert result["genre"] in LABELS  # the JSON keeps the genre for API users


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.slow
def test_speech_and_noise_are_not_music_through_the_classifier(stand_in_models, clips, backend):
    classifier = GenreClassifier.from_pretrained(stand_in_models["ast_dora"], backend=backend)
    assert classifier.music_check
    for name, path in clips.items():
        analysis = classifier.analyse(path)
        check_music_fields(analysis.to_dict(), name)
        assert len(analysis.music.window_probabilities) == analysis.windows_done


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_music_check_agrees_with_torch_fp32(stand_in_models, clips, backend):
    """The int8 exports (ONNX Runtime dynamic, OpenVINO NNCF) give every clip (speech-like, noise, music) the
    music verdict PyTorch fp32 gives it: the music check survives quantisation."""
    reference = GenreClassifier.from_pretrained(stand_in_models["ast_dora"], bf16=False)
    int8 = GenreClassifier.from_pretrained(
        stand_in_models["ast_dora"], backend=backend, onnx_precision="int8"
    )
    assert int8.precision.startswith("int8/")
    for name, path in clips.items():
        expected, got = reference.analyse(path), int8.analyse(path)
        assert got.is_music is expected.is_music is EXPECTED[name][0], (
            name,
            got.music.music_probability,
            expected.music.music_probability,
        )


@pytest.mark.slow
def test_predict_json_and_table_say_not_music(stand_in_models, clips, capsys):
    songs = [str(clips[name]) for name in ("speech", "noise", "rock")]
    assert predict.main([*songs, "--model", str(stand_in_models["ast_dora"]), "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, name in zip(rows, ("speech", "noise", "rock"), strict=True):
        check_music_fields(row, name)
    assert predict.main([*songs, "--model", str(stand_in_models["ast_dora"]), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "not music" in lines[1] and "sounds like Speech" in lines[1]
    assert "not music" in lines[2] and "sounds like Noise" in lines[2]
    assert "not music" not in lines[3] and rows[2]["genre"] in lines[3]
    # a threshold above every song's music probability: nothing is music
    assert (
        predict.main(
            [
                songs[2],
                "--model",
                str(stand_in_models["ast_dora"]),
                "--json",
                "--quiet",
                "--min_music_probability",
                "1",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["is_music"] is False


@pytest.mark.slow
def test_app_checks_every_upload_whichever_model_is_picked(stand_in_models, clips, tmp_path):
    models = [stand_in_models["vit_hybrid"], stand_in_models["ast_dora"]]
    with running_app(models, tmp_path, backend="torch") as url:
        client = Client(url, verbose=False)
        for name in ("speech", "rock"):
            for model in (str(models[0]), str(models[1]), "both"):
                label, _, details, summary = client.predict(
                    handle_file(str(clips[name])), model, api_name="/predict"
                )
                check_music_fields(details, name)
                if name == "speech":
                    assert label["label"] == "not music: Speech" and "Not music" in summary
                    assert "sounds like **Speech**" in summary
                else:
                    assert label["label"] == details["genre"] and "Not music" not in summary
