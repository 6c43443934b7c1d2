"""The ONNX Runtime backend: `python -m ast_dora.export onnx` on tiny models of both kinds, the files it writes and
how close they are to PyTorch, choosing the backend (`from_pretrained(backend=...)`, `predict --backend`, `bench song
--backend`), the streaming analysis (`analyse_iter`), the int8 agreement check on a data split (which must catch an
export of other weights) and the `onnx/` folder in Hub uploads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from conftest import make_gtzan_folder
from song_fixtures import export_tiny_onnx, generated_wav, save_tiny_model

from ast_dora import bench, predict
from ast_dora import export as onnx_export
from ast_dora.backends import BackendError, OnnxRunner
from ast_dora.benchmarks.song import random_genre_model
from ast_dora.genre_classification.song_windows import visiting_order
from ast_dora.inference import GenreClassifier, SilentAudioError
from ast_dora.models.factory import save_trained_model

KINDS = ("vit_hybrid", "ast_dora", "musicnn")
NUM_GENRES = 10
# fp32 ONNX runs the same float32 arithmetic as PyTorch in another order: rounding only.
FP32_PROBABILITY_ATOL = 1e-5
# int8 weights and activations: measured on these tiny models, the largest window probability moved by < 0.01.
INT8_PROBABILITY_ATOL = 0.03
# Top-1 agreement of int8 with fp32 that the check must report on the tiny ViT-hybrid's windows. Random tiny
# models have small margins between genres (measured: 100% agreement on the 30 test windows); an export of
# other weights agreed on none of them.
TINY_MIN_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_models")
    return {kind: export_tiny_onnx(save_tiny_model(kind, root / kind)) for kind in KINDS}


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return generated_wav(tmp_path_factory.mktemp("onnx_song") / "song.wav", 22.0)


def copy_model(model_dir: Path, destination: Path) -> Path:
    shutil.copytree(model_dir, destination)
    return destination


# ---- export ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_the_hub_layout_with_a_dynamic_batch_axis(exported, kind):
    onnx_dir = exported[kind] / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["export.json", "model.onnx", "model_quantized.onnx"]
    record = json.loads((onnx_dir / "export.json").read_text())
    assert record["model_type"] == kind and record["opset"] == 18
    assert set(record["source_weights"]) == {"model.safetensors"}
    for name, precision in (("model.onnx", "fp32"), ("model_quantized.onnx", "int8")):
        graph = onnx.load(str(onnx_dir / name))
        assert [(o.domain, o.version) for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [
            ("", 18)
        ]
        batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
        assert graph.graph.input[0].name == "input_values" and batch.dim_param == "batch"
        check = record["files"][name]["check"]
        info = record["files"][name]
        # the file's kind, and what ONNX Runtime computes it in (the CPU provider has no bf16 kernels)
        assert (
            info["file_precision"] == precision
            and info["precision"] == {"fp32": "fp32", "int8": "int8/fp32"}[precision]
        )
        # generated music, speech-like voices and noise, each compared on every output within its tolerance
        assert (
            check["windows"] == 6
            and info["passed"]
            and info["tolerance"] >= check["max_probability_difference"]
        )
        assert ("audioset_check" in info) == (kind == "ast_dora")
        assert check["top1_agreement"] == 1.0
        limit = FP32_PROBABILITY_ATOL if precision == "fp32" else INT8_PROBABILITY_ATOL
        assert check["max_probability_difference"] < limit
    # int8 really quantized the matmuls: integer weights and dynamic-quantization operators
    quantized = onnx.load(str(onnx_dir / "model_quantized.onnx")).graph
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in quantized.node)
    assert any(t.data_type == onnx.TensorProto.INT8 for t in quantized.initializer)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_files_compute_the_torch_model_at_any_batch_size(exported, kind):
    torch_classifier = GenreClassifier.from_pretrained(exported[kind], bf16=False)
    windows = onnx_export.generated_windows(
        torch_classifier.sampling_rate, torch_classifier.window, 5, seed=3
    )
    reference = torch_classifier.predict_windows(windows)
    for precision, atol in (("fp32", FP32_PROBABILITY_ATOL), ("int8", INT8_PROBABILITY_ATOL)):
        classifier = GenreClassifier.from_pretrained(exported[kind], backend="onnx", onnx_precision=precision)
        assert classifier.runner.file_precision == precision
        assert classifier.runner.precision == ("int8/fp32" if precision == "int8" else "fp32")
        for batch in (windows[:1], windows):  # the export was traced at batch 2
            np.testing.assert_allclose(
                classifier.predict_windows(batch), reference[: len(batch)], atol=atol, rtol=0
            )


def test_export_without_quantize_removes_an_old_int8_file(exported, tmp_path):
    model_dir = copy_model(exported["vit_hybrid"], tmp_path / "model")
    assert onnx_export.main(["onnx", str(model_dir)]) == 0
    assert not (model_dir / "onnx" / "model_quantized.onnx").exists()
    classifier = GenreClassifier.from_pretrained(model_dir, backend="onnx")
    assert classifier.runner.file_precision == "fp32"  # no int8 file: the fp32 one
    assert onnx_export.main(["onnx", str(tmp_path / "nothing_here")]) == 2


# ---- choosing the backend --------------------------------------------------------------------------------------


def test_backend_onnx_prefers_int8_and_explains_a_missing_export(exported, tmp_path):
    classifier = GenreClassifier.from_pretrained(exported["ast_dora"], backend="onnx")
    assert isinstance(classifier.runner, OnnxRunner) and classifier.model is None
    assert classifier.runner.path.name == "model_quantized.onnx" and classifier.backend == "onnx"
    assert classifier.runner.threads == torch.get_num_threads()
    assert "onnxruntime int8" in repr(classifier)
    plain = copy_model(exported["ast_dora"], tmp_path / "plain")
    shutil.rmtree(plain / "onnx")
    with pytest.raises(
        BackendError, match=r"no onnx/model_quantized.onnx or onnx/model.onnx.*python -m ast_dora.export onnx"
    ):
        GenreClassifier.from_pretrained(plain, backend="onnx")
    with pytest.raises(BackendError, match="not one of auto, torch, onnx"):
        GenreClassifier.from_pretrained(plain, backend="tensorrt")
    # auto: onnx where there is an export, torch where there is none
    assert GenreClassifier.from_pretrained(exported["ast_dora"], backend="auto").backend == "onnx"
    assert GenreClassifier.from_pretrained(plain, backend="auto").backend == "torch"
    with pytest.raises(BackendError, match="runs on cpu, not cuda"):
        GenreClassifier.from_pretrained(exported["ast_dora"], backend="onnx", device="cuda")


def test_an_export_of_older_weights_is_refused(exported, tmp_path):
    model_dir = copy_model(exported["vit_hybrid"], tmp_path / "model")
    model, feature_extractor = random_genre_model("vit_hybrid", size="tiny", seed=1)
    save_trained_model(model, feature_extractor, model_dir)  # retrained into the same output_dir
    with pytest.raises(BackendError, match="exported from other weights.*Export it again"):
        GenreClassifier.from_pretrained(model_dir, backend="onnx")


@pytest.mark.parametrize("kind", KINDS)
def test_song_analysis_is_the_same_on_both_backends(exported, song, kind):
    torch_analysis = GenreClassifier.from_pretrained(exported[kind], bf16=False).analyse(song)
    onnx_analysis = GenreClassifier.from_pretrained(
        exported[kind], backend="onnx", onnx_precision="fp32"
    ).analyse(song)
    np.testing.assert_array_equal(onnx_analysis.window_starts, torch_analysis.window_starts)
    np.testing.assert_allclose(
        onnx_analysis.window_probabilities,
        torch_analysis.window_probabilities,
        atol=FP32_PROBABILITY_ATOL,
        rtol=0,
    )
    assert set(onnx_analysis.timings) == {"decode", "features", "model"}


def test_predict_cli_with_the_onnx_backend(exported, song, tmp_path, capsys):
    assert (
        predict.main([str(song), "--model", str(exported["vit_hybrid"]), "--backend", "onnx", "--json"]) == 0
    )
    [row] = json.loads(capsys.readouterr().out)
    expected = GenreClassifier.from_pretrained(exported["vit_hybrid"], backend="onnx").analyse(song)
    assert row["genre"] == expected.genre and len(row["segments"]) == len(expected.window_starts)
    assert row["probabilities"] == pytest.approx(expected.label_probabilities(), abs=1e-9)
    plain = copy_model(exported["vit_hybrid"], tmp_path / "plain")
    shutil.rmtree(plain / "onnx")
    assert predict.main([str(song), "--model", str(plain), "--backend", "onnx"]) == 2
    assert "python -m ast_dora.export onnx" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["model", "model_type"])
@pytest.mark.slow
def test_bench_song_reports_the_backend_and_the_first_result(exported, tmp_path, source):
    out = tmp_path / "song.json"
    model = (
        ["--model", str(exported["ast_dora"])]
        if source == "model"
        else ["--model_type", "ast_dora", "--size", "tiny"]
    )
    bench.main(
        [
            "song",
            *model,
            "--backend",
            "onnx",
            "--seconds",
            "25",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--batch_size",
            "2",
            "--json",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["backend"] == "onnx" and saved["precision"] == "int8/fp32" and saved["windows"] == 3
    assert {"song_seconds", "latency_s", "decode_s", "features_s", "model_s", "peak_fp32_tflops"} <= set(
        saved
    )
    # the first batch (2 of 3 windows) comes before the end of the song
    assert 0 < saved["first_result_s"] < saved["latency_s"] and len(saved["first_results_s"]) == 2
    # int8 is judged against ONNX Runtime's own int8 matmul, measured in the same run
    assert saved["parameters"] > 0 and saved["model_utilisation_of"] == "int8" and saved["peak_int8_tops"] > 0
    assert saved["peak_int8"]["kernel"] == "MatMulInteger u8 x s8" and saved["model_utilisation"] > 0
    assert (saved["onnx_export_s"] is None) == (source == "model")


# ---- streaming -------------------------------------------------------------------------------------------------


def test_analyse_iter_yields_every_batch_and_ends_with_analyse(exported, song):
    classifier = GenreClassifier.from_pretrained(exported["vit_hybrid"], backend="onnx", batch_size=2)
    partials = list(classifier.analyse_iter(song))
    whole = classifier.analyse(song)
    total = len(whole.window_starts)
    assert total == 6 and [p.windows_done for p in partials] == [2, 4, 6]
    assert all(p.windows_total == total for p in partials) and [p.complete for p in partials] == [
        False,
        False,
        True,
    ]
    order = visiting_order(total)
    for partial in partials:
        # a partial analysis is the whole one restricted to the windows visited so far (coarse to fine), in time order
        done = np.sort(order[: partial.windows_done])
        np.testing.assert_array_equal(partial.window_starts, whole.window_starts[done])
        np.testing.assert_allclose(partial.window_probabilities, whole.window_probabilities[done], atol=1e-6)
        np.testing.assert_allclose(
            partial.probabilities, whole.window_probabilities[done].mean(axis=0), atol=1e-6
        )
        assert partial.duration == whole.duration
    np.testing.assert_array_equal(partials[-1].probabilities, whole.probabilities)
    assert partials[-1].vote == whole.vote


def test_the_first_batch_is_short_so_the_first_result_comes_sooner(exported, tmp_path):
    song = generated_wav(tmp_path / "minute.wav", 60.0, channels=1)  # 6 AST windows of 10.24 s
    classifier = GenreClassifier.from_pretrained(exported["ast_dora"], backend="onnx")
    assert (classifier.first_batch_size, classifier.batch_size) == (2, 6)  # the AST spec's
    assert [p.windows_done for p in classifier.analyse_iter(song)] == [2, 6]
    one_size = GenreClassifier.from_pretrained(exported["ast_dora"], backend="onnx", first_batch_size=6)
    assert [p.windows_done for p in one_size.analyse_iter(song)] == [6]
    # A window's result does not depend on its batch (fp32; int8 quantizes activations per batch, so there it
    # moves by rounding of the activation scale).
    fp32 = dict(backend="onnx", onnx_precision="fp32")
    np.testing.assert_allclose(
        GenreClassifier.from_pretrained(exported["ast_dora"], first_batch_size=6, **fp32)
        .analyse(song)
        .window_probabilities,
        GenreClassifier.from_pretrained(exported["ast_dora"], **fp32).analyse(song).window_probabilities,
        atol=FP32_PROBABILITY_ATOL,
        rtol=0,
    )


def test_analyse_iter_refuses_bad_audio_before_the_first_result(exported, tmp_path):
    classifier = GenreClassifier.from_pretrained(exported["vit_hybrid"], backend="onnx")
    stream = classifier.analyse_iter(np.zeros(22050 * 3, np.float32), sampling_rate=22050)
    with pytest.raises(SilentAudioError):
        next(stream)


# ---- int8 agreement on a data split ---------------------------------------------------------------------------


def check_config(tmp_path: Path) -> Path:
    """A run config whose data is small and quick: 3 five-second tone tracks per genre, a third of them in the
    test split, windows every 0.5 s (3 per track)."""
    data_dir = make_gtzan_folder(tmp_path / "gtzan", tracks_per_genre=3, seconds=5.0)
    config = {
        "model_type": "vit_hybrid",
        "data_dir": str(data_dir),
        "split": "folds",
        "num_folds": 3,
        "hop_seconds": 0.5,
        "cache_features": False,
        "output_dir": str(tmp_path / "run"),
        "seed": 42,
    }
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_int8_agreement_check_passes_and_catches_an_export_of_other_weights(exported, tmp_path, capsys):
    model_dir = copy_model(exported["vit_hybrid"], tmp_path / "model")
    config = check_config(tmp_path)
    out = tmp_path / "check.json"
    code = onnx_export.main(
        [
            "onnx",
            str(model_dir),
            "--quantize",
            "int8",
            "--check",
            str(config),
            "--min_agreement",
            str(TINY_MIN_AGREEMENT),
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    check = json.loads(out.read_text())["check"]
    assert check["split"] == "test" and check["windows"] == 30 and check["tracks"] == 10
    int8, fp32 = check["onnx int8"], check["onnx fp32"]
    assert int8["file"] == "model_quantized.onnx" and int8["top1_agreement"] >= TINY_MIN_AGREEMENT
    assert int8["max_probability_difference"] < INT8_PROBABILITY_ATOL
    assert fp32["top1_agreement"] == 1.0 and fp32["max_probability_difference"] < FP32_PROBABILITY_ATOL
    for name in ("torch fp32", "onnx int8"):
        assert 0 <= check[name]["track_accuracy"] <= 1 and 0 <= check[name]["window_accuracy"] <= 1
    assert "top-1 agreement with torch fp32" in printed and "track accuracy" in printed

    # The int8 file of a model with other weights in its place: the check must fail, and say so.
    other_dir = tmp_path / "other"
    model, feature_extractor = random_genre_model("vit_hybrid", size="tiny", seed=1)
    save_trained_model(model, feature_extractor, other_dir)
    onnx_export.export_onnx(other_dir, quantize="int8")
    shutil.copy(other_dir / "onnx" / "model_quantized.onnx", model_dir / "onnx" / "model_quantized.onnx")
    code = onnx_export.main(
        [
            "onnx",
            str(model_dir),
            "--no_export",
            "--check",
            str(config),
            "--min_agreement",
            str(TINY_MIN_AGREEMENT),
            "--json",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    wrong = json.loads(out.read_text())["check"]["onnx int8"]
    assert code == 1 and "FAILED: top-1 agreement below" in captured.err
    # (random tiny models give nearly uniform probabilities, so the difference is small in absolute terms)
    assert wrong["top1_agreement"] < TINY_MIN_AGREEMENT
    # (measured on an AMD EPYC: 0.027 against int8's own 0.0057; the top-1 agreement above is the verdict)
    assert wrong["max_probability_difference"] > 3 * int8["max_probability_difference"]
