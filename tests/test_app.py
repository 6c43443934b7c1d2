"""The Gradio demo served on 127.0.0.1 inside the test process and queried through `gradio_client`, as an API
client would: `/predict` with a wav and an mp3, the model choice, and the messages for bad input; with both
backends (torch, and onnx on the models' int8 ONNX exports); results that stream in batch by batch."""

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from song_fixtures import (
    export_tiny_onnx,
    generated_wav,
    load_app_module,
    mp3_song,
    running_app,
    save_tiny_model,
    short_song,
    silent_song,
    text_named_wav,
    wav_song,
)

NUM_GENRES = 10
MAX_SECONDS = 200.0  # the real 139-s mp3 fits; a 201-s song does not


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_models")
    return [export_tiny_onnx(save_tiny_model(kind, root / kind)) for kind in ("vit_hybrid", "ast_dora")]


@pytest.fixture(scope="module", params=["torch", "onnx"])
def served(request, tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"app_{request.param}")
    # Random tiny models: AudioSet's music probability is noise, so every upload counts as music here (the music
    # check itself: tests/test_music_detection.py).
    with running_app(
        tiny_models,
        root,
        max_seconds=MAX_SECONDS,
        max_file_size="5mb",
        backend=request.param,
        min_music_probability=0.0,
    ) as url:
        yield url, [str(m) for m in tiny_models], request.param


@pytest.fixture(scope="module")
def client(served):
    return Client(served[0], verbose=False)


def check_result(result, model_spec):
    label, plot, details, summary = result
    probabilities = details["probabilities"]
    assert len(probabilities) == NUM_GENRES
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert label["label"] == details["genre"] == max(probabilities, key=probabilities.get)
    assert len(label["confidences"]) == 5  # gr.Label shows the top 5
    assert details["model"] == model_spec and details["vote"] in probabilities
    assert details["is_music"] is True and 0 <= details["music_probability"] <= 1
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert details["genre"] in summary


def test_api_endpoint_is_predict_with_optional_model(client, served):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/predict"}
    parameters = api["/predict"]["parameters"]
    assert [p["component"] for p in parameters] == ["Audio", "Dropdown"]
    # two models served: "both" (one answer from the two) is the default
    assert parameters[1]["parameter_has_default"] and parameters[1]["parameter_default"] == "both"


def test_wav_and_mp3_give_ten_probabilities(client, served, tmp_path):
    vit_spec, ast_spec = served[1]
    # the audio file alone: both models answer together
    check_result(client.predict(handle_file(str(wav_song(tmp_path))), api_name="/predict"), "both")
    check_result(
        client.predict(handle_file(str(wav_song(tmp_path))), vit_spec, api_name="/predict"), vit_spec
    )
    check_result(
        client.predict(handle_file(str(mp3_song(tmp_path))), ast_spec, api_name="/predict"), ast_spec
    )


def test_not_audio_gives_a_message_and_the_next_request_works(client, served, tmp_path):
    with pytest.raises(AppError, match="Could not read notes.wav as audio"):
        client.predict(handle_file(str(text_named_wav(tmp_path))), api_name="/predict")
    song = generated_wav(tmp_path / "after.wav", 5.0)
    check_result(client.predict(handle_file(str(song)), api_name="/predict"), "both")


def test_short_silent_and_long_clips_get_their_messages(client, served, tmp_path):
    with pytest.raises(AppError, match=r"0\.50 s long; at least 1 s is needed"):
        client.predict(handle_file(str(short_song(tmp_path))), api_name="/predict")
    with pytest.raises(AppError, match="silent"):
        client.predict(handle_file(str(silent_song(tmp_path))), api_name="/predict")
    long_song = generated_wav(tmp_path / "long.wav", MAX_SECONDS + 1, sampling_rate=8000, channels=1)
    with pytest.raises(AppError, match="accepts up to 3:20"):
        client.predict(handle_file(str(long_song)), served[1][1], api_name="/predict")


def test_uploads_over_the_size_limit_are_refused(served, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 6_000_000)
    with open(big, "rb") as f:
        response = httpx.post(served[0] + "gradio_api/upload", files={"files": ("big.wav", f, "audio/wav")})
    assert response.status_code == 413, response.text


def test_the_chosen_backend_serves(client, served, tmp_path):
    details = client.predict(
        handle_file(str(generated_wav(tmp_path / "song.wav", 5.0))), served[1][0], api_name="/predict"
    )[2]
    backend = served[2]
    # onnx: the int8 file of the tiny model's export; torch: the transformers model
    assert details["backend"].startswith("onnxruntime int8" if backend == "onnx" else "torch on cpu")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_results_stream_in_batch_by_batch(tiny_models, tmp_path, backend):
    """Two windows a batch: the client receives the genre of the first windows, then of the whole song, which is
    the song's full analysis."""
    song = generated_wav(tmp_path / "song.wav", 20.0)  # 5 windows of 4 s for the ViT-hybrid
    with running_app(tiny_models[:1], tmp_path, backend=backend, batch_size=2) as url:
        job = Client(url, verbose=False).submit(handle_file(str(song)), api_name="/predict")
        final = job.result()
        outputs = job.outputs()
    assert len(outputs) >= 2, "expected a partial result before the final one"
    first_details, first_summary = outputs[0][2], outputs[0][3]
    assert (first_details["windows_done"], first_details["windows_total"]) == (2, 5)
    # coarse to fine: the first two windows are the middle one (2) and the middle of the first half (1)
    assert [segment["start"] for segment in first_details["segments"]] == [4.0, 8.0]
    assert len(first_details["segments"]) == 2 and "2/5 windows" in first_summary
    assert "majority vote" not in first_summary
    done = [output[2]["windows_done"] for output in outputs]
    assert done == sorted(done) and done[-1] == 5
    assert "majority vote of 5 windows" in final[3]
    app = load_app_module()
    expected = app.GenreClassifier.from_pretrained(tiny_models[0], backend=backend, batch_size=2).analyse(
        song
    )
    probabilities = final[2]["probabilities"]
    assert probabilities == pytest.approx(expected.label_probabilities(), abs=1e-6)
    first = expected.window_probabilities[[1, 2]].mean(axis=0)
    assert list(first_details["probabilities"].values()) == pytest.approx(list(first), abs=1e-6)


def test_models_come_from_flags_or_the_environment():
    app = load_app_module()
    assert app.model_specs(["a", "b", "a"], environ={"GENRE_MODELS": "x"}) == ["a", "b"]
    assert app.model_specs(None, environ={"GENRE_MODELS": " user/vit , runs/ast ,"}) == [
        "user/vit",
        "runs/ast",
    ]
    with pytest.raises(SystemExit, match="GENRE_MODELS"):
        app.model_specs(None, environ={})


def test_backend_comes_from_the_flag_or_the_environment(monkeypatch, capsys):
    app = load_app_module()
    assert app.parse_args([]).backend == app.DEFAULT_BACKEND
    monkeypatch.setenv("GENRE_BACKEND", "onnx")
    assert app.parse_args([]).backend == "onnx"
    assert app.parse_args(["--backend", "torch"]).backend == "torch"
    monkeypatch.setenv("GENRE_BACKEND", "tensorrt")
    with pytest.raises(SystemExit):
        app.parse_args([])
    assert "GENRE_BACKEND='tensorrt' is not one of auto, torch, onnx" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# ZeroGPU
# ----------------------------------------------------------------------------------------------------------


def fake_spaces_module(calls: list):
    """A stand-in for Hugging Face's `spaces` package: `spaces.GPU(duration=...)` wraps a (generator) function and
    records each call, as the real one attaches a GPU for it."""
    import functools
    import types

    def GPU(function=None, duration=None):  # noqa: N802 (the real package's name)
        def decorate(inner):
            @functools.wraps(inner)
            def wrapper(*args, **kwargs):
                calls.append({"function": inner.__name__, "duration": duration})
                yield from inner(*args, **kwargs)

            wrapper.zero_gpu = True
            return wrapper

        return decorate(function) if function is not None else decorate

    return types.SimpleNamespace(GPU=GPU, __name__="spaces")


def predict_function(demo):
    [function] = [f for f in demo.fns.values() if f.api_name == "predict"]
    return function.fn


def test_on_zerogpu_the_analysis_runs_inside_spaces_gpu(tiny_models, tmp_path, monkeypatch):
    import inspect
    import sys

    app = load_app_module()
    calls = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces_module(calls))
    classifiers = app.load_classifiers([str(tiny_models[0])], max_seconds=None, backend="torch", environ={})
    demo = app.build_demo(classifiers, environ={"SPACES_ZERO_GPU": "true"})
    handler = predict_function(demo)
    assert getattr(handler, "zero_gpu", False), (
        "the demo's /predict handler is not the spaces.GPU-wrapped analysis"
    )
    assert (
        "progress" in inspect.signature(handler).parameters
    )  # Gradio still sees (and injects) the progress bar
    results = list(handler(str(wav_song(tmp_path)), None, progress=lambda *args, **kwargs: None))
    assert calls == [{"function": "analyse", "duration": app.ZERO_GPU_DURATION}]
    assert results and results[-1][2]["genre"] in results[-1][2]["probabilities"]


def test_zerogpu_places_torch_models_on_cuda(monkeypatch):
    app = load_app_module()
    zero = {"SPACES_ZERO_GPU": "true"}
    assert app.zero_gpu_options("auto", None, zero) == {"backend": "torch", "device": "cuda", "bf16": True}
    assert app.zero_gpu_options("torch", False, zero) == {"backend": "torch", "device": "cuda", "bf16": False}
    assert app.zero_gpu_options("onnx", None, zero) == {"backend": "onnx", "bf16": None}  # asked for: CPU
    for environ in ({}, {"SPACES_ZERO_GPU": ""}, {"SPACES_ZERO_GPU": "false"}):
        assert app.zero_gpu_options("auto", None, environ) == {"backend": "auto", "bf16": None}
    loaded = []
    monkeypatch.setattr(
        app.GenreClassifier,
        "from_pretrained",
        lambda spec, **kwargs: loaded.append((spec, kwargs)) or "classifier",
    )
    app.load_classifiers(["me/model"], max_seconds=600, batch_size=4, environ=zero)
    assert loaded == [
        (
            "me/model",
            {"backend": "torch", "bf16": True, "device": "cuda", "max_seconds": 600, "batch_size": 4},
        )
    ]


def test_without_zerogpu_no_spaces_import(tiny_models, monkeypatch):
    import sys

    app = load_app_module()
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` would fail
    classifiers = app.load_classifiers([str(tiny_models[0])], max_seconds=None, backend="torch", environ={})
    handler = predict_function(app.build_demo(classifiers, environ={}))
    assert not hasattr(handler, "zero_gpu") and handler.__name__ == "analyse"
