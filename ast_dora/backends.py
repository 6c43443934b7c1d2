"""What runs the model in song analysis: PyTorch, or ONNX Runtime on an exported copy of the same model.

A backend turns a batch of `input_values` (always computed in torch/numpy, fp32, by `GenreClassifier.features`)
into logits (`runner(input_values)`), or into all of the model's named outputs (`runner.outputs(input_values)`: a
dict of numpy arrays, `logits` and, for an AST-DoRA model with the AudioSet branch, `audioset_logits`, the same
names as the ONNX graph's outputs); `GenreClassifier` calls nothing else of the model, so the rest of the analysis (windows, features,
aggregation, streaming) is the same for both.

- `TorchRunner`: the transformers model under `torch.inference_mode`, in bf16 where the hardware has native bf16
  (see `ast_dora.inference`).
- `OnnxRunner`: an `onnxruntime.InferenceSession` on `OUTPUT_DIR/onnx/model_quantized.onnx` (int8 weights) when
  it is there, else `OUTPUT_DIR/onnx/model.onnx` (fp32), both written by `python -m ast_dora.export onnx
  OUTPUT_DIR [--quantize int8]`. Only the config and feature extractor are loaded besides; the PyTorch weights
  are not needed. CPUs without VNNI/AVX512 run both files too (ONNX Runtime picks its kernels per CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .hardware import cpu_has_fast_bf16
from .models.factory import find_model_file, use_fastest_attention

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
# "auto": onnx for a model that has an ONNX export (`onnx/`), torch for one that has none.
BACKEND_CHOICES = ("auto", *BACKENDS)
# The Hub's layout for ONNX copies of a model (what transformers.js reads): a folder `onnx/` beside config.json.
ONNX_SUBFOLDER = "onnx"
ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model_quantized.onnx"
ONNX_RECORD_FILE = "export.json"  # how the files were made, and from which weights (see `weights_fingerprint`)
ONNX_PRECISIONS = {"int8": ONNX_INT8_FILE, "fp32": ONNX_FP32_FILE}
ONNX_INPUT = "input_values"
ONNX_OUTPUT = "logits"
# The second output of an AST-DoRA model: the pretrained AudioSet classifier's logits (music detection).
ONNX_AUDIOSET_OUTPUT = "audioset_logits"


class BackendError(ValueError):
    """A backend that cannot run this model as asked; the message says what to do."""


def check_backend(backend: str) -> str:
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"backend={backend!r} is not one of {', '.join(BACKEND_CHOICES)}.")
    return backend


def resolve_backend(backend: str, path_or_id: str, **hub_kwargs) -> str:
    """`backend`, with "auto" made "onnx" when the model has an ONNX export and "torch" when it has none."""
    if check_backend(backend) != "auto":
        return backend
    try:
        find_onnx_file(str(path_or_id), **hub_kwargs)
    except BackendError:
        logger.info("%s has no ONNX export: running it in PyTorch (`%s` makes it faster on CPUs)", path_or_id,
                    _export_command(str(path_or_id)))
        return "torch"
    return "onnx"


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


class TorchRunner:
    """A loaded model (ViT-hybrid or merged AST-DoRA) as the analysis calls it: `runner(input_values) -> logits`.

    `bf16=None` runs it in bf16 (weights cast once, forward under bf16 autocast) where the hardware has native
    bf16; the runner owns `model` (moved to `device` and cast in place).
    """

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None, bf16: bool | None = None):
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
        return [ONNX_OUTPUT, *([ONNX_AUDIOSET_OUTPUT] if getattr(self.model, "audioset", None) is not None else [])]

    def __call__(self, input_values: torch.Tensor) -> np.ndarray:
        return self.outputs(input_values, [ONNX_OUTPUT])[ONNX_OUTPUT]

    @torch.inference_mode()
    def outputs(self, input_values: torch.Tensor, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The model's named outputs (`output_names`, or those of `names`) for a batch, float32 numpy arrays."""
        names = self.output_names if names is None else names
        extra = {"output_audioset": True} if ONNX_AUDIOSET_OUTPUT in names else {}
        # Entered per call, never across a `yield` of the streaming analysis: autocast is thread state.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            output = self.model(input_values=input_values.to(self.device, self.dtype), **extra)
        return {name: output[name].float().cpu().numpy() for name in names}

    def describe(self) -> str:
        return f"torch on {self.device}, {self.precision}"


def onnx_threads() -> int:
    """Threads for ONNX Runtime's intra-op pool: as many as PyTorch uses (the cores, or `OMP_NUM_THREADS` /
    `torch.set_num_threads`), so both backends get the same CPUs."""
    return max(1, torch.get_num_threads())


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
        self.output_names = [name for name in (ONNX_OUTPUT, ONNX_AUDIOSET_OUTPUT) if name in outputs]
        self.precision = "int8" if self.path.name == ONNX_INT8_FILE else "fp32"
        self.device = torch.device("cpu")
        self.bf16 = False
        self.model = None

    @property
    def parameters(self) -> int:
        """Elements of the file's weights (initializers), i.e. the model's parameters plus a few constants."""
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return int(sum(np.prod(tensor.dims, dtype=np.int64) for tensor in graph.initializer))

    def __call__(self, input_values: torch.Tensor) -> np.ndarray:
        return self.outputs(input_values, [ONNX_OUTPUT])[ONNX_OUTPUT]

    def outputs(self, input_values: torch.Tensor, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The graph's named outputs (`output_names`, or those of `names`) for a batch. ONNX Runtime prunes the
        nodes that only the outputs not asked for need."""
        names = self.output_names if names is None else names
        array = input_values.detach().to("cpu", torch.float32).numpy()
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


def _export_command(path_or_id: str) -> str:
    return f"python -m ast_dora.export onnx {path_or_id} --quantize int8"


def find_onnx_file(path_or_id: str, precision: str = "auto", **hub_kwargs) -> str:
    """The ONNX file the onnx backend loads: `precision="auto"` takes the int8 file when present, else fp32."""
    if precision not in ("auto", *ONNX_PRECISIONS):
        raise BackendError(f"onnx precision {precision!r} is not one of auto, {', '.join(ONNX_PRECISIONS)}.")
    names = [ONNX_INT8_FILE, ONNX_FP32_FILE] if precision == "auto" else [ONNX_PRECISIONS[precision]]
    for name in names:
        found = find_model_file(path_or_id, f"{ONNX_SUBFOLDER}/{name}", **hub_kwargs)
        if found is not None:
            return found
    wanted = " or ".join(f"{ONNX_SUBFOLDER}/{name}" for name in names)
    raise BackendError(
        f"{path_or_id} has no {wanted}, which backend='onnx' runs. Export it first: `{_export_command(path_or_id)}` "
        "(writes onnx/model.onnx and onnx/model_quantized.onnx), or use backend='torch'."
    )


def check_export_is_current(path_or_id: str, onnx_file: str) -> None:
    """For a local model folder: fail if its weights changed since the export (a retrained run, the same
    output_dir), so the onnx backend never serves an old model. Hub ids are immutable per revision: skipped."""
    if not os.path.isdir(path_or_id):
        return
    record_path = Path(onnx_file).parent / ONNX_RECORD_FILE
    if not record_path.is_file():
        return
    recorded = json.loads(record_path.read_text()).get("source_weights", {})
    present = {name: digest for name, digest in recorded.items() if (Path(path_or_id) / name).is_file()}
    if not present:
        return
    current = weights_fingerprint(path_or_id)
    changed = sorted(name for name, digest in present.items() if current.get(name) != digest)
    if changed:
        raise BackendError(
            f"{Path(path_or_id) / ONNX_SUBFOLDER} was exported from other weights than {', '.join(changed)} in "
            f"{path_or_id} (the model was saved again since). Export it again: `{_export_command(path_or_id)}`."
        )


def load_onnx_runner(path_or_id: str, config, precision: str = "auto", threads: int | None = None,
                     **hub_kwargs) -> OnnxRunner:
    """The onnx backend of a saved model (local folder or Hub id), checked to be exported from its weights."""
    onnx_file = find_onnx_file(str(path_or_id), precision, **hub_kwargs)
    check_export_is_current(str(path_or_id), onnx_file)
    return OnnxRunner(onnx_file, config, threads=threads)


__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "BackendError",
    "ONNX_AUDIOSET_OUTPUT",
    "ONNX_FP32_FILE",
    "ONNX_INT8_FILE",
    "ONNX_RECORD_FILE",
    "ONNX_SUBFOLDER",
    "OnnxRunner",
    "TorchRunner",
    "bf16_available",
    "check_backend",
    "find_onnx_file",
    "load_onnx_runner",
    "onnx_threads",
    "resolve_backend",
    "weights_fingerprint",
]
