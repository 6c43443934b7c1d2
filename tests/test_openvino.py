"""The OpenVINO backend: `python -m ast_dora.export openvino` on tiny models of both kinds (fp32 IR + NNCF int8), how
close each file is to PyTorch, the backend choice (`openvino`, and `auto` falling back when an export does not
load), an export of other weights (refused by the backend, caught by the agreement check), and song analysis
in a process without torch (onnx and openvino)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from song_fixtures import export_tiny_onnx, generated_wav, save_tiny_model
from test_onnx import check_config

from ast_dora import export as model_export
from ast_dora.backends import BackendError, OnnxRunner, OpenVinoRunner
from ast_dora.benchmarks.song import random_genre_model
from ast_dora.inference import GenreClassifier
from ast_dora.models.factory import save_trained_model

KINDS = ("vit_hybrid", "ast_dora", "musicnn")
# The fp32 IR runs the same float32 arithmetic as PyTorch in another order (and OpenVINO's fused kernels).
FP32_PROBABILITY_ATOL = 1e-5
# bf16 (8 bits of mantissa) where OpenVINO computes in it: the tolerance the export's self-check uses.
BF16_PROBABILITY_ATOL = 0.03
# NNCF int8 (weights and activations, calibrated on 16 windows of generated music): measured on these tiny models
# the largest window probability moved by < 1e-3.
INT8_PROBABILITY_ATOL = 0.03
ATOL = {"fp32": FP32_PROBABILITY_ATOL, "bf16": BF16_PROBABILITY_ATOL, "int8": INT8_PROBABILITY_ATOL}


def atol_for(precision: str) -> float:
    """The tolerance of what the runner reports it computes in ("int8/bf16" is held to the coarser part)."""
    return max(ATOL[part] for part in precision.split("/"))


# Top-1 agreement the check must report on the tiny ViT-hybrid's 30 test windows (see test_onnx.py); an export of
# other weights agrees on far fewer.
TINY_MIN_AGREEMENT = 0.9
CALIBRATION_WINDOWS = 16  # a short calibration keeps the suite fast; the command's default is 300


def export_tiny_openvino(model_dir: Path) -> Path:
    if not (model_dir / "openvino" / "openvino_model_int8.xml").is_file():
        model_export.export_openvino(model_dir, quantize="int8", calibration_windows=CALIBRATION_WINDOWS)
    return model_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("openvino_models")
    return {kind: export_tiny_openvino(save_tiny_model(kind, root / kind)) for kind in KINDS}


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return generated_wav(tmp_path_factory.mktemp("openvino_song") / "song.wav", 22.0)


# ---- export ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_fp32_and_int8_ir_with_the_source_weights(exported, kind):
    ov_dir = exported[kind] / "openvino"
    assert sorted(p.name for p in ov_dir.iterdir()) == [
        "export.json",
        "openvino_model.bin",
        "openvino_model.xml",
        "openvino_model_int8.bin",
        "openvino_model_int8.xml",
    ]
    record = json.loads((ov_dir / "export.json").read_text())
    assert record["model_type"] == kind and set(record["source_weights"]) == {"model.safetensors"}
    calibration = record["quantization"]["calibration"]
    assert calibration["windows"] == CALIBRATION_WINDOWS and "generated music" in calibration["data"]
    for name, precision in (("openvino_model.xml", "fp32"), ("openvino_model_int8.xml", "int8")):
        info = record["files"][name]
        # the file's kind; what the runner computed in, read back from the compiled model (as predict runs it)
        assert info["file_precision"] == precision and info["precision"].startswith(
            "int8/" if precision == "int8" else ""
        )
        # generated music, speech-like voices and noise; every output within the reported precision's tolerance
        assert info["check"]["windows"] == 6 and info["passed"]
        assert ("audioset_check" in info) == (kind == "ast_dora")
        # int8 on a tiny random model: windows whose top two genres lie within the int8 error may swap (the AST
        # stand-in's did, at a probability difference of 6e-5), so int8 is held to its probability tolerance.
        if info["precision"] == "fp32":
            assert info["check"]["top1_agreement"] == 1.0
        assert info["check"]["max_probability_difference"] < atol_for(info["precision"])
    # int8 really is int8: NNCF put quantize/dequantize pairs (FakeQuantize) on the matmuls' inputs
    import openvino as ov

    ops = [
        op.get_type_name() for op in ov.Core().read_model(str(ov_dir / "openvino_model_int8.xml")).get_ops()
    ]
    assert ops.count("FakeQuantize") >= 4
    fp32_ops = [
        op.get_type_name() for op in ov.Core().read_model(str(ov_dir / "openvino_model.xml")).get_ops()
    ]
    assert "FakeQuantize" not in fp32_ops


@pytest.mark.parametrize("kind", KINDS)
def test_openvino_files_compute_the_torch_model(exported, song, kind):
    torch_analysis = GenreClassifier.from_pretrained(exported[kind], bf16=False).analyse(song)
    for precision in ("fp32", "int8"):
        classifier = GenreClassifier.from_pretrained(
            exported[kind], backend="openvino", onnx_precision=precision
        )
        assert isinstance(classifier.runner, OpenVinoRunner) and classifier.runner.file_precision == precision
        atol = atol_for(classifier.runner.precision)  # what it computes in, not what the file is
        analysis = classifier.analyse(song)
        np.testing.assert_array_equal(analysis.window_starts, torch_analysis.window_starts)
        np.testing.assert_allclose(
            analysis.window_probabilities, torch_analysis.window_probabilities, atol=atol, rtol=0
        )
        assert set(analysis.timings) == {"decode", "features", "model"}


def test_export_without_quantize_removes_an_old_int8_ir(exported, tmp_path):
    model_dir = shutil.copytree(exported["vit_hybrid"], tmp_path / "model")
    model_export.export_openvino(model_dir)
    assert sorted(p.name for p in (model_dir / "openvino").iterdir()) == [
        "export.json",
        "openvino_model.bin",
        "openvino_model.xml",
    ]
    with pytest.raises(model_export.ExportError, match="--calibration only makes sense with --quantize int8"):
        model_export.export_openvino(model_dir, calibration="configs/smoke_vit_hybrid.yaml")


# ---- choosing the backend --------------------------------------------------------------------------------------


def test_backend_openvino_prefers_int8_and_explains_a_missing_export(exported, tmp_path):
    classifier = GenreClassifier.from_pretrained(exported["ast_dora"], backend="openvino")
    assert classifier.backend == "openvino" and classifier.model is None
    assert classifier.runner.path.name == "openvino_model_int8.xml" and "openvino int8" in repr(classifier)
    plain = shutil.copytree(exported["ast_dora"], tmp_path / "plain")
    shutil.rmtree(plain / "openvino")
    with pytest.raises(
        BackendError,
        match=r"no openvino/openvino_model_int8.xml or openvino/openvino_model.xml.*"
        r"python -m ast_dora.export openvino",
    ):
        GenreClassifier.from_pretrained(plain, backend="openvino")
    with pytest.raises(BackendError, match="runs on cpu, not cuda"):
        GenreClassifier.from_pretrained(exported["ast_dora"], backend="openvino", device="cuda")


def test_auto_takes_openvino_int8_then_falls_back_to_onnx_then_torch(exported, tmp_path, caplog):
    model_dir = export_tiny_onnx(shutil.copytree(exported["vit_hybrid"], tmp_path / "model"))
    assert (
        GenreClassifier.from_pretrained(model_dir, backend="auto").runner.path.name
        == "openvino_model_int8.xml"
    )
    # An IR that does not load or compile here (a broken weights file stands in for a CPU OpenVINO fails on):
    # one log line each, then the next export in the order.
    for name in ("openvino_model_int8.bin", "openvino_model.bin"):
        (model_dir / "openvino" / name).write_bytes(b"\0" * 16)
    with caplog.at_level(logging.WARNING, logger="ast_dora.backends"):
        classifier = GenreClassifier.from_pretrained(model_dir, backend="auto")
    assert isinstance(classifier.runner, OnnxRunner) and classifier.runner.file_precision == "int8"
    failures = [r.getMessage() for r in caplog.records if "did not load here" in r.getMessage()]
    assert len(failures) == 1 and "the openvino int8 export" in failures[0]
    caplog.clear()
    shutil.rmtree(model_dir / "onnx")
    with caplog.at_level(logging.WARNING, logger="ast_dora.backends"):
        assert GenreClassifier.from_pretrained(model_dir, backend="auto").backend == "torch"
    failures = [r.getMessage() for r in caplog.records if "did not load here" in r.getMessage()]
    assert len(failures) == 2 and "openvino int8" in failures[0] and "openvino fp32" in failures[1]


def test_an_openvino_export_of_older_weights_is_refused(exported, tmp_path):
    model_dir = shutil.copytree(exported["vit_hybrid"], tmp_path / "model")
    model, feature_extractor = random_genre_model("vit_hybrid", size="tiny", seed=1)
    save_trained_model(model, feature_extractor, model_dir)  # retrained into the same output_dir
    with pytest.raises(BackendError, match=r"openvino was exported from other weights.*export openvino"):
        GenreClassifier.from_pretrained(model_dir, backend="openvino")


# ---- agreement on a data split ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_int8_agreement_check_passes_and_catches_an_export_of_other_weights(exported, tmp_path, capsys):
    model_dir = shutil.copytree(exported["vit_hybrid"], tmp_path / "model")
    config = check_config(tmp_path)
    out = tmp_path / "check.json"
    code = model_export.main(
        [
            "openvino",
            str(model_dir),
            "--quantize",
            "int8",
            "--calibration",
            str(config),
            "--calibration_windows",
            "24",
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
    result = json.loads(out.read_text())
    calibration = result["export"]["quantization"]["calibration"]
    assert calibration["windows"] == 24 and "train split" in calibration["data"]
    assert "6 of speech-like voices and noise" in calibration["data"]  # the music check's other side
    check = result["check"]
    assert check["split"] == "test" and check["windows"] == 30 and "onnx int8" not in check
    int8, fp32 = check["openvino int8"], check["openvino fp32"]
    assert int8["file"] == "openvino_model_int8.xml" and int8["top1_agreement"] >= TINY_MIN_AGREEMENT
    assert int8["max_probability_difference"] < INT8_PROBABILITY_ATOL
    assert int8["precision"].startswith("int8/") and fp32["precision"] in ("fp32", "bf16")
    assert fp32["max_probability_difference"] < atol_for(fp32["precision"])
    if fp32["precision"] == "fp32":
        assert fp32["top1_agreement"] == 1.0
    assert (
        f"openvino int8 (openvino_model_int8.xml, computes in {int8['precision']}): top-1 agreement"
        in printed
    )

    # The int8 IR of a model with other weights in its place: the check must fail, and say so.
    other_dir = tmp_path / "other"
    model, feature_extractor = random_genre_model("vit_hybrid", size="tiny", seed=1)
    save_trained_model(model, feature_extractor, other_dir)
    model_export.export_openvino(other_dir, quantize="int8", calibration_windows=CALIBRATION_WINDOWS)
    for name in ("openvino_model_int8.xml", "openvino_model_int8.bin"):
        shutil.copy(other_dir / "openvino" / name, model_dir / "openvino" / name)
    code = model_export.main(
        [
            "openvino",
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
    wrong = json.loads(out.read_text())["check"]["openvino int8"]
    assert code == 1 and "FAILED: top-1 agreement below" in captured.err and "openvino int8" in captured.err
    assert wrong["top1_agreement"] < TINY_MIN_AGREEMENT
    # (measured on an AMD EPYC: 0.027 against int8's own 0.0057; the top-1 agreement above is the verdict)
    assert wrong["max_probability_difference"] > 3 * int8["max_probability_difference"]


# ---- without torch ---------------------------------------------------------------------------------------------

# Packages a torch-free Space does not install (`python -m ast_dora.hub space` for a model with an export): the
# child process below cannot import them, as if they were not installed (transformers then runs without torch).
NOT_INSTALLED = ("torch", "torchaudio", "torchcodec", "torchvision", "peft", "accelerate", "datasets")


@pytest.mark.slow
def test_song_analysis_on_onnx_and_openvino_imports_no_torch(exported, song, tmp_path):
    for kind in KINDS:
        export_tiny_onnx(exported[kind])
    reference = {
        kind: GenreClassifier.from_pretrained(exported[kind], bf16=False).analyse(song) for kind in KINDS
    }
    script = textwrap.dedent(f"""
        import json, sys
        for name in {NOT_INSTALLED!r}:
            sys.modules[name] = None  # `import name` raises ImportError, and importlib finds no such package
        from ast_dora.inference import GenreClassifier
        from ast_dora import predict
        results = {{}}
        for kind, path in { ({k: str(v) for k, v in exported.items()})!r}.items():
            for backend in ("onnx", "openvino"):
                classifier = GenreClassifier.from_pretrained(path, backend=backend, onnx_precision="fp32")
                analysis = classifier.analyse({str(song)!r})
                results[kind + " " + backend] = analysis.window_probabilities.tolist()
        assert predict.main([{str(song)!r}, "--model", {str(exported["ast_dora"])!r}, "--backend", "openvino"]) == 0
        loaded = [name for name in {NOT_INSTALLED!r} if sys.modules.get(name) is not None]
        print(json.dumps({{"loaded": loaded, "results": results}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    for kind in KINDS:
        for backend in ("onnx", "openvino"):
            # numpy features + the fp32 export, against torch's model on the same song in this process
            np.testing.assert_allclose(
                report["results"][f"{kind} {backend}"],
                reference[kind].window_probabilities,
                atol=1e-4,
                rtol=0,
            )


def test_exported_analysis_imports_no_torch_even_where_it_is_installed(exported, song):
    """Torch-free means torch-free: with torch installed, an onnx and an openvino analysis of every model (and
    predict's) import neither torch nor transformers' configuration module (which imports torch)."""
    for kind in KINDS:
        export_tiny_onnx(exported[kind])
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        assert importlib.util.find_spec("torch") is not None  # installed
        from ast_dora.inference import GenreClassifier
        from ast_dora import predict
        genres = {{}}
        for kind, path in { ({k: str(v) for k, v in exported.items()})!r}.items():
            for backend in ("onnx", "openvino"):
                classifier = GenreClassifier.from_pretrained(path, backend=backend)
                genres[kind + " " + backend] = [classifier.analyse({str(song)!r}).genre, classifier.precision]
                classifier.close()
        assert predict.main([{str(song)!r}, "--model", {str(exported["vit_hybrid"])!r}, "--backend", "auto",
                             "--quiet"]) == 0
        loaded = sorted(name for name in ("torch", "torchaudio", "peft", "accelerate", "datasets",
                                          "transformers.configuration_utils") if name in sys.modules)
        print(json.dumps({{"loaded": loaded, "genres": genres}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], report["loaded"]
    assert len(report["genres"]) == 2 * len(KINDS) and all(
        precision for _, precision in report["genres"].values()
    )


def test_a_model_without_an_export_on_a_torch_free_install_fails_in_one_line(exported, song, tmp_path):
    plain = shutil.copytree(
        exported["vit_hybrid"], tmp_path / "plain", ignore=shutil.ignore_patterns("onnx", "openvino")
    )
    script = textwrap.dedent(f"""
        import sys
        for name in {NOT_INSTALLED!r}:
            sys.modules[name] = None
        from ast_dora import predict
        sys.exit(predict.main([{str(song)!r}, "--model", {str(plain)!r}, "--backend", "auto"]))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in run.stderr and "ModuleNotFoundError" not in run.stderr
    assert "no exported copy" in errors[0] and "python -m ast_dora.export openvino" in errors[0], errors
    # app.py: the same line, as the process's exit message
    app = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys
        for name in {NOT_INSTALLED!r}:
            sys.modules[name] = None
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from song_fixtures import load_app_module
        load_app_module().main(["--model", {str(plain)!r}])
    """),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert app.returncode == 1 and "Traceback" not in app.stderr, app.stderr[-3000:]
    assert "no exported copy" in app.stderr.strip().splitlines()[-1]


APP_SCRIPT = """
import json, sys, time
blocked = {blocked!r}
for name in blocked:
    sys.modules[name] = None
sys.path.insert(0, {tests!r})
from song_fixtures import load_app_module, free_port
app = load_app_module()
classifiers = app.load_classifiers({models!r}, max_seconds=600.0, backend={backend!r})
demo = app.build_demo(classifiers, [], max_seconds=600.0)
port = free_port()
app.launch(demo, server_name="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
from gradio_client import Client, handle_file
result = Client(f"http://127.0.0.1:{{port}}/", verbose=False).predict(handle_file({song!r}), api_name="/predict")
answered = time.time()
demo.close()
loaded = [name for name in ("torch", "torchaudio", "peft", "accelerate", "datasets") if sys.modules.get(name) is not None]
print(json.dumps({{"answered": answered, "loaded": loaded, "backends": [c.backend for c in classifiers.values()],
                   "label": result[0]}}))
"""


def serve_and_ask(models: list[Path], song: Path, backend: str, blocked: tuple[str, ...]) -> dict:
    """Start app.py's demo in a fresh process (`blocked` packages made unimportable), send one gradio_client
    request; returns what the process reports, with `first_answer_s` from process start to the answer."""
    import time

    script = APP_SCRIPT.format(
        blocked=blocked,
        tests=str(Path(__file__).parent),
        models=[str(m) for m in models],
        backend=backend,
        song=str(song),
    )
    start = time.time()
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report["first_answer_s"] = report["answered"] - start
    return report


def test_the_app_answers_without_torch(exported, song):
    report = serve_and_ask([exported["vit_hybrid"], exported["ast_dora"]], song, "auto", NOT_INSTALLED)
    assert report["loaded"] == [] and report["backends"] == ["openvino", "openvino"]
    assert report["label"]["label"]  # the genre the app shows
