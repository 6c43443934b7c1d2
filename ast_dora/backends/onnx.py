"""The onnx backend: ONNX Runtime on `OUTPUT_DIR/onnx/model_quantized.onnx` (int8 weights) or `model.onnx` (fp32),
the Hub's ONNX layout (what transformers.js reads).

Export: `torch.onnx.export` (the TorchScript-based one, `dynamo=False`: optimum's exporter only knows
transformers' own architectures, not these remote-code models), opset 18, a dynamic batch axis; input
`input_values`, outputs `logits` (and `audioset_logits` for a model with the AudioSet branch, `tag_logits` for musicnn's
pretrained tags). int8 is
`onnxruntime.quantization.quantize_dynamic`: MatMul and Gemm weights in int8, activations quantized per run;
convolutions, normalisation and softmax stay fp32, so the runner computes in "int8/fp32". ONNX Runtime's CPU
provider has no bf16 kernels: the precision is fp32 whatever `bf16` asks (reported as such).
`InferenceSession.run` is thread-safe: concurrent analyses share one session.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .base import (
    CPU,
    INPUT_NAME,
    LOGITS,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    default_threads,
    extra_output_kwargs,
    extra_output_names,
)

logger = logging.getLogger(__name__)

SUBFOLDER = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"
OPSET = 18
# Operators whose weights dynamic quantization stores in int8: every linear layer and the patch projections'
# matmuls; convolutions, normalisation and softmax stay fp32.
QUANTIZED_OPERATORS = ("MatMul", "Gemm")
# Operators of a quantized graph: their presence is what makes the file compute int8.
INT8_OPERATORS = {
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "ConvInteger",
    "QLinearConv",
    "MatMulIntegerToFloat",
    "DynamicQuantizeLinear",
    "QGemm",
}


def trace_to_onnx(model, example, path: Path, opset: int = OPSET) -> None:
    """`model` (fp32, eval; a torch module) to an ONNX file with a dynamic batch axis, traced on `example`
    input_values; written under a temporary name, then renamed."""
    import torch

    class NamedOutputs(torch.nn.Module):
        """The model as ONNX sees it: `input_values` in, `logits` (and `audioset_logits` for a model with the
        AudioSet branch, `tag_logits` for one with pretrained tags) out: no loss, no ModelOutput."""

        def __init__(self, inner):
            super().__init__()
            self.model = inner
            self.output_names = [LOGITS, *extra_output_names(inner)]

        def forward(self, input_values):
            if len(self.output_names) == 1:
                return (self.model(input_values=input_values).logits,)
            output = self.model(input_values=input_values, **extra_output_kwargs(self.output_names))
            return tuple(output[name] for name in self.output_names)

    # "<name>.tmp" never matches an upload pattern ("*.onnx")
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-level shape checks (constant for a fixed window) and that it is the
        # TorchScript exporter; neither is a problem here, and the export is checked on other batch sizes.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        wrapper = NamedOutputs(model).eval()
        torch.onnx.export(
            wrapper,
            (torch.as_tensor(example),),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=wrapper.output_names,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in wrapper.output_names}},
        )
    os.replace(tmp, path)


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
        quantize_dynamic(
            str(fp32_path),
            str(tmp),
            op_types_to_quantize=list(QUANTIZED_OPERATORS),
            weight_type=QuantType.QInt8,
        )
    finally:
        quantization_logger.setLevel(level)
    os.replace(tmp, int8_path)


def _graph_is_int8(path: Path) -> bool:
    """Whether the file's graph computes int8 anywhere (quantized operators), read from the graph itself."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in INT8_OPERATORS for node in graph.node)


class OnnxRunner:
    """An ONNX Runtime session on an exported model: `runner(input_values) -> logits`, on the CPU.

    `config` is the model's `PretrainedConfig` (labels, model type). `threads` defaults to `default_threads()`.
    With `OMP_WAIT_POLICY=PASSIVE` in the environment (the setting for shared machines, see `bench song`) the
    pool's threads sleep instead of spinning between runs, as PyTorch's OpenMP threads do then.
    """

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, config, threads: int | None = None, bf16: bool | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.config = config
        self.threads = int(threads or default_threads())
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
        if inputs != [INPUT_NAME] or LOGITS not in outputs:
            raise BackendError(
                f"{self.path} takes {inputs} and returns {outputs}, not {INPUT_NAME!r} -> {LOGITS!r}: it was not "
                "written by `python -m ast_dora.export onnx`. Export the model again."
            )
        self.output_names = [name for name in OUTPUT_NAMES if name in outputs]
        # The session's element types are float32 (the CPU provider has no bf16 kernels); the quantized
        # operators of the graph compute int8.
        element_types = {o.type for o in self.session.get_outputs()} | {
            i.type for i in self.session.get_inputs()
        }
        rest = "fp32" if element_types <= {"tensor(float)"} else "/".join(sorted(element_types))
        self.precision = f"int8/{rest}" if _graph_is_int8(self.path) else rest
        self.file_precision = BACKEND.file_precision_of(self.path)
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
        return self.outputs(input_values, [LOGITS])[LOGITS]

    def outputs(self, input_values: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The graph's named outputs (`output_names`, or those of `names`) for a batch. ONNX Runtime prunes the
        nodes that only the outputs not asked for need."""
        names = self.output_names if names is None else names
        array = np.ascontiguousarray(np.asarray(input_values, dtype=np.float32))
        return dict(zip(names, self.session.run(names, {INPUT_NAME: array}), strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.file_precision} ({self.path.name}, computes in {self.precision}, {self.threads} threads)"

    def close(self) -> None:
        self.session = None


class OnnxBackend(Backend):
    name = "onnx"
    runtime = "onnxruntime"
    subfolder = SUBFOLDER
    files = {"int8": INT8_FILE, "fp32": FP32_FILE}
    upload_patterns = ("*.onnx",)
    auto_rank = {"int8": 1, "fp32": 3}
    export_help = "ONNX (for ONNX Runtime): OUTPUT_DIR/onnx/model.onnx [+ model_quantized.onnx]"
    quantize_help = "onnx/model_quantized.onnx (dynamic int8 MatMul/Gemm weights)"

    def export(
        self,
        model,
        example,
        out_dir: Path,
        quantize: str | None = None,
        calibration=None,
        ignored_patterns: tuple[str, ...] = (),
    ) -> dict:
        fp32_path, int8_path = out_dir / FP32_FILE, out_dir / INT8_FILE
        trace_to_onnx(model, example, fp32_path)
        if quantize == "int8":
            quantize_int8(fp32_path, int8_path)
        elif int8_path.exists():
            # Never leave a quantized file from another export beside this one: the backend would prefer it.
            int8_path.unlink()
            logger.info("removed %s (from an earlier export)", int8_path)
        import onnx
        import torch

        return {
            "opset": OPSET,
            "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
            "quantization": {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "op_types": list(QUANTIZED_OPERATORS),
                "weight_type": "QInt8",
            }
            if quantize
            else None,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, **self.versions()},
        }

    def load_runner(self, path, config, threads: int | None = None, bf16: bool | None = None) -> OnnxRunner:
        return OnnxRunner(path, config, threads=threads, bf16=bf16)

    def int8_matmul(self, m: int, k: int, n: int, threads: int):
        """ONNX Runtime's MatMulInteger (uint8 activations x int8 weights -> int32): what its dynamic int8
        quantization runs for every linear layer."""
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w")
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
            "int8_peak",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
            [weight],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"x": rng.integers(0, 256, (m, k), dtype=np.uint8)}
        del onnx
        return lambda: session.run(None, feed), "MatMulInteger u8 x s8"


BACKEND = OnnxBackend()

__all__ = ["BACKEND", "OnnxBackend", "OnnxRunner", "quantize_int8", "trace_to_onnx"]
