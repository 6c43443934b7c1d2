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

Every export then loads each file as predict and the app load it (`backends.load_runner`: the same precision
resolution, `auto` bf16 included, and the same threads), runs it on a few windows of generated music, speech-like
voices and noise, and compares every output (the genre logits and, for AST-DoRA, the AudioSet logits; for
musicnn, the tag logits) with PyTorch fp32, held to the tolerance of the precision the runner reports it computes
in (`export.json`'s `files.<name>`: `precision`, `check`, `audioset_check`, `tags_check`, `tolerance`, `passed`;
exit status 1 when one fails).
`--check CONFIG` measures it properly: on the test split (`--split`) of the run config CONFIG (the config the
model was trained with, so the same data, split seed and windows; data paths relative to the working
directory), the top-1 agreement of each exported file with PyTorch fp32 over the windows, the largest difference
of any window's probabilities, window and track accuracies of both, and for AST-DoRA the agreement of each
window's music verdict. The exit status is 1 if a file agrees on fewer than `--min_agreement` (default 0.99) of
the windows, on the genre or on the music verdict.

`openvino` converts the same fp32 ONNX graph (made in a temporary folder; `onnx/` is left as it is) with
`openvino.convert_model` and saves the IR in optimum-intel's names, `openvino/openvino_model.xml` + `.bin`
(fp32 weights); `--quantize int8` adds `openvino_model_int8.xml` + `.bin`, NNCF post-training quantization
(`nncf.quantize`, `ModelType.TRANSFORMER`: int8 weights and activations, scales from calibration) on
`--calibration_windows` windows (default 300) of the training split of `--calibration CONFIG` (the config the
model was trained with), else of generated music, plus a quarter of speech-like voices and noise (so the music
check's activation ranges survive quantization). `openvino/export.json` records the same as the onnx one
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
from pathlib import Path

import numpy as np
import torch

from .backends import (
    AUDIOSET_LOGITS,
    INPUT_NAME,
    LOGITS,
    QUANTIZATIONS,
    RECORD_FILE,
    TorchRunner,
    compare_outputs,
    exported_backends,
    get_backend,
    load_runner,
    weights_fingerprint,
)
from .evaluation import compute_genre_metrics, softmax
from .models.factory import load_trained_model

logger = logging.getLogger(__name__)

CHECK_WINDOWS = (
    3  # windows of each kind of sound each export is checked on (a batch size other than the example's)
)
EXAMPLE_BATCH = 2
DEFAULT_MIN_AGREEMENT = 0.99
CALIBRATION_WINDOWS = 300  # windows NNCF computes activation ranges on (its default subset size)
# Share of the calibration windows that are not music (speech-like voices and noise, `data/sounds.py`): the
# music check (AudioSet's head) must tell them apart after quantization, so its activation ranges must span them.
NON_MUSIC_SHARE = 0.25


class ExportError(ValueError):
    """An export or check that cannot be done as asked; the message says what to do."""


def generated_windows(sampling_rate: int, window: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` windows of generated music of different genres, (count, window) float32: realistic inputs for
    comparing two runs of the same model without any data set."""
    from .data import GTZAN_GENRES, synthesize_track

    rng = np.random.default_rng(seed)
    genres = [GTZAN_GENRES[(3 * i) % len(GTZAN_GENRES)] for i in range(count)]
    return np.stack(
        [synthesize_track(g, window / sampling_rate, sampling_rate, rng)[:window] for g in genres]
    )


def non_music_windows(sampling_rate: int, window: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` windows that are not music, (count, window) float32: speech-like voices and white / pink / brown
    noise in turn (`ast_dora.data.sounds`), what the music check must reject."""
    from .data.sounds import NOISE_COLOURS, coloured_noise, speech_like

    rng = np.random.default_rng([seed, 7])
    seconds = window / sampling_rate
    makers = [
        lambda: speech_like(seconds, sampling_rate, rng),
        *[lambda c=c: coloured_noise(c, seconds, sampling_rate, rng) for c in NOISE_COLOURS],
    ]
    return np.stack([makers[i % len(makers)]()[:window] for i in range(count)]).astype(np.float32)


def compare_logits(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far `other` logits are from `reference` ones, window by window."""
    return compare_outputs({LOGITS: reference}, {LOGITS: other})[LOGITS]


def _load_for_export(model_dir: Path, quantize: str | None, check_windows: int):
    """The saved model as song analysis runs it (PyTorch fp32 on CPU), an example batch to trace the export with,
    and the inputs to check each exported file on: `check_windows` windows of generated music, as many of
    speech-like voices and noise (the music check's other side)."""
    from .inference import GenreClassifier

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZATIONS)}.")
    if not (model_dir / "config.json").is_file():
        raise ExportError(
            f"{model_dir} has no config.json: give the output_dir of a training run (a saved model folder)."
        )
    model, feature_extractor = load_trained_model(str(model_dir))
    classifier = GenreClassifier(model, feature_extractor, bf16=False, device="cpu")
    windows = generated_windows(classifier.sampling_rate, classifier.window, EXAMPLE_BATCH + check_windows)
    example = torch.from_numpy(classifier.features(windows[:EXAMPLE_BATCH]))
    other = non_music_windows(classifier.sampling_rate, classifier.window, check_windows)
    check_inputs = classifier.features(np.concatenate([windows[EXAMPLE_BATCH:], other]))
    return classifier, example, check_inputs


def calibration_inputs(
    classifier, config_path: str | os.PathLike | None, windows: int, model_dir: Path | None = None
) -> tuple[np.ndarray, str]:
    """`windows` input_values for int8 calibration, with a line saying where they come from: music (spread over
    the training split of the run config `config_path`, else generated) and, for `NON_MUSIC_SHARE` of them,
    speech-like voices and noise, so the activation ranges span what the music check must reject."""
    other = int(round(windows * NON_MUSIC_SHARE)) if windows > 1 else 0
    music = windows - other
    if config_path is None:
        inputs = classifier.features(
            generated_windows(classifier.sampling_rate, classifier.window, music, seed=1)
        )
        source = f"{music} windows of generated music"
    else:
        dataset, _ = _split_windows(model_dir, config_path, "train")
        picked = np.unique(np.linspace(0, len(dataset) - 1, num=min(music, len(dataset))).round().astype(int))
        inputs = np.asarray(
            dataset.select(picked.tolist()).with_format("numpy")["input_values"], dtype=np.float32
        )
        source = f"{len(picked)} windows of the train split of {config_path}"
    if other:
        waves = non_music_windows(classifier.sampling_rate, classifier.window, other, seed=1)
        inputs = np.concatenate([inputs, classifier.features(waves)])
        source += f" and {other} of speech-like voices and noise"
    return inputs, source


def self_check(
    backend: str,
    model_dir: Path,
    config,
    reference: dict[str, np.ndarray],
    check_inputs: np.ndarray,
    file_precision: str,
    threads: int | None = None,
    bf16: bool | None = None,
) -> dict:
    """One exported file, loaded and compiled as predict and the app load it (`backends.load_runner`: the same
    precision resolution and threads), against PyTorch fp32 on every output; tolerances from the precision the
    runner reports it computes in."""
    runner = load_runner(
        backend, str(model_dir), config, precision=file_precision, threads=threads, bf16=bf16
    )
    backend_obj = get_backend(backend)
    try:
        checked = backend_obj.check(runner, reference, check_inputs)
    finally:
        runner.close()
    path = Path(runner.path)
    sizes = sum(
        p.stat().st_size
        for p in (path, *(path.parent / c for c in backend_obj.companions.get(path.name, ())))
        if p.is_file()
    )
    return {
        "file_precision": file_precision,
        "threads": runner.threads,
        "megabytes": round(sizes / 1e6, 2),
        **checked,
    }


def export_model(
    backend: str,
    model_dir: str | os.PathLike,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    calibration_windows: int = CALIBRATION_WINDOWS,
    check_windows: int = CHECK_WINDOWS,
) -> dict:
    """Write `model_dir/<backend's subfolder>/` (fp32, plus int8 with `quantize="int8"`) and its `export.json`;
    returns that record. Each file is then loaded as it is served and checked against PyTorch fp32 (the
    record's `files.<name>`: `check` for the genre logits, `audioset_check` for the AudioSet logits, `tags_check`
    for musicnn's tag logits, `passed`)."""
    backend_obj = get_backend(backend)
    if not backend_obj.exported:
        raise ExportError(
            f"The {backend} backend runs the saved model itself: export one of "
            f"{', '.join(b.name for b in exported_backends())}."
        )
    model_dir = Path(model_dir)
    if calibration is not None and quantize is None:
        raise ExportError("--calibration only makes sense with --quantize int8.")
    if calibration_windows < 1:
        raise ExportError(f"--calibration_windows must be at least 1, got {calibration_windows}.")
    start = time.perf_counter()
    classifier, example, check_inputs = _load_for_export(model_dir, quantize, check_windows)
    reference = classifier.runner.outputs(check_inputs)
    out_dir = model_dir / backend_obj.subfolder
    out_dir.mkdir(exist_ok=True)
    calibration_record, inputs = None, None
    tick = time.perf_counter()
    if quantize and backend_obj.calibrated:
        inputs, source = calibration_inputs(classifier, calibration, calibration_windows, model_dir)
        calibration_record = {"data": source, "windows": int(len(inputs))}
    made = backend_obj.export(
        classifier.model, example, out_dir, quantize, inputs, tuple(classifier.spec.int8_ignored_patterns)
    )
    if calibration_record is not None:
        calibration_record["calibration_s"] = round(time.perf_counter() - tick, 2)
        made["quantization"]["calibration"] = calibration_record
    record = {
        "model_type": classifier.model_type,
        "backend": backend,
        **made,
        "input": {"name": INPUT_NAME, "shape": ["batch", *example.shape[1:]], "dtype": "float32"},
        "output": {"name": LOGITS, "shape": ["batch", classifier.config.num_labels]},
        "outputs": list(reference),
        "source_weights": weights_fingerprint(model_dir),
        "check": (
            f"{check_windows} windows each of generated music, speech-like voices and noise, against PyTorch "
            "fp32, every output, each file loaded as predict and the app load it"
        ),
        "files": {},
    }
    # Written before the check: the loader refuses an export whose record names other weights.
    (out_dir / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    written = [p for p, name in backend_obj.files.items() if (out_dir / name).is_file()]
    for file_precision in sorted(written, key=lambda p: p != "fp32"):
        record["files"][backend_obj.files[file_precision]] = self_check(
            backend, model_dir, classifier.config, reference, check_inputs, file_precision
        )
    record["export_s"] = round(time.perf_counter() - start, 2)
    (out_dir / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def export_onnx(
    model_dir: str | os.PathLike, quantize: str | None = None, check_windows: int = CHECK_WINDOWS
) -> dict:
    """`export_model("onnx", ...)`: `model_dir/onnx/model.onnx` (+ `model_quantized.onnx`)."""
    return export_model("onnx", model_dir, quantize=quantize, check_windows=check_windows)


def export_openvino(
    model_dir: str | os.PathLike,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    calibration_windows: int = CALIBRATION_WINDOWS,
    check_windows: int = CHECK_WINDOWS,
) -> dict:
    """`export_model("openvino", ...)`: `model_dir/openvino/openvino_model.xml` (+ `_int8.xml`), with .bin."""
    return export_model(
        "openvino",
        model_dir,
        quantize=quantize,
        calibration=calibration,
        calibration_windows=calibration_windows,
        check_windows=check_windows,
    )


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
        raise ExportError(
            f"{config_path} trains a {run.model.model_type} model but {model_dir} holds a {spec.name}: "
            "give the config the model was trained with."
        )
    data = build_datasets(
        run.data,
        feature_extractor,
        default_window=model_windows(feature_extractor, spec),
        seed=run.training.seed,
    )
    if split not in data.datasets:
        raise ExportError(f"split {split!r} is not one of {', '.join(data.datasets)}.")
    saved_splits = model_dir / "splits.json"
    if saved_splits.is_file() and sorted(json.loads(saved_splits.read_text()).get(split, [])) != sorted(
        data.splits[split]
    ):
        logger.warning(
            "The %s split of %s differs from the one in %s: is it the config the model was trained with?",
            split,
            config_path,
            saved_splits,
        )
    return data.datasets[split], config


def check_on_split(
    model_dir: str | os.PathLike,
    config_path: str | os.PathLike,
    split: str = "test",
    precisions: tuple[str, ...] | None = None,
    batch_size: int = 16,
    formats: tuple[str, ...] | None = None,
    threads: int | None = None,
    bf16: bool | None = None,
) -> dict:
    """Each exported file of `model_dir` (every exported backend's, or those of `formats`), loaded as predict and
    the app load it (`backends.load_runner`), against PyTorch fp32 on `split` of the run config's data, on every
    output: genre top-1 agreement and largest probability difference, window and track accuracies of both; for
    a model with the AudioSet branch, the agreement of each window's music verdict (AudioSet "Music" at the
    default threshold) and the largest AudioSet probability difference."""
    from .music_detection import DEFAULT_MIN_MUSIC_PROBABILITY, audioset_labels, music_index

    model_dir = Path(model_dir)
    dataset, config = _split_windows(model_dir, config_path, split)
    labels = np.asarray(dataset["labels"])
    track_ids = list(dataset["track_id"])

    model, _ = load_trained_model(str(model_dir))
    runners = {"torch fp32": TorchRunner(model, device="cpu", bf16=False)}
    backends = [get_backend(name) for name in formats] if formats else list(exported_backends())
    for backend in backends:
        available = [
            p for p, name in backend.files.items() if (model_dir / backend.subfolder / name).is_file()
        ]
        for precision in (p for p in (precisions or available) if p in available):
            runners[f"{backend.name} {precision}"] = load_runner(
                backend.name, str(model_dir), config, precision=precision, threads=threads, bf16=bf16
            )
    names = runners["torch fp32"].output_names
    outputs = {name: {output: [] for output in names} for name in runners}
    for first in range(0, len(dataset), batch_size):
        input_values = np.asarray(dataset[first : first + batch_size]["input_values"], dtype=np.float32)
        for name, runner in runners.items():
            for output, values in runner.outputs(input_values, names).items():
                outputs[name][output].append(values)
    outputs = {name: {o: np.concatenate(parts) for o, parts in per.items()} for name, per in outputs.items()}
    reference = outputs["torch fp32"]
    result = {
        "model": str(model_dir),
        "config": str(config_path),
        "split": split,
        "windows": len(labels),
        "tracks": len(set(track_ids)),
        "torch fp32": _accuracies(softmax(reference[LOGITS]), labels, track_ids),
    }
    music = music_index(audioset_labels(config)) if AUDIOSET_LOGITS in reference else None
    for name, runner in runners.items():
        if name == "torch fp32":
            continue
        compared = compare_outputs(reference, outputs[name])
        result[name] = {
            "file": Path(runner.path).name,
            "precision": runner.precision,
            "threads": runner.threads,
            **compared[LOGITS],
            **_accuracies(softmax(outputs[name][LOGITS]), labels, track_ids),
        }
        if music is not None:
            is_music = [
                1.0 / (1.0 + np.exp(-o[AUDIOSET_LOGITS][:, music])) >= DEFAULT_MIN_MUSIC_PROBABILITY
                for o in (reference, outputs[name])
            ]
            result[name]["audioset"] = {
                **compared[AUDIOSET_LOGITS],
                "music_agreement": float(np.mean(is_music[0] == is_music[1])),
            }
        runner.close()
    return result


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def format_export(record: dict, model_dir: Path, subfolder: str | None = None) -> str:
    subfolder = subfolder or get_backend(record.get("backend", "onnx")).subfolder
    lines = [
        f"exported {model_dir} ({record['model_type']}) to {model_dir / subfolder}/ in {record['export_s']:.1f} s "
        f"(opset {record['opset']}, input {record['input']['shape']})"
    ]
    calibration = (record.get("quantization") or {}).get("calibration")
    if calibration:
        lines.append(
            f"  int8 calibrated on {calibration['data']} in {calibration['calibration_s']:.1f} s "
            "(conversion included)"
        )
    for name, info in record["files"].items():
        c = info["check"]
        line = (
            f"  {name} ({info['file_precision']} file, computes in {info['precision']}, {info['threads']} threads, "
            f"{info['megabytes']:.1f} MB): on {c['windows']} windows of generated music, speech-like voices and "
            f"noise vs PyTorch fp32, max |probability difference| {c['max_probability_difference']:.2e}, top-1 "
            f"agreement {c['top1_agreement']:.0%}"
        )
        if "audioset_check" in info:
            line += f"; AudioSet max |probability difference| {info['audioset_check']['max_probability_difference']:.2e}"
        if "tags_check" in info:
            line += (
                f"; tags max |probability difference| {info['tags_check']['max_probability_difference']:.2e}"
            )
        line += f"; tolerance {info['tolerance']:g}: {'ok' if info['passed'] else 'FAILED'}"
        lines.append(line)
    return "\n".join(lines)


def format_check(result: dict) -> str:
    def accuracies(r):
        return (
            f"window accuracy {r['window_accuracy']:.4f}, track accuracy {r['track_accuracy']:.4f} "
            f"(vote {r['track_accuracy_vote']:.4f})"
        )

    lines = [
        f"check on the {result['split']} split of {result['config']}: {result['windows']} windows of "
        f"{result['tracks']} tracks",
        f"  torch fp32: {accuracies(result['torch fp32'])}",
    ]
    for name, r in _checked(result).items():
        line = (
            f"  {name} ({r['file']}, computes in {r['precision']}): top-1 agreement with torch fp32 "
            f"{r['top1_agreement']:.2%} of windows, max |probability difference| "
            f"{r['max_probability_difference']:.4f}; {accuracies(r)}"
        )
        if "audioset" in r:
            line += (
                f"; music verdict agreement {r['audioset']['music_agreement']:.2%}, AudioSet max |probability "
                f"difference| {r['audioset']['max_probability_difference']:.4f}"
            )
        lines.append(line)
    return "\n".join(lines)


def _checked(result: dict) -> dict:
    """The exported files' rows of a `check_on_split` result."""
    return {name: r for name, r in result.items() if isinstance(r, dict) and "top1_agreement" in r}


def _low_agreement(result: dict, min_agreement: float) -> dict[str, float]:
    """Rows agreeing with torch fp32 on fewer than `min_agreement` of the windows: genre top-1 or music verdict."""
    low = {}
    for name, r in _checked(result).items():
        if r["top1_agreement"] < min_agreement:
            low[name] = r["top1_agreement"]
        if "audioset" in r and r["audioset"]["music_agreement"] < min_agreement:
            low[f"{name} music verdict"] = r["audioset"]["music_agreement"]
    return low


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.export",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for backend in exported_backends():
        p = sub.add_parser(backend.name, help=backend.export_help)
        p.add_argument(
            "output_dir", metavar="OUTPUT_DIR", help="A saved model folder (a training run's output_dir)."
        )
        p.add_argument(
            "--quantize",
            choices=QUANTIZATIONS,
            default=None,
            help=f"Also write the int8 file: {backend.quantize_help}.",
        )
        if backend.calibrated:
            p.add_argument(
                "--calibration",
                default=None,
                metavar="CONFIG",
                help="The run config the model was trained with: calibrate int8 on its train split "
                f"(default: generated music), plus {NON_MUSIC_SHARE:.0%} speech-like voices and noise.",
            )
            p.add_argument(
                "--calibration_windows",
                type=int,
                default=CALIBRATION_WINDOWS,
                help=f"Windows to calibrate on (default {CALIBRATION_WINDOWS}).",
            )
        p.add_argument(
            "--check",
            default=None,
            metavar="CONFIG",
            help="A run config (YAML): measure agreement and accuracies on its data's --split.",
        )
        p.add_argument("--split", default="test", help="Split of --check's data (default test).")
        p.add_argument(
            "--min_agreement",
            type=float,
            default=DEFAULT_MIN_AGREEMENT,
            help="With --check: exit 1 if an exported file agrees with PyTorch fp32 (genre top-1, or the "
            "music verdict of a model with the AudioSet branch) on fewer windows than this fraction "
            "(default 0.99).",
        )
        p.add_argument(
            "--no_export",
            action="store_true",
            help=f"With --check: check the files already in OUTPUT_DIR/{backend.subfolder} instead of "
            "exporting.",
        )
        p.add_argument(
            "--json", default=None, metavar="OUT", help="Write the export record (and the check) here."
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_dir = Path(args.output_dir)
    result: dict = {}
    failed = []
    try:
        if not args.no_export:
            options = {}
            if get_backend(args.format).calibrated:
                options = dict(calibration=args.calibration, calibration_windows=args.calibration_windows)
            result["export"] = export_model(args.format, model_dir, quantize=args.quantize, **options)
            print(format_export(result["export"], model_dir))
            failed = [name for name, info in result["export"]["files"].items() if not info["passed"]]
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
    code = 0
    if failed:
        print(
            f"FAILED: outside the tolerance of their precision on the export's check: {', '.join(failed)}",
            file=sys.stderr,
        )
        code = 1
    if args.check:
        low = _low_agreement(result["check"], args.min_agreement)
        if low:
            print(
                f"FAILED: top-1 agreement below {args.min_agreement:.2%}: "
                + ", ".join(f"{name} {value:.2%}" for name, value in low.items()),
                file=sys.stderr,
            )
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
