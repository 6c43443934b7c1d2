"""The openvino backend: OpenVINO on `OUTPUT_DIR/openvino/openvino_model_int8.xml` (NNCF post-training int8) or
`openvino_model.xml` (fp32 weights), each with its `.bin`, in optimum-intel's file names.

Export: the same fp32 ONNX graph as the onnx backend's (traced into a temporary folder), converted with
`openvino.convert_model` and saved with fp32 weights; int8 is `nncf.quantize` (`ModelType.TRANSFORMER`: int8
weights and activations, scales from calibration inputs; the model spec's `int8_ignored_patterns` stay float).

Precision: OpenVINO computes in bf16 on a CPU with native bf16 unless told otherwise, so the runner always sets
`INFERENCE_PRECISION_HINT`: "f32" for `bf16=False`, "bf16" for `True`, and for `None` (auto) what the measured
probe finds faster (`hardware.resolve_bf16(None, "openvino")`). What the compiled model then computes in is
read back from its runtime graph (each execution node's `runtimePrecision`): "fp32", "bf16", "int8/fp32" or
"int8/bf16". A CPU without bf16 compiles a bf16 hint as f32, and the runner says fp32.

Threads: one process-wide `openvino.Core`; one compiled model per runner; each concurrent call takes an infer
request of its own from the runner's pool (an infer request is not safe to share between threads).
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
from pathlib import Path

import numpy as np

from .base import CPU, INPUT_NAME, LOGITS, OUTPUT_NAMES, Backend, BackendError, default_threads

logger = logging.getLogger(__name__)

SUBFOLDER = "openvino"
FP32_FILE = "openvino_model.xml"
INT8_FILE = "openvino_model_int8.xml"
# Execution nodes whose precision is the model's: the matmuls and convolutions (the rest follows them).
COMPUTE_LAYERS = {"FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Deconvolution"}
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}

_core = None
_core_lock = threading.Lock()


def openvino_core():
    """The process's one `openvino.Core` (each Core holds its own plugins and thread pools)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def computed_precision(compiled) -> str:
    """What a compiled model computes in, read back from its runtime graph: "fp32", "bf16", "int8/fp32", ..."""
    found = set()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) not in COMPUTE_LAYERS:
            continue
        found.add(
            _PRECISION_NAMES.get(info["runtimePrecision"].astype(str), info["runtimePrecision"].astype(str))
        )
    floats = sorted(found - {"int8"})
    if not floats:  # every matmul in int8: the rest computes in the precision the hint gave
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        floats = [_PRECISION_NAMES.get(hint, hint)]
    float_precision = "bf16" if "bf16" in floats else floats[0]
    return f"int8/{float_precision}" if "int8" in found else float_precision


class OpenVinoRunner:
    """An OpenVINO compiled model on an exported IR: `runner(input_values) -> logits`, on the CPU; the same call
    and return form as `OnnxRunner`.

    `config` is the model's `PretrainedConfig`. `threads` (default `default_threads()`) is OpenVINO's
    `INFERENCE_NUM_THREADS`; the compiled model is tuned for latency (`PERFORMANCE_HINT` LATENCY). `bf16`: see
    the module's docstring; `precision` is what it computes in, read back after compiling.
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, config, threads: int | None = None, bf16: bool | None = None):
        from ..hardware import resolve_bf16

        self.path = Path(path)
        self.config = config
        self.threads = int(threads or default_threads())
        core = openvino_core()
        model = core.read_model(str(self.path))
        inputs = [sorted(i.get_names()) for i in model.inputs]
        outputs = [name for o in model.outputs for name in o.get_names()]
        if len(inputs) != 1 or INPUT_NAME not in inputs[0] or LOGITS not in outputs:
            raise BackendError(
                f"{self.path} takes {inputs} and returns {outputs}, not {INPUT_NAME!r} -> {LOGITS!r}: it was not "
                "written by `python -m ast_dora.export openvino`. Export the model again."
            )
        self.output_names = [name for name in OUTPUT_NAMES if name in outputs]
        want_bf16 = resolve_bf16(bf16, "openvino", self.threads)
        properties = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": "bf16" if want_bf16 else "f32",
        }
        from ..signal_stack import preserved_signal_stack

        with preserved_signal_stack():  # the CPU plugin replaces this thread's signal stack (signal_stack.py)
            self.compiled = core.compile_model(model, "CPU", properties)
        self.precision = computed_precision(self.compiled)
        self.bf16 = "bf16" in self.precision
        self.file_precision = BACKEND.file_precision_of(self.path)
        self.device = CPU
        self.model = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._outputs = {name: self.compiled.output(name) for name in self.output_names}
        self._parameters = sum(
            int(np.prod(op.get_output_shape(0))) for op in model.get_ops() if op.get_type_name() == "Constant"
        )

    @property
    def parameters(self) -> int:
        """Elements of the IR's constants: the model's weights plus a few shapes and scales."""
        return self._parameters

    def __call__(self, input_values: np.ndarray) -> np.ndarray:
        return self.outputs(input_values, [LOGITS])[LOGITS]

    def outputs(self, input_values: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The IR's named outputs (`output_names`, or those of `names`) for a batch, as `OnnxRunner.outputs`."""
        names = self.output_names if names is None else names
        array = np.ascontiguousarray(np.asarray(input_values, dtype=np.float32))
        try:
            request = self._requests.get_nowait()
        except queue.Empty:  # every request is busy in another thread: one more
            request = self.compiled.create_infer_request()
        try:
            result = request.infer({0: array})
            return {name: np.array(result[self._outputs[name]]) for name in names}
        finally:
            self._requests.put(request)

    def describe(self) -> str:
        return (
            f"openvino {self.file_precision} ({self.path.name}, computes in {self.precision}, "
            f"{self.threads} threads)"
        )

    def close(self) -> None:
        """Release the infer requests and the compiled model (and with them OpenVINO's hold on their memory)."""
        while True:
            try:
                self._requests.get_nowait()
            except queue.Empty:
                break
        self._outputs = {}
        self.compiled = None


def save_ir(ov_model, path: Path) -> None:
    """`ov.save_model` with fp32 weights (its default compresses them to fp16), atomically as a pair: written
    under a temporary name that no upload pattern matches (`.<name>.tmp-xml` / `.tmp-bin`), then the `.bin`
    renamed into place before the `.xml`, so an `.xml` is never beside a `.bin` it was not saved with."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix=".ov_save_", dir=path.parent) as tmp:
        tmp_xml = Path(tmp) / path.name
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp_xml, path)


def _quantize(ov_model, calibration: np.ndarray, ignored_patterns: tuple[str, ...] = ()):
    """NNCF post-training int8 of an OpenVINO model: activation ranges from `calibration` input_values (one
    window per calibration item, so `subset_size` counts windows)."""
    import nncf

    dataset = nncf.Dataset([window[None] for window in calibration])
    options = {}
    if ignored_patterns:
        options["ignored_scope"] = nncf.IgnoredScope(patterns=list(ignored_patterns), validate=False)
    from ..signal_stack import preserved_signal_stack

    with preserved_signal_stack():  # calibration compiles the model on this thread (signal_stack.py)
        return nncf.quantize(
            ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration), **options
        )


class OpenVinoBackend(Backend):
    name = "openvino"
    runtime = "openvino"
    subfolder = SUBFOLDER
    files = {"int8": INT8_FILE, "fp32": FP32_FILE}
    companions = {INT8_FILE: ("openvino_model_int8.bin",), FP32_FILE: ("openvino_model.bin",)}
    upload_patterns = ("*.xml", "*.bin")
    auto_rank = {"int8": 0, "fp32": 2}
    calibrated = True
    bf16_engine = "openvino"
    export_help = "OpenVINO IR: OUTPUT_DIR/openvino/openvino_model.xml/.bin [+ openvino_model_int8.xml/.bin]"
    quantize_help = "openvino/openvino_model_int8.xml (NNCF post-training int8, calibrated)"

    def export(
        self,
        model,
        example,
        out_dir: Path,
        quantize: str | None = None,
        calibration: np.ndarray | None = None,
        ignored_patterns: tuple[str, ...] = (),
    ) -> dict:
        import openvino as ov

        from .onnx import FP32_FILE as ONNX_FILE
        from .onnx import OPSET, trace_to_onnx

        fp32_path, int8_path = out_dir / FP32_FILE, out_dir / INT8_FILE
        with tempfile.TemporaryDirectory(prefix="ov_export_") as tmp:
            onnx_path = Path(tmp) / ONNX_FILE
            trace_to_onnx(model, example, onnx_path)
            ov_model = ov.convert_model(str(onnx_path))
        save_ir(ov_model, fp32_path)
        if quantize == "int8":
            if calibration is None:
                raise BackendError("OpenVINO int8 needs calibration inputs.")
            save_ir(_quantize(ov_model, calibration, ignored_patterns), int8_path)
        else:
            for stale in (int8_path, int8_path.with_suffix(".bin")):
                if stale.exists():  # never beside this export: the backend would prefer it
                    stale.unlink()
                    logger.info("removed %s (from an earlier export)", stale)
        import nncf
        import torch

        return {
            "opset": OPSET,
            "exporter": "torch.onnx.export (TorchScript, dynamo=False), then openvino.convert_model",
            "quantization": {
                "method": "nncf.quantize",
                "model_type": "TRANSFORMER",
                "ignored_patterns": list(ignored_patterns),
            }
            if quantize
            else None,
            "versions": {"torch": torch.__version__, "openvino": ov.__version__, "nncf": nncf.__version__},
        }

    def load_runner(
        self, path, config, threads: int | None = None, bf16: bool | None = None
    ) -> OpenVinoRunner:
        return OpenVinoRunner(path, config, threads=threads, bf16=bf16)

    def int8_matmul(self, m: int, k: int, n: int, threads: int):
        """OpenVINO's int8 matmul, in the pattern NNCF's int8 export gives a linear layer: fp32 activations through a
        FakeQuantize (u8), int8 weights dequantized by a scale, MatMul; the CPU plugin runs it as one int8 kernel."""
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops

        rng = np.random.default_rng(0)
        x = ops.parameter([m, k], ov.Type.f32, name="x")
        low, high = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
        quantized = ops.fake_quantize(x, low, high, low, high, 256)
        weight = ops.constant(rng.integers(-127, 128, (n, k), dtype=np.int8))
        weight = ops.multiply(
            ops.convert(weight, ov.Type.f32), ops.constant(np.full((n, 1), 0.01, np.float32))
        )
        model = ov.Model([ops.matmul(quantized, weight, False, True)], [x], "int8_peak")
        from ..signal_stack import preserved_signal_stack

        with preserved_signal_stack():  # the CPU plugin replaces this thread's signal stack (signal_stack.py)
            compiled = openvino_core().compile_model(
                model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            )
        kernels = set()
        for (
            node
        ) in compiled.get_runtime_model().get_ops():  # the executed graph: each node's kernel and precision
            info = node.get_rt_info()
            layer = info["layerType"].astype(str)
            if layer in ("FullyConnected", "MatMul"):
                kernels.add(
                    f"{layer} {info['runtimePrecision'].astype(str)} {info['primitiveType'].astype(str)}"
                )
        kernels = sorted(kernels)
        request = compiled.create_infer_request()
        data = rng.uniform(0, 4, (m, k)).astype(np.float32)
        return lambda: request.infer({0: data}), "FakeQuantize u8 x i8 MatMul, runs as " + (
            ",".join(kernels) or "?"
        )


BACKEND = OpenVinoBackend()

__all__ = ["BACKEND", "OpenVinoBackend", "OpenVinoRunner", "computed_precision", "openvino_core", "save_ir"]
