"""The torch backend: the saved transformers model itself (merged AST-DoRA or any registered model), in PyTorch.

`bf16=None` (auto) computes in bf16 where it is measured faster than fp32 (`hardware.resolve_bf16(None,
"torch")` on a CPU, `torch.cuda.is_bf16_supported()` on a GPU): the weights are cast once and the forward runs
under bf16 autocast (casting the weights beats autocast alone, which re-casts fp32 activations around every
matmul). `bf16=False` keeps fp32, `True` forces bf16.
"""

from __future__ import annotations

import os

import numpy as np

from .base import LOGITS, Backend, extra_output_kwargs, extra_output_names


def torch_importable() -> bool:
    """Whether PyTorch can be imported here (without importing it)."""
    import importlib.util
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def bf16_available(device) -> bool:
    """Whether `auto` runs a torch model in bf16 on `device`: on CUDA where the GPU supports it, on a CPU where
    the measured probe finds bf16 faster than fp32 (`ast_dora.hardware.bf16_is_faster("torch")`)."""
    import torch

    from ..hardware import resolve_bf16

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and resolve_bf16(None, "torch")


class TorchRunner:
    """A loaded model (ViT-hybrid, merged AST-DoRA, ...) as the analysis calls it: `runner(input_values) -> logits`.

    The runner owns `model` (moved to `device` and cast in place). Calls from several threads at once are safe:
    the forward runs under `inference_mode` and changes no state of the model; autocast is per thread.
    """

    backend = "torch"

    def __init__(self, model, device=None, bf16: bool | None = None):
        import torch

        from ..models.factory import use_fastest_attention

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.bf16 = bf16_available(self.device) if bf16 is None else bool(bf16)
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        self.model = model.eval().to(self.device, self.dtype)
        use_fastest_attention(self.model, self.device, bf16=self.bf16)
        self.config = self.model.config
        # What it computes in: the weights' dtype, read back from the model.
        self.precision = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(
            next(self.model.parameters()).dtype, str(self.dtype)
        )
        self.file_precision = None
        self.path = None

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def output_names(self) -> list[str]:
        return [LOGITS, *extra_output_names(self.model)]

    def __call__(self, input_values) -> np.ndarray:
        """`input_values`: a numpy array (or a torch tensor) of the feature extractor's output."""
        return self.outputs(input_values, [LOGITS])[LOGITS]

    def outputs(self, input_values, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The model's named outputs (`output_names`, or those of `names`) for a batch, float32 numpy arrays."""
        import torch

        names = self.output_names if names is None else names
        extra = extra_output_kwargs(names)
        input_values = torch.as_tensor(input_values)
        # Entered per call, never across a `yield` of the streaming analysis: autocast is thread state.
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
        ):
            output = self.model(input_values=input_values.to(self.device, self.dtype), **extra)
        return {name: output[name].float().cpu().numpy() for name in names}

    def describe(self) -> str:
        return f"torch on {self.device}, computes in {self.precision}"

    def close(self) -> None:
        """Drop the model (its memory goes with the last reference)."""
        self.model = None


class TorchBackend(Backend):
    name = "torch"
    runtime = "torch"
    bf16_engine = "torch"

    def load_runner(
        self,
        path: str | os.PathLike,
        config=None,
        threads: int | None = None,
        bf16: bool | None = None,
        device=None,
        **hub_kwargs,
    ) -> TorchRunner:
        """The saved model at `path` (local folder or Hub id) in PyTorch. `threads` is PyTorch's process-wide
        setting (`torch.set_num_threads`), left as it is."""
        from ..models.factory import load_trained_model

        model, _ = load_trained_model(str(path), **hub_kwargs)
        return TorchRunner(model, device=device, bf16=bf16)


BACKEND = TorchBackend()

__all__ = ["BACKEND", "TorchBackend", "TorchRunner", "bf16_available", "torch_importable"]
