"""What runs the model in song analysis: PyTorch, or ONNX Runtime / OpenVINO on an exported copy of the same model.

A backend turns a batch of `input_values` (a float32 numpy array computed by `GenreClassifier.features`) into
logits (`runner(input_values)`, numpy), or into all of the model's named outputs (`runner.outputs(input_values)`:
a dict of numpy arrays, `logits` and, for an AST-DoRA model with the AudioSet branch, `audioset_logits`, the same
names as the ONNX graph's outputs, which the OpenVINO IR converted from it keeps); `GenreClassifier` calls nothing
else of the model, so the rest of the analysis (windows, features, aggregation, streaming) is the same for all of
them. Only `TorchRunner` imports torch: the onnx and openvino backends run in a process without PyTorch installed.

- `TorchRunner`: the transformers model under `torch.inference_mode`, in bf16 where the hardware has native bf16
  (see `ast_dora.inference`).
- `OnnxRunner`: an `onnxruntime.InferenceSession` on `OUTPUT_DIR/onnx/model_quantized.onnx` (int8 weights) when
  it is there, else `OUTPUT_DIR/onnx/model.onnx` (fp32), both written by `python -m ast_dora.export onnx
  OUTPUT_DIR [--quantize int8]`. Only the config and feature extractor are loaded besides; the PyTorch weights
  are not needed. CPUs without VNNI/AVX512 run both files too (ONNX Runtime picks its kernels per CPU).
- `OpenVinoRunner`: an OpenVINO compiled model on `OUTPUT_DIR/openvino/openvino_model_int8.xml` (NNCF
  post-training int8) when it is there, else `OUTPUT_DIR/openvino/openvino_model.xml` (the fp32 IR, run in bf16
  where the CPU has native bf16, OpenVINO's default), both written by `python -m ast_dora.export openvino
  OUTPUT_DIR [--quantize int8]`. Same call and return form as `OnnxRunner`; the output names are the ONNX
  graph's, carried over by the conversion.

`auto` takes the fastest present export: openvino int8, onnx int8, openvino fp32, onnx fp32, then torch; an
export that fails to load or compile on this CPU is logged in one line and the next one is tried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .models.factory import find_model_file

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
# "auto": the fastest export the model has (see `AUTO_ORDER`), torch for one that has none.
BACKEND_CHOICES = ("auto", *BACKENDS)
# The Hub's layout for ONNX copies of a model (what transformers.js reads): a folder `onnx/` beside config.json.
ONNX_SUBFOLDER = "onnx"
ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model_quantized.onnx"
ONNX_RECORD_FILE = "export.json"  # how the files were made, and from which weights (see `weights_fingerprint`)
ONNX_PRECISIONS = {"int8": ONNX_INT8_FILE, "fp32": ONNX_FP32_FILE}
ONNX_INPUT = "input_values"
ONNX_OUTPUT = "logits"
# OpenVINO IR, in optimum-intel's file names: `openvino/openvino_model.xml` (+ .bin) beside config.json.
OPENVINO_SUBFOLDER = "openvino"
OPENVINO_FP32_FILE = "openvino_model.xml"
OPENVINO_INT8_FILE = "openvino_model_int8.xml"
OPENVINO_PRECISIONS = {"int8": OPENVINO_INT8_FILE, "fp32": OPENVINO_FP32_FILE}
# What `auto` tries, fastest first (docs/serving.md, "OpenVINO backend", has the figures).
AUTO_ORDER = (("openvino", "int8"), ("onnx", "int8"), ("openvino", "fp32"), ("onnx", "fp32"))


class _Device:
    """Where an exported model runs, in the shape of `torch.device` (`.type`), without importing torch."""

    type = "cpu"

    def __eq__(self, other) -> bool:
        return str(other) == "cpu" or getattr(other, "type", None) == "cpu" and getattr(other, "index", None) is None

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return "cpu"

    __repr__ = __str__


CPU = _Device()
# The second output of an AST-DoRA model: the pretrained AudioSet classifier's logits (music detection).
ONNX_AUDIOSET_OUTPUT = "audioset_logits"
# The second output of a musicnn model: the pretrained tag head's logits (`config.tag_labels`; `tags_top`).
ONNX_TAGS_OUTPUT = "tag_logits"


def extra_output_names(model) -> list[str]:
    """The outputs beside `logits` a torch model computes when asked: AudioSet's (AST-DoRA), the tags' (musicnn)."""
    names = [ONNX_AUDIOSET_OUTPUT] if getattr(model, "audioset", None) is not None else []
    return names + ([ONNX_TAGS_OUTPUT] if getattr(getattr(model, "config", None), "tag_labels", None) else [])


def extra_output_kwargs(names) -> dict:
    """The forward flags that make a model return the outputs `names`."""
    return {**({"output_audioset": True} if ONNX_AUDIOSET_OUTPUT in names else {}),
            **({"output_tags": True} if ONNX_TAGS_OUTPUT in names else {})}


class BackendError(ValueError):
    """A backend that cannot run this model as asked; the message says what to do."""


def check_backend(backend: str) -> str:
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"backend={backend!r} is not one of {', '.join(BACKEND_CHOICES)}.")
    return backend


def resolve_backend(backend: str, path_or_id: str, **hub_kwargs) -> str:
    """`backend`, with "auto" made the first backend of `AUTO_ORDER` whose export the model has, else "torch"
    (whether that export loads on this CPU is `load_auto_runner`'s question)."""
    if check_backend(backend) != "auto":
        return backend
    for name, precision in AUTO_ORDER:
        if _find_export(name, str(path_or_id), precision, **hub_kwargs) is not None:
            return name
    logger.info("%s has no ONNX or OpenVINO export: running it in PyTorch (`%s` makes it faster on CPUs)", path_or_id,
                _export_command(str(path_or_id), "openvino"))
    return "torch"


def bf16_available(device) -> bool:
    import torch

    from .hardware import cpu_has_fast_bf16

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


class TorchRunner:
    """A loaded model (ViT-hybrid or merged AST-DoRA) as the analysis calls it: `runner(input_values) -> logits`.

    `bf16=None` runs it in bf16 (weights cast once, forward under bf16 autocast) where the hardware has native
    bf16; the runner owns `model` (moved to `device` and cast in place).
    """

    backend = "torch"

    def __init__(self, model, device=None, bf16: bool | None = None):
        import torch

        from .models.factory import use_fastest_attention

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.bf16 = bf16_available(self.device) if bf16 is None else bool(bf16)
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        self.model = model.eval().to(self.device, self.dtype)
        use_fastest_attention(self.model, self.device, bf16=self.bf16)
        self.config = self.model.config
        self.precision = "bf16" if self.bf16 else "fp32"

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def output_names(self) -> list[str]:
        return [ONNX_OUTPUT, *extra_output_names(self.model)]

    def __call__(self, input_values) -> np.ndarray:
        """`input_values`: a numpy array (or a torch tensor) of the feature extractor's output."""
        return self.outputs(input_values, [ONNX_OUTPUT])[ONNX_OUTPUT]

    def outputs(self, input_values, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The model's named outputs (`output_names`, or those of `names`) for a batch, float32 numpy arrays."""
        import torch

        names = self.output_names if names is None else names
        extra = extra_output_kwargs(names)
        input_values = torch.as_tensor(input_values)
        # Entered per call, never across a `yield` of the streaming analysis: autocast is thread state.
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            output = self.model(input_values=input_values.to(self.device, self.dtype), **extra)
        return {name: output[name].float().cpu().numpy() for name in names}

    def describe(self) -> str:
        return f"torch on {self.device}, {self.precision}"


def onnx_threads() -> int:
    """Threads for an exported model's pool (ONNX Runtime, OpenVINO): as many as PyTorch uses when it is loaded
    (`torch.set_num_threads`), else `OMP_NUM_THREADS`, else the CPUs this process may run on; so every backend
    gets the same CPUs without importing torch for it."""
    import sys

    if "torch" in sys.modules and sys.modules["torch"] is not None:
        return max(1, sys.modules["torch"].get_num_threads())
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class OnnxRunner:
    """An ONNX Runtime session on an exported model: `runner(input_values) -> logits`, on the CPU.

    `config` is the model's `PretrainedConfig` (labels, model type). `threads` defaults to `onnx_threads()`.
    With `OMP_WAIT_POLICY=PASSIVE` in the environment (the setting for shared machines, see `bench song`) the
    pool's threads sleep instead of spinning between runs, as PyTorch's OpenMP threads do then.
    """

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, config, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.config = config
        self.threads = int(threads or onnx_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [ONNX_INPUT] or ONNX_OUTPUT not in outputs:
            raise BackendError(
                f"{self.path} takes {inputs} and returns {outputs}, not {ONNX_INPUT!r} -> {ONNX_OUTPUT!r}: it was not "
                "written by `python -m ast_dora.export onnx`. Export the model again."
            )
        self.output_names = [name for name in (ONNX_OUTPUT, ONNX_AUDIOSET_OUTPUT, ONNX_TAGS_OUTPUT) if name in outputs]
        self.precision = "int8" if self.path.name == ONNX_INT8_FILE else "fp32"
        self.device = CPU
        self.bf16 = False
        self.model = None

    @property
    def parameters(self) -> int:
        """Elements of the file's weights (initializers), i.e. the model's parameters plus a few constants."""
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return int(sum(np.prod(tensor.dims, dtype=np.int64) for tensor in graph.initializer))

    def __call__(self, input_values: np.ndarray) -> np.ndarray:
        return self.outputs(input_values, [ONNX_OUTPUT])[ONNX_OUTPUT]

    def outputs(self, input_values: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The graph's named outputs (`output_names`, or those of `names`) for a batch. ONNX Runtime prunes the
        nodes that only the outputs not asked for need."""
        names = self.output_names if names is None else names
        array = np.ascontiguousarray(np.asarray(input_values, dtype=np.float32))
        return dict(zip(names, self.session.run(names, {ONNX_INPUT: array}), strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.precision} ({self.path.name}, {self.threads} threads)"


def weights_fingerprint(model_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of each top-level `*.safetensors` file of a local model folder: what an export was made from."""
    fingerprint = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        fingerprint[path.name] = digest.hexdigest()
    return fingerprint


def _export_command(path_or_id: str, export_format: str = "onnx") -> str:
    return f"python -m ast_dora.export {export_format} {path_or_id} --quantize int8"


_SUBFOLDERS = {"onnx": ONNX_SUBFOLDER, "openvino": OPENVINO_SUBFOLDER}
_PRECISIONS = {"onnx": ONNX_PRECISIONS, "openvino": OPENVINO_PRECISIONS}


def _find_export(export_format: str, path_or_id: str, precision: str = "auto", **hub_kwargs) -> str | None:
    """The file the `export_format` backend loads (int8 first with `precision="auto"`), or None."""
    files = _PRECISIONS[export_format]
    if precision not in ("auto", *files):
        raise BackendError(f"{export_format} precision {precision!r} is not one of auto, {', '.join(files)}.")
    names = [files["int8"], files["fp32"]] if precision == "auto" else [files[precision]]
    for name in names:
        found = find_model_file(path_or_id, f"{_SUBFOLDERS[export_format]}/{name}", **hub_kwargs)
        if found is not None:
            if export_format == "openvino":  # the weights file beside the IR comes with it
                find_model_file(path_or_id, f"{OPENVINO_SUBFOLDER}/{Path(name).with_suffix('.bin')}", **hub_kwargs)
            return found
    return None


def _missing_export(export_format: str, path_or_id: str, precision: str) -> BackendError:
    files = _PRECISIONS[export_format]
    names = [files["int8"], files["fp32"]] if precision == "auto" else [files[precision]]
    wanted = " or ".join(f"{_SUBFOLDERS[export_format]}/{name}" for name in names)
    return BackendError(
        f"{path_or_id} has no {wanted}, which backend='{export_format}' runs. Export it first: "
        f"`{_export_command(path_or_id, export_format)}` (writes the fp32 and the int8 files), or use backend='torch'."
    )


def find_onnx_file(path_or_id: str, precision: str = "auto", **hub_kwargs) -> str:
    """The ONNX file the onnx backend loads: `precision="auto"` takes the int8 file when present, else fp32."""
    found = _find_export("onnx", path_or_id, precision, **hub_kwargs)
    if found is None:
        raise _missing_export("onnx", path_or_id, precision)
    return found


def find_openvino_file(path_or_id: str, precision: str = "auto", **hub_kwargs) -> str:
    """The IR (.xml) the openvino backend loads: `precision="auto"` takes the int8 file when present, else fp32."""
    found = _find_export("openvino", path_or_id, precision, **hub_kwargs)
    if found is None:
        raise _missing_export("openvino", path_or_id, precision)
    return found


def check_export_is_current(path_or_id: str, export_file: str) -> None:
    """For a local model folder: fail if its weights changed since the export (a retrained run, the same
    output_dir), so an exported backend never serves an old model. Hub ids are immutable per revision: skipped."""
    if not os.path.isdir(path_or_id):
        return
    export_dir = Path(export_file).parent
    record_path = export_dir / ONNX_RECORD_FILE
    if not record_path.is_file():
        return
    recorded = json.loads(record_path.read_text()).get("source_weights", {})
    present = {name: digest for name, digest in recorded.items() if (Path(path_or_id) / name).is_file()}
    if not present:
        return
    current = weights_fingerprint(path_or_id)
    changed = sorted(name for name, digest in present.items() if current.get(name) != digest)
    if changed:
        export_format = "openvino" if export_dir.name == OPENVINO_SUBFOLDER else "onnx"
        raise BackendError(
            f"{export_dir} was exported from other weights than {', '.join(changed)} in {path_or_id} (the model "
            f"was saved again since). Export it again: `{_export_command(path_or_id, export_format)}`."
        )


def load_onnx_runner(path_or_id: str, config, precision: str = "auto", threads: int | None = None,
                     **hub_kwargs) -> OnnxRunner:
    """The onnx backend of a saved model (local folder or Hub id), checked to be exported from its weights."""
    onnx_file = find_onnx_file(str(path_or_id), precision, **hub_kwargs)
    check_export_is_current(str(path_or_id), onnx_file)
    return OnnxRunner(onnx_file, config, threads=threads)


class OpenVinoRunner:
    """An OpenVINO compiled model on an exported IR: `runner(input_values) -> logits`, on the CPU; the same call
    and return form as `OnnxRunner`.

    `config` is the model's `PretrainedConfig`. `threads` (default `onnx_threads()`) is OpenVINO's
    `INFERENCE_NUM_THREADS`; the compiled model is tuned for latency (`PERFORMANCE_HINT` LATENCY: one request
    at a time on all threads). Inference precision is OpenVINO's default for the CPU: bf16 where the CPU has
    native bf16 (AMX / AVX512-BF16), fp32 elsewhere; `bf16=False` keeps fp32 everywhere.
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, config, threads: int | None = None, bf16: bool | None = None):
        import openvino as ov

        self.path = Path(path)
        self.config = config
        self.threads = int(threads or onnx_threads())
        core = ov.Core()
        model = core.read_model(str(self.path))
        inputs = [sorted(i.get_names()) for i in model.inputs]
        outputs = [name for o in model.outputs for name in o.get_names()]
        if len(inputs) != 1 or ONNX_INPUT not in inputs[0] or ONNX_OUTPUT not in outputs:
            raise BackendError(
                f"{self.path} takes {inputs} and returns {outputs}, not {ONNX_INPUT!r} -> {ONNX_OUTPUT!r}: it was not "
                "written by `python -m ast_dora.export openvino`. Export the model again."
            )
        self.output_names = [name for name in (ONNX_OUTPUT, ONNX_AUDIOSET_OUTPUT, ONNX_TAGS_OUTPUT) if name in outputs]
        properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        if bf16 is False:
            properties["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = core.compile_model(model, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type: "f32", "bf16"
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.precision = "int8" if self.path.name == OPENVINO_INT8_FILE else "fp32"
        self.device = CPU
        self.bf16 = False
        self.model = None
        self._parameters = sum(
            int(np.prod(op.get_output_shape(0))) for op in model.get_ops() if op.get_type_name() == "Constant"
        )

    @property
    def parameters(self) -> int:
        """Elements of the IR's constants: the model's weights plus a few shapes and scales."""
        return self._parameters

    def __call__(self, input_values: np.ndarray) -> np.ndarray:
        return self.outputs(input_values, [ONNX_OUTPUT])[ONNX_OUTPUT]

    def outputs(self, input_values: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The IR's named outputs (`output_names`, or those of `names`) for a batch, as `OnnxRunner.outputs`."""
        names = self.output_names if names is None else names
        array = np.ascontiguousarray(np.asarray(input_values, dtype=np.float32))
        result = self.request.infer({0: array})
        return {name: np.array(result[self.compiled.output(name)]) for name in names}

    def describe(self) -> str:
        return (f"openvino {self.precision} ({self.path.name}, inference precision {self.inference_precision}, "
                f"{self.threads} threads)")


def load_openvino_runner(path_or_id: str, config, precision: str = "auto", threads: int | None = None,
                         **hub_kwargs) -> OpenVinoRunner:
    """The openvino backend of a saved model (local folder or Hub id), checked to be exported from its weights."""
    xml_file = find_openvino_file(str(path_or_id), precision, **hub_kwargs)
    check_export_is_current(str(path_or_id), xml_file)
    return OpenVinoRunner(xml_file, config, threads=threads)


_LOADERS = {"onnx": load_onnx_runner, "openvino": load_openvino_runner}


def load_export_runner(backend: str, path_or_id: str, config, precision: str = "auto", threads: int | None = None,
                       **hub_kwargs):
    """The runner of an exported backend ("onnx" or "openvino"), or with "auto" the first export of
    `AUTO_ORDER` that loads on this CPU (one log line per one that does not); None when none does (run torch)."""
    if backend != "auto":
        return _LOADERS[backend](path_or_id, config, precision=precision, threads=threads, **hub_kwargs)
    for name, file_precision in AUTO_ORDER:
        if precision not in ("auto", file_precision) or _find_export(name, str(path_or_id), file_precision,
                                                                       **hub_kwargs) is None:
            continue
        try:
            return _LOADERS[name](path_or_id, config, precision=file_precision, threads=threads, **hub_kwargs)
        except Exception as error:  # noqa: BLE001 (a runtime that fails on this CPU: any error, try the next)
            logger.warning("backend auto: the %s %s export of %s did not load here (%s: %s); trying the next",
                           name, file_precision, path_or_id, type(error).__name__, " ".join(str(error).split())[:300])
    return None


__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "BACKEND_CHOICES",
    "BackendError",
    "ONNX_AUDIOSET_OUTPUT",
    "ONNX_FP32_FILE",
    "ONNX_INT8_FILE",
    "ONNX_RECORD_FILE",
    "ONNX_SUBFOLDER",
    "OPENVINO_FP32_FILE",
    "OPENVINO_INT8_FILE",
    "OPENVINO_SUBFOLDER",
    "OnnxRunner",
    "OpenVinoRunner",
    "TorchRunner",
    "bf16_available",
    "check_backend",
    "find_onnx_file",
    "find_openvino_file",
    "load_export_runner",
    "load_onnx_runner",
    "load_openvino_runner",
    "onnx_threads",
    "resolve_backend",
    "weights_fingerprint",
]
