"""What runs the model in song analysis: PyTorch, or ONNX Runtime / OpenVINO on an exported copy of the same model.

A backend turns a batch of `input_values` (a float32 numpy array computed by `GenreClassifier.features`) into
logits (`runner(input_values)`, numpy), or into all of the model's named outputs (`runner.outputs(input_values)`:
`logits` and, for an AST-DoRA model with the AudioSet branch, `audioset_logits`, for a musicnn model with its
pretrained tags, `tag_logits`); `GenreClassifier` calls nothing
else of the model, so windows, features, aggregation and streaming are the same for all of them. Every runner
reports the precision it computes in (`runner.precision`: "fp32", "bf16", "int8/fp32", "int8/bf16"), read back
from its runtime, and is safe to call from several threads at once.

Each backend is one module of this package with one `Backend` (`base.py`: its files and upload patterns, export
and quantization, runner, the precision it computes in), registered below; the rest of the project asks the
registry (`get_backend`, `backend_names`, `exported_backends`, `AUTO_ORDER`), never a backend by name. Adding
a backend is one module and one `register_backend` line (docs/architecture.md, "How to add a backend").

`auto` takes the fastest present export, in the order of the backends' `auto_rank` (openvino int8, onnx int8,
openvino fp32, onnx fp32), then torch; an export that fails to load or compile on this CPU is logged in one line
and the next one is tried (a Python error only: a native crash cannot be caught).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..models.factory import find_model_file
from . import onnx as _onnx
from . import openvino as _openvino
from . import torch as _torch
from .base import (
    AUDIOSET_LOGITS,
    CPU,
    INPUT_NAME,
    LOGITS,
    PROBABILITY_TOLERANCE,
    QUANTIZATIONS,
    RECORD_FILE,
    TAG_LOGITS,
    Backend,
    BackendError,
    compare_outputs,
    default_threads,
    extra_output_kwargs,
    extra_output_names,
    tolerance_for,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    if not backend.name or backend.name in ("auto",):
        raise ValueError(f"A backend needs a name other than 'auto', got {backend.name!r}.")
    if backend.name in _REGISTRY and _REGISTRY[backend.name] is not backend:
        raise ValueError(f"A backend named {backend.name!r} is already registered.")
    _REGISTRY[backend.name] = backend
    return backend


register_backend(_torch.BACKEND)  # the first registered is the default and `auto`'s last resort
register_backend(_onnx.BACKEND)
register_backend(_openvino.BACKEND)


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise BackendError(f"backend={name!r} is not one of {', '.join(('auto', *_REGISTRY))}.")
    return _REGISTRY[name]


def exported_backends() -> tuple[Backend, ...]:
    """The backends that run exported files (every one but torch)."""
    return tuple(backend for backend in _REGISTRY.values() if backend.exported)


def auto_order() -> tuple[tuple[str, str], ...]:
    """(backend, file precision) pairs `auto` tries, fastest first (docs/serving.md has the figures)."""
    pairs = [
        (rank, backend.name, precision)
        for backend in exported_backends()
        for precision, rank in backend.auto_rank.items()
    ]
    return tuple((name, precision) for _, name, precision in sorted(pairs))


BACKENDS = backend_names()
# "auto": the fastest export the model has (see `AUTO_ORDER`), torch for one that has none.
BACKEND_CHOICES = ("auto", *BACKENDS)
AUTO_ORDER = auto_order()
DEFAULT_BACKEND = BACKENDS[0]
# Compatibility names (the graph's names and the exported files of the two exported backends).
ONNX_INPUT, ONNX_OUTPUT, ONNX_AUDIOSET_OUTPUT, ONNX_TAGS_OUTPUT, ONNX_RECORD_FILE = (
    INPUT_NAME,
    LOGITS,
    AUDIOSET_LOGITS,
    TAG_LOGITS,
    RECORD_FILE,
)
ONNX_SUBFOLDER, ONNX_FP32_FILE, ONNX_INT8_FILE = _onnx.SUBFOLDER, _onnx.FP32_FILE, _onnx.INT8_FILE
OPENVINO_SUBFOLDER, OPENVINO_FP32_FILE, OPENVINO_INT8_FILE = (
    _openvino.SUBFOLDER,
    _openvino.FP32_FILE,
    _openvino.INT8_FILE,
)
ONNX_PRECISIONS = dict(_onnx.BACKEND.files)
OPENVINO_PRECISIONS = dict(_openvino.BACKEND.files)
FILE_PRECISIONS = tuple(sorted({p for backend in exported_backends() for p in backend.files}))
onnx_threads = default_threads
TorchRunner = _torch.TorchRunner
OnnxRunner = _onnx.OnnxRunner
OpenVinoRunner = _openvino.OpenVinoRunner
bf16_available = _torch.bf16_available
torch_importable = _torch.torch_importable


def check_backend(backend: str) -> str:
    if backend != "auto":
        get_backend(backend)
    return backend


def export_command(path_or_id: str, backend: str) -> str:
    return f"python -m ast_dora.export {backend} {path_or_id} --quantize int8"


def upload_patterns() -> dict[str, tuple[str, ...]]:
    """subfolder -> the file patterns `hub push` uploads of each exported backend (besides export.json)."""
    return {backend.subfolder: backend.upload_patterns for backend in exported_backends()}


def find_export(backend: str | Backend, path_or_id: str, precision: str = "auto", **hub_kwargs) -> str | None:
    """The file `backend` loads (int8 first with `precision="auto"`), or None; its companions are fetched too."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    files = backend.files
    if precision not in ("auto", *files):
        raise BackendError(f"{backend.name} precision {precision!r} is not one of auto, {', '.join(files)}.")
    names = list(files.values()) if precision == "auto" else [files[precision]]
    for name in names:
        found = find_model_file(str(path_or_id), f"{backend.subfolder}/{name}", **hub_kwargs)
        if found is not None:
            for companion in backend.companions.get(name, ()):
                find_model_file(str(path_or_id), f"{backend.subfolder}/{companion}", **hub_kwargs)
            return found
    return None


def missing_export_message(backend: str | Backend, path_or_id: str, precision: str = "auto") -> str:
    backend = get_backend(backend) if isinstance(backend, str) else backend
    names = list(backend.files.values()) if precision == "auto" else [backend.files[precision]]
    wanted = " or ".join(f"{backend.subfolder}/{name}" for name in names)
    return (
        f"{path_or_id} has no {wanted}, which backend='{backend.name}' runs. Export it first: "
        f"`{export_command(path_or_id, backend.name)}`, or use backend='torch'."
    )


def has_export(path_or_id: str, **hub_kwargs) -> bool:
    return any(
        find_export(name, str(path_or_id), precision, **hub_kwargs) is not None
        for name, precision in AUTO_ORDER
    )


def repo_files_have_export(files: list[str]) -> bool:
    """Whether a repo's file list (e.g. the Hub's) holds a file some exported backend runs."""
    wanted = {
        f"{backend.subfolder}/{name}" for backend in exported_backends() for name in backend.files.values()
    }
    return any(f in wanted for f in files)


def check_export_is_current(path_or_id: str, export_file: str) -> None:
    """For a local model folder: fail if its weights changed since the export (a retrained run, the same
    output_dir), so an exported backend never serves an old model. Hub ids are immutable per revision: skipped."""
    if not os.path.isdir(path_or_id):
        return
    export_dir = Path(export_file).parent
    record_path = export_dir / RECORD_FILE
    if not record_path.is_file():
        return
    recorded = json.loads(record_path.read_text()).get("source_weights", {})
    present = {name: digest for name, digest in recorded.items() if (Path(path_or_id) / name).is_file()}
    if not present:
        return
    current = weights_fingerprint(path_or_id)
    changed = sorted(name for name, digest in present.items() if current.get(name) != digest)
    if changed:
        backend = next(
            (b.name for b in exported_backends() if b.subfolder == export_dir.name), export_dir.name
        )
        raise BackendError(
            f"{export_dir} was exported from other weights than {', '.join(changed)} in {path_or_id} (the model "
            f"was saved again since). Export it again: `{export_command(path_or_id, backend)}`."
        )


def load_runner(
    backend: str,
    path_or_id: str,
    config,
    precision: str = "auto",
    threads: int | None = None,
    bf16: bool | None = None,
    **hub_kwargs,
):
    """The runner of an exported backend for a saved model (local folder or Hub id): its file of `precision`
    (int8 first with "auto"), checked to be exported from the model's weights, compiled with `threads` and `bf16`
    (None: as `hardware.resolve_bf16` measures). What predict, the app, `export`'s self-check and `--check` run."""
    backend_obj = get_backend(backend)
    path = find_export(backend_obj, str(path_or_id), precision, **hub_kwargs)
    if path is None:
        raise BackendError(missing_export_message(backend_obj, str(path_or_id), precision))
    check_export_is_current(str(path_or_id), path)
    return backend_obj.load_runner(path, config, threads=threads, bf16=bf16)


def load_export_runner(
    backend: str,
    path_or_id: str,
    config,
    precision: str = "auto",
    threads: int | None = None,
    bf16: bool | None = None,
    **hub_kwargs,
):
    """The runner of an exported backend, or with "auto" the first export of `AUTO_ORDER` that loads on this
    CPU (one log line per one that does not); None when none does (run torch)."""
    if backend != "auto":
        return load_runner(backend, path_or_id, config, precision, threads, bf16, **hub_kwargs)
    if resolve_backend("auto", path_or_id, **hub_kwargs) == DEFAULT_BACKEND:
        return None
    for name, file_precision in AUTO_ORDER:
        if (
            precision not in ("auto", file_precision)
            or find_export(name, str(path_or_id), file_precision, **hub_kwargs) is None
        ):
            continue
        try:
            return load_runner(name, path_or_id, config, file_precision, threads, bf16, **hub_kwargs)
        except Exception as error:  # noqa: BLE001 (a runtime that fails on this CPU: any error, try the next)
            logger.warning(
                "backend auto: the %s %s export of %s did not load here (%s: %s); trying the next",
                name,
                file_precision,
                path_or_id,
                type(error).__name__,
                " ".join(str(error).split())[:300],
            )
    return None


def resolve_backend(backend: str, path_or_id: str, **hub_kwargs) -> str:
    """`backend`, with "auto" made the first backend of `AUTO_ORDER` whose export the model has, else torch
    (whether that export loads on this CPU is `load_export_runner`'s question)."""
    if check_backend(backend) != "auto":
        return backend
    for name, precision in AUTO_ORDER:
        if find_export(name, str(path_or_id), precision, **hub_kwargs) is not None:
            return name
    best = AUTO_ORDER[0][0] if AUTO_ORDER else DEFAULT_BACKEND
    logger.info(
        "%s has no exported copy: running it in %s (`%s` makes it faster on CPUs)",
        path_or_id,
        DEFAULT_BACKEND,
        export_command(str(path_or_id), best),
    )
    return DEFAULT_BACKEND


__all__ = [
    "AUTO_ORDER",
    "AUDIOSET_LOGITS",
    "BACKENDS",
    "BACKEND_CHOICES",
    "Backend",
    "BackendError",
    "CPU",
    "DEFAULT_BACKEND",
    "FILE_PRECISIONS",
    "INPUT_NAME",
    "LOGITS",
    "ONNX_AUDIOSET_OUTPUT",
    "ONNX_FP32_FILE",
    "ONNX_INPUT",
    "ONNX_INT8_FILE",
    "ONNX_OUTPUT",
    "ONNX_PRECISIONS",
    "ONNX_RECORD_FILE",
    "ONNX_SUBFOLDER",
    "ONNX_TAGS_OUTPUT",
    "OPENVINO_FP32_FILE",
    "OPENVINO_INT8_FILE",
    "OPENVINO_PRECISIONS",
    "OPENVINO_SUBFOLDER",
    "OnnxRunner",
    "OpenVinoRunner",
    "PROBABILITY_TOLERANCE",
    "QUANTIZATIONS",
    "RECORD_FILE",
    "TAG_LOGITS",
    "TorchRunner",
    "auto_order",
    "backend_names",
    "bf16_available",
    "check_backend",
    "check_export_is_current",
    "compare_outputs",
    "default_threads",
    "export_command",
    "exported_backends",
    "extra_output_kwargs",
    "extra_output_names",
    "find_export",
    "get_backend",
    "has_export",
    "load_export_runner",
    "load_runner",
    "missing_export_message",
    "onnx_threads",
    "register_backend",
    "repo_files_have_export",
    "resolve_backend",
    "tolerance_for",
    "torch_importable",
    "upload_patterns",
    "weights_fingerprint",
]
