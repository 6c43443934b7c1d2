"""Export a trained model to ONNX or OpenVINO, quantize it to int8, and measure what that changes.

    python -m ast_dora.export onnx OUTPUT_DIR                              # OUTPUT_DIR/onnx/model.onnx (fp32)
    python -m ast_dora.export onnx OUTPUT_DIR --quantize int8              # + onnx/model_quantized.onnx
    python -m ast_dora.export onnx OUTPUT_DIR --quantize int8 --check configs/smoke_vit_hybrid.yaml
    python -m ast_dora.export openvino OUTPUT_DIR --quantize int8 --calibration configs/smoke_vit_hybrid.yaml
                                                 # OUTPUT_DIR/openvino/openvino_model.xml/.bin (+ _int8.xml/.bin)

OUTPUT_DIR is a model folder of this project (a training run's `output_dir`, either model kind; an AST-DoRA
model is exported merged, as `load_trained_model` loads it). The export writes the Hub's ONNX layout (`onnx/`
beside config.json, what transformers.js reads and what `hub push` uploads): `model.onnx` (fp32, opset 18, a
dynamic batch axis; input `input_values` as the feature extractor makes it, output `logits`), with
`--quantize int8` also `model_quantized.onnx` (`onnxruntime.quantization.quantize_dynamic`: MatMul and Gemm
weights in int8, activations quantized at run time), and `export.json` (versions, the sha256 of the weights it
came from, the checks). The backend (`GenreClassifier.from_pretrained(..., backend="onnx")`) refuses an export
whose source weights have changed since.

Every export runs each file on a few windows of generated music and prints how far it is from PyTorch fp32.
`--check CONFIG` measures it properly: on the test split (`--split`) of the run config CONFIG (the config the
model was trained with, so the same data, split seed and windows; data paths relative to the working
directory), the top-1 agreement of each ONNX file with PyTorch fp32 over the windows, the largest difference of
any window's probabilities, and window and track accuracies of both. The exit status is 1 if a file agrees on
fewer than `--min_agreement` (default 0.99) of the windows.

`openvino` converts the same fp32 ONNX graph (made in a temporary folder; `onnx/` is left as it is) with
`openvino.convert_model` and saves the IR in optimum-intel's names, `openvino/openvino_model.xml` + `.bin`
(fp32 weights); `--quantize int8` adds `openvino_model_int8.xml` + `.bin`, NNCF post-training quantization
(`nncf.quantize`, `ModelType.TRANSFORMER`: int8 weights and activations, scales from calibration) on
`--calibration_windows` windows (default 300) of the training split of `--calibration CONFIG` (the config the
model was trained with), else of generated music. `openvino/export.json` records the same as the onnx one
(sha256 of the source weights, checks, and the calibration data); `--check CONFIG` works the same.

The exporter is `torch.onnx.export` (the TorchScript-based one, `dynamo=False`): Hugging Face `optimum`'s ONNX
exporter only knows transformers' own architectures, not these remote-code models, and its releases pin
transformers below 5 (see docs/serving.md, "ONNX Runtime backend").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .backends import (
    ONNX_AUDIOSET_OUTPUT,
    ONNX_FP32_FILE,
    ONNX_INPUT,
    ONNX_INT8_FILE,
    ONNX_OUTPUT,
    ONNX_RECORD_FILE,
    ONNX_SUBFOLDER,
    OPENVINO_FP32_FILE,
    OPENVINO_INT8_FILE,
    OPENVINO_SUBFOLDER,
    OnnxRunner,
    OpenVinoRunner,
    TorchRunner,
    extra_output_kwargs,
    extra_output_names,
    weights_fingerprint,
)
from .evaluation import compute_genre_metrics, softmax
from .models.factory import load_trained_model

logger = logging.getLogger(__name__)

OPSET = 18
QUANTIZATIONS = ("int8",)
# Operators whose weights dynamic quantization stores in int8: every linear layer and the patch projections'
# matmuls; convolutions, normalisation and softmax stay fp32.
QUANTIZED_OPERATORS = ("MatMul", "Gemm")
CHECK_WINDOWS = 3  # windows of generated music each export is checked on (a batch size other than the example's)
EXAMPLE_BATCH = 2
DEFAULT_MIN_AGREEMENT = 0.99
CALIBRATION_WINDOWS = 300  # windows NNCF computes activation ranges on (its default subset size)


class ExportError(ValueError):
    """An export or check that cannot be done as asked; the message says what to do."""


class _NamedOutputs(torch.nn.Module):
    """The model as ONNX sees it: `input_values` in, `logits` out, and `audioset_logits` (music detection) for a
    model with the AudioSet branch (no loss, no ModelOutput)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.output_names = [ONNX_OUTPUT, *extra_output_names(model)]

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(self.output_names) == 1:
            return (self.model(input_values=input_values).logits,)
        output = self.model(input_values=input_values, **extra_output_kwargs(self.output_names))
        return tuple(output[name] for name in self.output_names)


def generated_windows(sampling_rate: int, window: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` windows of generated music of different genres, (count, window) float32: realistic inputs for
    comparing two runs of the same model without any data set."""
    from .data import GTZAN_GENRES, synthesize_track

    rng = np.random.default_rng(seed)
    genres = [GTZAN_GENRES[(3 * i) % len(GTZAN_GENRES)] for i in range(count)]
    return np.stack([synthesize_track(g, window / sampling_rate, sampling_rate, rng)[:window] for g in genres])


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def compare_logits(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far `other` logits are from `reference` ones, window by window."""
    p, q = softmax(reference), softmax(other)
    return {
        "windows": int(len(reference)),
        "top1_agreement": float(np.mean(p.argmax(axis=1) == q.argmax(axis=1))),
        "max_probability_difference": float(np.abs(p - q).max()),
        "max_logit_difference": float(np.abs(reference.astype(np.float64) - other).max()),
    }


def export_fp32(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = OPSET) -> None:
    """`model` (fp32, eval) to an ONNX file with a dynamic batch axis, traced on `example` input_values."""
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-level shape checks (constant for a fixed window) and that it is the
        # TorchScript exporter; neither is a problem here, and the export is checked on other batch sizes.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        wrapper = _NamedOutputs(model).eval()
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[ONNX_INPUT],
            output_names=wrapper.output_names,
            dynamic_axes={ONNX_INPUT: {0: "batch"}, **{name: {0: "batch"} for name in wrapper.output_names}},
        )
    tmp.replace(path)


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantization: MatMul/Gemm weights stored as int8 (QInt8), activations quantized per run."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = int8_path.with_name(int8_path.name + ".tmp")
    # quantize_dynamic logs a suggestion to run its pre-processing first; measured here it changed neither
    # agreement nor speed, so it is skipped (and the message with it).
    quantization_logger = logging.getLogger()
    level = quantization_logger.level
    quantization_logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(tmp), op_types_to_quantize=list(QUANTIZED_OPERATORS),
                         weight_type=QuantType.QInt8)
    finally:
        quantization_logger.setLevel(level)
    tmp.replace(int8_path)


def _load_for_export(model_dir: Path, quantize: str | None, check_windows: int):
    """The saved model as song analysis runs it (PyTorch fp32 on CPU), an example batch to trace the export with,
    `check_windows` windows of generated music and their PyTorch outputs to check each exported file against."""
    from .inference import GenreClassifier

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZATIONS)}.")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} has no config.json: give the output_dir of a training run (a saved model folder).")
    model, feature_extractor = load_trained_model(str(model_dir))
    classifier = GenreClassifier(model, feature_extractor, bf16=False, device="cpu")
    windows = generated_windows(classifier.sampling_rate, classifier.window, EXAMPLE_BATCH + check_windows)
    example = torch.from_numpy(classifier.features(windows[:EXAMPLE_BATCH]))
    check_inputs = classifier.features(windows[EXAMPLE_BATCH:])
    return classifier, example, check_inputs


def export_onnx(model_dir: str | os.PathLike, quantize: str | None = None, opset: int = OPSET,
                check_windows: int = CHECK_WINDOWS) -> dict:
    """Write `model_dir/onnx/` (fp32, plus int8 with `quantize="int8"`) and `export.json`; returns that record.

    Each file is run on `check_windows` windows of generated music against PyTorch fp32 (the record's
    `files.<name>.check`).
    """
    model_dir = Path(model_dir)
    start = time.perf_counter()
    classifier, example, check_inputs = _load_for_export(model_dir, quantize, check_windows)
    reference = classifier.runner.outputs(check_inputs)

    onnx_dir = model_dir / ONNX_SUBFOLDER
    onnx_dir.mkdir(exist_ok=True)
    fp32_path, int8_path = onnx_dir / ONNX_FP32_FILE, onnx_dir / ONNX_INT8_FILE
    export_fp32(classifier.model, example, fp32_path, opset)
    written = [fp32_path]
    if quantize == "int8":
        quantize_int8(fp32_path, int8_path)
        written.append(int8_path)
    elif int8_path.exists():
        # Never leave a quantized file from another export beside this one: the backend would prefer it.
        int8_path.unlink()
        logger.info("removed %s (from an earlier export)", int8_path)

    files = {}
    for path in written:
        runner = OnnxRunner(path, classifier.config)
        outputs = runner.outputs(check_inputs)
        files[path.name] = {
            "precision": runner.precision,
            "megabytes": round(path.stat().st_size / 1e6, 2),
            "check": compare_logits(reference[ONNX_OUTPUT], outputs[ONNX_OUTPUT]),
        }
        if ONNX_AUDIOSET_OUTPUT in reference:
            # AudioSet's classes are independent (sigmoid each): the largest difference of a class probability
            difference = np.abs(_sigmoid(reference[ONNX_AUDIOSET_OUTPUT]) - _sigmoid(outputs[ONNX_AUDIOSET_OUTPUT]))
            files[path.name]["audioset_check"] = {"max_probability_difference": float(difference.max())}
    import onnx
    import onnxruntime

    record = {
        "model_type": classifier.model_type,
        "opset": opset,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "input": {"name": ONNX_INPUT, "shape": ["batch", *example.shape[1:]], "dtype": "float32"},
        "output": {"name": ONNX_OUTPUT, "shape": ["batch", classifier.config.num_labels]},
        "outputs": [ONNX_OUTPUT, *([ONNX_AUDIOSET_OUTPUT] if ONNX_AUDIOSET_OUTPUT in reference else [])],
        "quantization": {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": list(QUANTIZED_OPERATORS),
                         "weight_type": "QInt8"} if quantize else None,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "source_weights": weights_fingerprint(model_dir),
        "check": f"{check_windows} windows of generated music, against PyTorch fp32",
        "files": files,
        "export_s": round(time.perf_counter() - start, 2),
    }
    (onnx_dir / ONNX_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _quantize_openvino(ov_model, calibration: np.ndarray, ignored_patterns: tuple[str, ...] = ()):
    """NNCF post-training int8 of an OpenVINO model: activation ranges from `calibration` input_values (one
    window per calibration item, so `subset_size` counts windows)."""
    import nncf

    dataset = nncf.Dataset([window[None] for window in calibration])
    options = {}
    if ignored_patterns:
        options["ignored_scope"] = nncf.IgnoredScope(patterns=list(ignored_patterns), validate=False)
    return nncf.quantize(ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
                         **options)


def calibration_inputs(classifier, config_path: str | os.PathLike | None, windows: int,
                       model_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """`windows` input_values for int8 calibration, with a line saying where they come from: spread over the
    training split of the run config `config_path`, else generated music."""
    if config_path is None:
        waves = generated_windows(classifier.sampling_rate, classifier.window, windows, seed=1)
        return classifier.features(waves), f"{windows} windows of generated music"
    dataset, _ = _split_windows(model_dir, config_path, "train")
    picked = np.unique(np.linspace(0, len(dataset) - 1, num=min(windows, len(dataset))).round().astype(int))
    inputs = np.asarray(dataset.select(picked.tolist()).with_format("numpy")["input_values"], dtype=np.float32)
    return inputs, f"{len(picked)} windows of the train split of {config_path}"


def export_openvino(model_dir: str | os.PathLike, quantize: str | None = None,
                    calibration: str | os.PathLike | None = None, calibration_windows: int = CALIBRATION_WINDOWS,
                    opset: int = OPSET, check_windows: int = CHECK_WINDOWS) -> dict:
    """Write `model_dir/openvino/` (fp32 IR, plus NNCF int8 with `quantize="int8"`) and `export.json`; returns
    that record. Each IR is run on `check_windows` windows of generated music against PyTorch fp32."""
    import tempfile

    import openvino as ov

    model_dir = Path(model_dir)
    if calibration is not None and quantize is None:
        raise ExportError("--calibration only makes sense with --quantize int8.")
    if calibration_windows < 1:
        raise ExportError(f"--calibration_windows must be at least 1, got {calibration_windows}.")
    start = time.perf_counter()
    classifier, example, check_inputs = _load_for_export(model_dir, quantize, check_windows)
    reference = classifier.runner(check_inputs)

    ov_dir = model_dir / OPENVINO_SUBFOLDER
    ov_dir.mkdir(exist_ok=True)
    fp32_path, int8_path = ov_dir / OPENVINO_FP32_FILE, ov_dir / OPENVINO_INT8_FILE
    with tempfile.TemporaryDirectory(prefix="ov_export_") as tmp:
        onnx_path = Path(tmp) / ONNX_FP32_FILE
        export_fp32(classifier.model, example, onnx_path, opset)
        ov_model = ov.convert_model(str(onnx_path))
    _save_ir(ov_model, fp32_path)
    convert_seconds = time.perf_counter() - start
    written, calibration_record = [fp32_path], None
    if quantize == "int8":
        tick = time.perf_counter()
        inputs, source = calibration_inputs(classifier, calibration, calibration_windows, model_dir)
        _save_ir(_quantize_openvino(ov_model, inputs, classifier.spec.int8_ignored_patterns), int8_path)
        written.append(int8_path)
        calibration_record = {"data": source, "windows": int(len(inputs)),
                              "ignored_patterns": list(classifier.spec.int8_ignored_patterns),
                              "calibration_s": round(time.perf_counter() - tick, 2)}
    else:
        for stale in (int8_path, int8_path.with_suffix(".bin")):
            if stale.exists():  # never beside this export: the backend would prefer it
                stale.unlink()
                logger.info("removed %s (from an earlier export)", stale)

    files = {}
    for path in written:
        runner = OpenVinoRunner(path, classifier.config, bf16=False)
        files[path.name] = {
            "precision": runner.precision,
            "megabytes": round((path.stat().st_size + path.with_suffix(".bin").stat().st_size) / 1e6, 2),
            "check": compare_logits(reference, runner(check_inputs)),
        }
    import nncf

    record = {
        "model_type": classifier.model_type,
        "opset": opset,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False), then openvino.convert_model",
        "input": {"name": ONNX_INPUT, "shape": ["batch", *example.shape[1:]], "dtype": "float32"},
        "output": {"name": ONNX_OUTPUT, "shape": ["batch", classifier.config.num_labels]},
        "quantization": {"method": "nncf.quantize", "model_type": "TRANSFORMER", "calibration": calibration_record}
        if quantize else None,
        "versions": {"torch": torch.__version__, "openvino": ov.__version__, "nncf": nncf.__version__},
        "source_weights": weights_fingerprint(model_dir),
        "check": f"{check_windows} windows of generated music, against PyTorch fp32 (OpenVINO in fp32)",
        "files": files,
        "convert_s": round(convert_seconds, 2),
        "export_s": round(time.perf_counter() - start, 2),
    }
    (ov_dir / ONNX_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _save_ir(ov_model, path: Path) -> None:
    """`ov.save_model` with fp32 weights (its default compresses them to fp16), via a temporary name."""
    import openvino as ov

    tmp = path.with_name(path.stem + ".tmp.xml")
    ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------------
# accuracy on a data split
# --------------------------------------------------------------------------------------------------------------


def _accuracies(probabilities: np.ndarray, labels: np.ndarray, track_ids: list[str]) -> dict[str, float]:
    """Window and track accuracies, from the project's metric module like every other figure of a run."""
    metrics = compute_genre_metrics(probabilities, labels, track_ids)
    return {
        "window_accuracy": float(metrics["accuracy"]),
        "track_accuracy": float(metrics["track_accuracy"]),
        "track_accuracy_vote": float(metrics["track_accuracy_vote"]),
    }


def _split_windows(model_dir: str | os.PathLike, config_path: str | os.PathLike, split: str):
    """(`split` of the run config's data as the model's feature extractor makes it, the model's config)."""
    from .config import parse_config
    from .data import build_datasets
    from .models import spec_for_config
    from .models.factory import load_trained_config, model_windows

    model_dir = Path(model_dir)
    run = parse_config(["--config", str(config_path)])
    config, feature_extractor = load_trained_config(str(model_dir))
    spec = spec_for_config(config)
    if run.model.model_type != spec.name:
        raise ExportError(f"{config_path} trains a {run.model.model_type} model but {model_dir} holds a {spec.name}: "
                          "give the config the model was trained with.")
    data = build_datasets(run.data, feature_extractor, default_window=model_windows(feature_extractor, spec),
                          seed=run.training.seed)
    if split not in data.datasets:
        raise ExportError(f"split {split!r} is not one of {', '.join(data.datasets)}.")
    saved_splits = model_dir / "splits.json"
    if saved_splits.is_file() and sorted(json.loads(saved_splits.read_text()).get(split, [])) != sorted(data.splits[split]):
        logger.warning("The %s split of %s differs from the one in %s: is it the config the model was trained with?",
                       split, config_path, saved_splits)
    return data.datasets[split], config


def check_on_split(model_dir: str | os.PathLike, config_path: str | os.PathLike, split: str = "test",
                   precisions: tuple[str, ...] | None = None, batch_size: int = 16,
                   formats: tuple[str, ...] = ("onnx", "openvino")) -> dict:
    """Each exported file of `model_dir` (ONNX and OpenVINO, as their backends load them) against PyTorch fp32
    on `split` of the run config's data: window top-1 agreement, largest probability difference, window/track
    accuracy of both."""
    from .backends import _LOADERS, _PRECISIONS, _SUBFOLDERS

    model_dir = Path(model_dir)
    dataset, config = _split_windows(model_dir, config_path, split)
    labels = np.asarray(dataset["labels"])
    track_ids = list(dataset["track_id"])

    model, _ = load_trained_model(str(model_dir))
    runners = {"torch fp32": TorchRunner(model, device="cpu", bf16=False)}
    for export_format in formats:
        files = _PRECISIONS[export_format]
        available = [p for p in files if (model_dir / _SUBFOLDERS[export_format] / files[p]).is_file()]
        for precision in (p for p in (precisions or available) if p in available):
            runners[f"{export_format} {precision}"] = _LOADERS[export_format](str(model_dir), config,
                                                                              precision=precision)
    logits = {name: [] for name in runners}
    for first in range(0, len(dataset), batch_size):
        input_values = np.asarray(dataset[first : first + batch_size]["input_values"], dtype=np.float32)
        for name, runner in runners.items():
            logits[name].append(runner(input_values))
    logits = {name: np.concatenate(parts) for name, parts in logits.items()}
    reference = logits["torch fp32"]
    result = {
        "model": str(model_dir),
        "config": str(config_path),
        "split": split,
        "windows": len(labels),
        "tracks": len(set(track_ids)),
        "torch fp32": _accuracies(softmax(reference), labels, track_ids),
    }
    for name in runners:
        if name != "torch fp32":
            result[name] = {
                "file": Path(runners[name].path).name,
                **compare_logits(reference, logits[name]),
                **_accuracies(softmax(logits[name]), labels, track_ids),
            }
    return result


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def format_export(record: dict, model_dir: Path, subfolder: str = ONNX_SUBFOLDER) -> str:
    lines = [f"exported {model_dir} ({record['model_type']}) to {model_dir / subfolder}/ in {record['export_s']:.1f} s "
             f"(opset {record['opset']}, input {record['input']['shape']})"]
    calibration = (record.get("quantization") or {}).get("calibration")
    if calibration:
        lines.append(f"  int8 calibrated on {calibration['data']} in {calibration['calibration_s']:.1f} s")
    for name, info in record["files"].items():
        c = info["check"]
        lines.append(
            f"  {name} ({info['precision']}, {info['megabytes']:.1f} MB): on {c['windows']} windows of generated music vs "
            f"PyTorch fp32, max |probability difference| {c['max_probability_difference']:.2e}, max |logit difference| "
            f"{c['max_logit_difference']:.2e}, top-1 agreement {c['top1_agreement']:.0%}"
        )
    return "\n".join(lines)


def format_check(result: dict) -> str:
    def accuracies(r):
        return (f"window accuracy {r['window_accuracy']:.4f}, track accuracy {r['track_accuracy']:.4f} "
                f"(vote {r['track_accuracy_vote']:.4f})")

    lines = [f"check on the {result['split']} split of {result['config']}: {result['windows']} windows of "
             f"{result['tracks']} tracks", f"  torch fp32: {accuracies(result['torch fp32'])}"]
    for name, r in result.items():
        if name.startswith(("onnx ", "openvino ")):
            lines.append(
                f"  {name} ({r['file']}): top-1 agreement with torch fp32 {r['top1_agreement']:.2%} of windows, max "
                f"|probability difference| {r['max_probability_difference']:.4f}; {accuracies(r)}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ast_dora.export", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for export_format, text in (
        ("onnx", "ONNX (for ONNX Runtime): OUTPUT_DIR/onnx/model.onnx [+ model_quantized.onnx]"),
        ("openvino", "OpenVINO IR: OUTPUT_DIR/openvino/openvino_model.xml/.bin [+ openvino_model_int8.xml/.bin]"),
    ):
        p = sub.add_parser(export_format, help=text)
        p.add_argument("output_dir", metavar="OUTPUT_DIR", help="A saved model folder (a training run's output_dir).")
        p.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                       help="Also write the int8 file: onnx/model_quantized.onnx (dynamic int8 MatMul/Gemm weights); "
                       "openvino/openvino_model_int8.xml (NNCF post-training int8, calibrated).")
        if export_format == "openvino":
            p.add_argument("--calibration", default=None, metavar="CONFIG",
                           help="The run config the model was trained with: calibrate int8 on its train split "
                           "(default: generated music).")
            p.add_argument("--calibration_windows", type=int, default=CALIBRATION_WINDOWS,
                           help=f"Windows to calibrate on (default {CALIBRATION_WINDOWS}).")
        p.add_argument("--check", default=None, metavar="CONFIG",
                       help="A run config (YAML): measure agreement and accuracies on its data's --split.")
        p.add_argument("--split", default="test", help="Split of --check's data (default test).")
        p.add_argument("--min_agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                       help="With --check: exit 1 if an exported file agrees with PyTorch fp32 on fewer windows "
                       "than this fraction (default 0.99).")
        p.add_argument("--no_export", action="store_true",
                       help=f"With --check: check the files already in OUTPUT_DIR/{export_format} instead of exporting.")
        p.add_argument("--json", default=None, metavar="OUT", help="Write the export record (and the check) here.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_dir = Path(args.output_dir)
    result: dict = {}
    try:
        if not args.no_export:
            if args.format == "openvino":
                result["export"] = export_openvino(model_dir, quantize=args.quantize, calibration=args.calibration,
                                                   calibration_windows=args.calibration_windows)
                print(format_export(result["export"], model_dir, OPENVINO_SUBFOLDER))
            else:
                result["export"] = export_onnx(model_dir, quantize=args.quantize)
                print(format_export(result["export"], model_dir))
        elif not args.check:
            raise ExportError("--no_export only makes sense with --check CONFIG.")
        if args.check:
            result["check"] = check_on_split(model_dir, args.check, split=args.split, formats=(args.format,))
            print(format_check(result["check"]))
    except (ExportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.check:
        low = {name: r["top1_agreement"] for name, r in result["check"].items()
               if name.startswith(("onnx ", "openvino ")) and r["top1_agreement"] < args.min_agreement}
        if low:
            print(f"FAILED: top-1 agreement below {args.min_agreement:.2%}: "
                  + ", ".join(f"{name} {value:.2%}" for name, value in low.items()), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
