"""What every backend provides (`Backend`), and what all of them share: the graph's names, the CPU device, the
thread count, the record of the weights an export came from, and the check of an exported file against PyTorch.

A backend module (`ast_dora/backends/<name>.py`) defines one `Backend` subclass instance; `ast_dora/backends/
__init__.py` registers it (`register_backend`). Nothing here imports a runtime: each backend imports its own
(torch, onnxruntime, openvino) inside its functions, so a process imports only the runtime it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# The graph's names, the same for every exported file (the OpenVINO IR is converted from the ONNX graph).
INPUT_NAME = "input_values"
LOGITS = "logits"
# The second output of an AST-DoRA model: the pretrained AudioSet classifier's logits (music detection).
AUDIOSET_LOGITS = "audioset_logits"
# The second output of a musicnn model: the pretrained tag head's logits (`config.tag_labels`; `tags_top`).
TAG_LOGITS = "tag_logits"
OUTPUT_NAMES = (LOGITS, AUDIOSET_LOGITS, TAG_LOGITS)
# Each extra output -> the forward flag that makes a model return it (`output_audioset=True`, ...).
_OUTPUT_FLAGS = {AUDIOSET_LOGITS: "output_audioset", TAG_LOGITS: "output_tags"}
RECORD_FILE = "export.json"  # how an export's files were made, and from which weights (`weights_fingerprint`)
# Largest difference of a window's probability (softmax over genres; sigmoid per AudioSet class) from PyTorch
# fp32 that an export's self-check accepts, by the precision the runner reports it computes in (the coarsest
# part of it: "int8/bf16" is held to int8's). fp32 is rounding in another order; bf16 keeps 8 bits of
# mantissa; int8 weights and activations are the coarsest.
PROBABILITY_TOLERANCE = {"fp32": 1e-4, "bf16": 0.03, "int8": 0.1}
QUANTIZATIONS = ("int8",)


class BackendError(ValueError):
    """A backend that cannot run this model as asked; the message says what to do."""


class _Device:
    """Where an exported model runs, in the shape of `torch.device` (`.type`), without importing torch."""

    type = "cpu"

    def __eq__(self, other) -> bool:
        return (
            str(other) == "cpu"
            or getattr(other, "type", None) == "cpu"
            and getattr(other, "index", None) is None
        )

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return "cpu"

    __repr__ = __str__


CPU = _Device()


def default_threads() -> int:
    """Threads for an exported model's pool (ONNX Runtime, OpenVINO): as many as PyTorch uses when it is loaded
    (`torch.set_num_threads`), else `OMP_NUM_THREADS`, else the CPUs this process may run on; so every backend
    gets the same CPUs without importing torch for it."""
    import sys

    if "torch" in sys.modules and sys.modules["torch"] is not None:
        return max(1, sys.modules["torch"].get_num_threads())
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


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


def extra_output_names(model) -> list[str]:
    """The outputs beside `logits` a torch model computes when asked, in `OUTPUT_NAMES` order: AudioSet's for a
    model with the AudioSet branch (AST-DoRA), the pretrained tags' for one whose config names tags (musicnn).
    Read from attributes only (no torch import)."""
    names = [AUDIOSET_LOGITS] if getattr(model, "audioset", None) is not None else []
    return names + ([TAG_LOGITS] if getattr(getattr(model, "config", None), "tag_labels", None) else [])


def extra_output_kwargs(names) -> dict[str, bool]:
    """The forward flags that make a model return the outputs `names` (e.g. `{"output_audioset": True}`)."""
    return {flag: True for name, flag in _OUTPUT_FLAGS.items() if name in names}


def tolerance_for(precision: str) -> float:
    """The self-check's probability tolerance for a reported precision ("fp32", "bf16", "int8/fp32", ...)."""
    parts = precision.split("/")
    return max(PROBABILITY_TOLERANCE[part] for part in parts)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def compare_outputs(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """How far each named output of `other` is from `reference`, window by window: genre logits as softmax
    probabilities (top-1 agreement, largest probability and logit difference), AudioSet and tag logits as
    independent sigmoid probabilities (largest difference, agreement of each window's top class)."""
    result = {}
    for name, ref in reference.items():
        out = np.asarray(other[name])
        p, q = (_softmax(ref), _softmax(out)) if name == LOGITS else (_sigmoid(ref), _sigmoid(out))
        result[name] = {
            "windows": int(len(ref)),
            "top1_agreement": float(np.mean(p.argmax(axis=1) == q.argmax(axis=1))),
            "max_probability_difference": float(np.abs(p - q).max()),
            "max_logit_difference": float(np.abs(np.asarray(ref, dtype=np.float64) - out).max()),
        }
    return result


class Backend:
    """One way of running a model in song analysis. A subclass fills in the class attributes and the three
    methods; `ast_dora/backends/__init__.py` registers one instance (`register_backend`).

    - `name`: what `backend=` / `--backend` calls it; `runtime`: the package its runner imports.
    - `subfolder` and `files`: where its exported files live beside config.json, by the precision of the file
      ("int8", "fp32"; None / {} for a backend that runs the saved model itself); `companions` the files that
      travel with one (OpenVINO's `.bin` beside its `.xml`); `upload_patterns` what `hub push` uploads of it.
    - `auto_rank`: the file precision -> its place in `auto`'s order (lower first: the faster), over all backends.
    - `calibrated`: whether its int8 quantization needs calibration inputs (post-training static).
    - `bf16_engine`: the engine whose measured bf16 speed (`hardware.resolve_bf16`) decides its `auto`
      precision; None for a backend that always computes fp32 (apart from int8 layers).
    - `export(model, example, out_dir, quantize, calibration, ignored_patterns)`: write its files from a torch
      model (fp32, eval); returns the record's backend part (exporter, quantization, versions).
    - `check(runner, reference, inputs)`: the self-check of a loaded runner against PyTorch fp32's outputs.
    - `load_runner(path, config, threads, bf16)`: the runner of one of its files (`runner(input_values) ->
      logits`, `runner.outputs(...)`, `runner.precision`: the precision it computes in, read back from the
      runtime; `runner.describe()`, `runner.close()`); it must be safe to call from several threads at once.
    - optional `int8_matmul(m, k, n, threads) -> (run, kernel)`: one int8 linear layer in its runtime, as its int8
      files compute it (`bench song`'s int8 peak, `ast_dora/benchmarks/peak.py`).
    """

    name: str = ""
    runtime: str = ""
    subfolder: str | None = None
    files: Mapping[str, str] = {}
    companions: Mapping[str, tuple[str, ...]] = {}
    upload_patterns: tuple[str, ...] = ()
    auto_rank: Mapping[str, int] = {}
    calibrated: bool = False
    bf16_engine: str | None = None
    export_help: str = ""

    @property
    def exported(self) -> bool:
        """Whether it runs exported files (else the saved model itself)."""
        return self.subfolder is not None

    def file_precision_of(self, path: str | os.PathLike) -> str:
        """Which of `files` this path is ("int8" / "fp32")."""
        name = Path(path).name
        for precision, file_name in self.files.items():
            if file_name == name:
                return precision
        raise BackendError(
            f"{path} is not one of the {self.name} backend's files ({', '.join(self.files.values())})."
        )

    def export(
        self,
        model,
        example,
        out_dir: Path,
        quantize: str | None = None,
        calibration: np.ndarray | None = None,
        ignored_patterns: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        raise BackendError(
            f"The {self.name} backend runs the saved model itself: there is nothing to export."
        )

    def load_runner(
        self, path: str | os.PathLike, config, threads: int | None = None, bf16: bool | None = None
    ):
        raise NotImplementedError

    def check(self, runner, reference: Mapping[str, np.ndarray], inputs: np.ndarray) -> dict[str, Any]:
        """The self-check of a loaded runner: every output on `inputs` against `reference` (PyTorch fp32's),
        held to the tolerance of the precision the runner reports it computes in. A backend whose runtime has
        its own caveats may widen it; the result says what was compared and whether it `passed`."""
        compared = compare_outputs(reference, runner.outputs(inputs))
        tolerance = tolerance_for(runner.precision)
        result = {"precision": runner.precision, "tolerance": tolerance, "check": compared[LOGITS]}
        if AUDIOSET_LOGITS in compared:
            result["audioset_check"] = compared[AUDIOSET_LOGITS]
        if TAG_LOGITS in compared:
            result["tags_check"] = compared[TAG_LOGITS]
        result["passed"] = all(c["max_probability_difference"] <= tolerance for c in compared.values())
        return result

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {self.runtime: version(self.runtime)}
        except PackageNotFoundError:
            return {}

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def read_record(export_dir: str | os.PathLike) -> dict:
    path = Path(export_dir) / RECORD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


__all__ = [
    "AUDIOSET_LOGITS",
    "Backend",
    "BackendError",
    "CPU",
    "INPUT_NAME",
    "LOGITS",
    "OUTPUT_NAMES",
    "PROBABILITY_TOLERANCE",
    "QUANTIZATIONS",
    "RECORD_FILE",
    "TAG_LOGITS",
    "compare_outputs",
    "default_threads",
    "extra_output_kwargs",
    "extra_output_names",
    "read_record",
    "tolerance_for",
    "weights_fingerprint",
]
