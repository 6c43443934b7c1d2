"""Every backend (the registry's: torch, onnx, openvino) on tiny models: the precision each runner reports is the one
it computes in and follows the setting (`bf16=False` / `--no_bf16`: fp32 everywhere; auto: the measured probe's
answer, forced both ways here), concurrent analyses on one classifier equal sequential ones, the export's check
compares every output and fails on an AudioSet output that is off, and an IR is written atomically with
temporary names no upload pattern matches."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from song_fixtures import export_tiny_onnx, generated_wav, save_tiny_model

from ast_dora import export as model_export
from ast_dora import predict
from ast_dora.backends import backend_names, upload_patterns
from ast_dora.backends.openvino import save_ir
from ast_dora.hardware import FORCE_ENV, native_bf16_flags
from ast_dora.inference import GenreClassifier

CALIBRATION_WINDOWS = 16
NATIVE_BF16 = native_bf16_flags()
NO_NATIVE_BF16 = "this CPU has no native bf16 (AMX / AVX512-BF16): OpenVINO compiles a bf16 hint as f32"
# Two runs of the same runner on the same inputs, at once or one after the other: the same kernels on the same
# shapes. Stated, not assumed to be bit-exact: 1e-6 on probabilities.
CONCURRENT_ATOL = 1e-6


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models of two kinds with every exported backend's files (fp32 and int8)."""
    root = tmp_path_factory.mktemp("backend_models")
    result = {}
    for kind in ("vit_hybrid", "ast_dora"):
        folder = export_tiny_onnx(save_tiny_model(kind, root / kind))
        model_export.export_openvino(folder, quantize="int8", calibration_windows=CALIBRATION_WINDOWS)
        result[kind] = folder
    return result


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend_songs")
    return [
        generated_wav(root / f"{genre}.wav", 12.0, genre=genre)
        for genre in ("rock", "jazz", "metal", "classical")
    ]


def float_part(precision: str) -> str:
    return precision.split("/")[-1]


# ---- precision ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", backend_names())
def test_no_bf16_computes_fp32_on_every_backend(models, songs, backend, capsys):
    classifier = GenreClassifier.from_pretrained(models["vit_hybrid"], backend=backend, bf16=False)
    assert classifier.backend == backend and float_part(classifier.precision) == "fp32"
    assert f"computes in {classifier.precision}" in classifier.runner.describe()
    # predict --no_bf16 --json reports it, per song
    assert (
        predict.main(
            [
                str(songs[0]),
                "--model",
                str(models["vit_hybrid"]),
                "--backend",
                backend,
                "--no_bf16",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    [row] = json.loads(capsys.readouterr().out)
    assert row["precision"] == classifier.precision
    classifier.close()


@pytest.mark.parametrize("answer", ["faster", "slower"])
def test_auto_precision_follows_the_measured_probe(models, monkeypatch, answer):
    """auto (bf16=None) asks `hardware.resolve_bf16` per engine; the probe's answer is forced here both ways."""
    monkeypatch.setenv(FORCE_ENV, answer)
    torch_runner = GenreClassifier.from_pretrained(models["vit_hybrid"], backend="torch").runner
    assert torch_runner.precision == ("bf16" if answer == "faster" else "fp32")
    for file_precision in ("fp32", "int8"):
        runner = GenreClassifier.from_pretrained(
            models["vit_hybrid"], backend="openvino", onnx_precision=file_precision
        ).runner
        # An honest report: a CPU without native bf16 computes fp32 even when bf16 is asked for.
        expected = "bf16" if answer == "faster" and NATIVE_BF16 else "fp32"
        assert float_part(runner.precision) == expected, runner.describe()
        assert runner.precision.startswith("int8/") == (file_precision == "int8")
        runner.close()
    # ONNX Runtime's CPU provider has no bf16 kernels: fp32 whatever the probe says
    onnx = GenreClassifier.from_pretrained(models["vit_hybrid"], backend="onnx", onnx_precision="fp32").runner
    assert onnx.precision == "fp32"


@pytest.mark.skipif(not NATIVE_BF16, reason=NO_NATIVE_BF16)
def test_forced_bf16_hint_computes_bf16_where_the_cpu_has_it(models, songs):
    fp32 = GenreClassifier.from_pretrained(
        models["vit_hybrid"], backend="openvino", onnx_precision="fp32", bf16=False
    )
    bf16 = GenreClassifier.from_pretrained(
        models["vit_hybrid"], backend="openvino", onnx_precision="fp32", bf16=True
    )
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    difference = np.abs(
        fp32.analyse(songs[0]).window_probabilities - bf16.analyse(songs[0]).window_probabilities
    )
    assert difference.max() < 0.03  # bf16's tolerance (ast_dora.backends.base.PROBABILITY_TOLERANCE)


def test_auto_backend_on_a_cpu_without_native_bf16_reports_fp32(models, monkeypatch):
    if NATIVE_BF16:
        pytest.skip("the CPU has native bf16: auto's precision is the probe's choice there")
    monkeypatch.delenv(FORCE_ENV, raising=False)
    classifier = GenreClassifier.from_pretrained(models["ast_dora"], backend="auto")
    assert classifier.backend == "openvino" and classifier.precision == "int8/fp32"


# ---- threads -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", backend_names())
def test_concurrent_analyses_equal_sequential_ones(models, songs, backend):
    """Four threads analysing four different songs at once on one classifier: each answer is its song's."""
    classifier = GenreClassifier.from_pretrained(models["ast_dora"], backend=backend, bf16=False)
    sequential = [classifier.analyse(song) for song in songs]
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(songs))

    def analyse(i: int) -> None:
        try:
            start.wait()
            for _ in range(2):
                results[i] = classifier.analyse(songs[i])
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=analyse, args=(i,)) for i in range(len(songs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for i, expected in enumerate(sequential):
        np.testing.assert_allclose(
            results[i].window_probabilities, expected.window_probabilities, atol=CONCURRENT_ATOL, rtol=0
        )
        np.testing.assert_allclose(
            results[i].music.window_probabilities,
            expected.music.window_probabilities,
            atol=CONCURRENT_ATOL,
            rtol=0,
        )
    classifier.close()


def test_the_apps_concurrency_follows_the_cpu_count():
    from song_fixtures import load_app_module

    app = load_app_module()
    assert app.concurrency_limit({"GENRE_CONCURRENCY": "3"}) == 3
    import os

    cpus = len(os.sched_getaffinity(0))
    assert app.concurrency_limit({}) == max(1, cpus // 2)


# ---- the export's check ------------------------------------------------------------------------------------------


def _with_music_logit_turned(model_dir: Path, destination: Path) -> Path:
    """The model with its AudioSet head's "Music" row negated and scaled tenfold: the genre logits are the same,
    the music verdict of every window flips."""
    import torch

    from ast_dora.models.factory import load_trained_model, save_trained_model
    from ast_dora.music_detection import music_index

    model, feature_extractor = load_trained_model(str(model_dir))
    music = music_index(list(model.config.audioset_labels))
    with torch.no_grad():
        model.audioset.dense.weight[music] *= -10
        model.audioset.dense.bias[music] *= -10
    save_trained_model(model, feature_extractor, destination)
    return destination


def test_export_check_fails_on_an_int8_audioset_output_that_is_off(models, tmp_path):
    model_dir = shutil.copytree(models["ast_dora"], tmp_path / "model")
    record = json.loads((model_dir / "openvino" / "export.json").read_text())
    honest = record["files"]["openvino_model_int8.xml"]
    assert honest["passed"] and honest["audioset_check"]["windows"] == 6
    # The int8 IR of a model whose AudioSet head is other, in place of this model's own.
    other = _with_music_logit_turned(model_dir, tmp_path / "other")
    model_export.export_openvino(other, quantize="int8", calibration_windows=CALIBRATION_WINDOWS)
    for name in ("openvino_model_int8.xml", "openvino_model_int8.bin"):
        shutil.copy(other / "openvino" / name, model_dir / "openvino" / name)
    classifier, _, inputs = model_export._load_for_export(model_dir, None, model_export.CHECK_WINDOWS)
    reference = classifier.runner.outputs(inputs)
    info = model_export.self_check("openvino", model_dir, classifier.config, reference, inputs, "int8")
    assert not info["passed"]
    assert info["check"]["max_probability_difference"] <= info["tolerance"]  # the genres are the same
    assert info["audioset_check"]["max_probability_difference"] > info["tolerance"]


def test_check_on_split_compares_the_music_verdict(models, tmp_path, capsys):
    import yaml
    from conftest import make_gtzan_folder

    model_dir = shutil.copytree(models["ast_dora"], tmp_path / "model")
    data_dir = make_gtzan_folder(tmp_path / "gtzan", tracks_per_genre=3, seconds=5.0)
    config = tmp_path / "check.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_type": "ast_dora",
                "data_dir": str(data_dir),
                "split": "folds",
                "num_folds": 3,
                "cache_features": False,
                "seed": 42,
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    out = tmp_path / "check.json"
    assert (
        model_export.main(
            [
                "openvino",
                str(model_dir),
                "--no_export",
                "--check",
                str(config),
                "--min_agreement",
                "0.9",
                "--json",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr()
    fp32 = json.loads(out.read_text())["check"]["openvino fp32"]
    assert fp32["audioset"]["music_agreement"] == 1.0 and "music verdict agreement" in capsys.readouterr().out
    # the fp32 IR of a model whose music verdict is the opposite: the check fails, and says why
    other = _with_music_logit_turned(model_dir, tmp_path / "other")
    model_export.export_openvino(other)
    for name in ("openvino_model.xml", "openvino_model.bin"):
        shutil.copy(other / "openvino" / name, model_dir / "openvino" / name)
    assert (
        model_export.main(
            [
                "openvino",
                str(model_dir),
                "--no_export",
                "--check",
                str(config),
                "--min_agreement",
                "0.9",
                "--json",
                str(out),
            ]
        )
        == 1
    )
    assert "openvino fp32 music verdict" in capsys.readouterr().err
    wrong = json.loads(out.read_text())["check"]["openvino fp32"]
    assert wrong["top1_agreement"] == 1.0 and wrong["audioset"]["music_agreement"] < 0.9


# ---- files -------------------------------------------------------------------------------------------------------


def test_ir_pair_is_written_atomically_and_temporary_files_are_never_uploaded(models, tmp_path, monkeypatch):
    import openvino as ov

    ov_dir = shutil.copytree(models["vit_hybrid"] / "openvino", tmp_path / "openvino")
    before = {p.name: p.read_bytes() for p in ov_dir.iterdir()}
    ov_model = ov.Core().read_model(str(ov_dir / "openvino_model.xml"))

    def interrupted(
        model, path, compress_to_fp16=True
    ):  # the process dies after the weights, before the graph
        Path(path).with_suffix(".bin").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(ov, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_ir(ov_model, ov_dir / "openvino_model.xml")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in ov_dir.iterdir() if p.is_file()}
    assert after == before  # the pair in place is untouched
    save_ir(ov_model, ov_dir / "openvino_model.xml")  # a whole save replaces the pair
    assert sorted(p.name for p in ov_dir.iterdir()) == sorted(before)


def test_temporary_files_are_never_uploaded(models, tmp_path):
    """What an export killed mid-write leaves behind (a save's temporary folder, a `.tmp` ONNX file) is not
    among the files `hub push` uploads."""
    from ast_dora import hub

    model_dir = shutil.copytree(models["vit_hybrid"], tmp_path / "model")
    for leftover in (
        "openvino/.ov_save_x/openvino_model.xml",
        "openvino/.ov_save_x/openvino_model.bin",
        "onnx/model.onnx.tmp",
        "onnx/model_quantized.onnx.tmp",
    ):
        (model_dir / leftover).parent.mkdir(exist_ok=True)
        (model_dir / leftover).write_bytes(b"partial")
    folder = tmp_path / "upload"
    folder.mkdir()
    hub._copy_onnx_export(model_dir, folder)
    uploaded = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    expected = sorted(
        f"{sub}/{p.name}"
        for sub, patterns in upload_patterns().items()
        for pattern in (*patterns, "export.json")
        for p in (model_dir / sub).glob(pattern)
    )
    assert uploaded == expected and not any("tmp" in name or "ov_save" in name for name in uploaded)
    assert {"onnx/model.onnx", "openvino/openvino_model.xml", "openvino/openvino_model.bin"} <= set(uploaded)
