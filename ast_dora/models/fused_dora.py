"""A leaner forward for peft's DoRA linears: the same function with far less activation-sized work.

peft computes a DoRA linear as `base(x) + (m/n - 1) * (base(x) - bias) + (m/n) * s * B(A(x))`, with
`n = ||W + s BA||` per output row (detached, DoRA paper section 4.3). That is algebraically

    y = (m / n) * (W x + s B(A x)) + bias  =  W' x + bias,   W' = (m / n)[:, None] * (W + s B A)

- peft's form runs five full-size elementwise ops, promoted to fp32 under bf16 autocast (the magnitude is an
  fp32 parameter): on the AST's fc1/fc2 (8 windows x 1214 tokens x 3072) most of a training step from the
  frozen-prefix cache (docs/results.md, "Training speed and MFU", has the step times of the three forms; `python -m ast_dora.bench
  train --model_type ast_dora` measures them).
- `_lean_forward` writes the first form: the rank-r product added inside the base GEMM (`addmm`), the per-row
  scale applied once.
- `_FoldedDoRALinear` (CPU) folds everything into the weight, a matrix 9712 / 768 times smaller than the
  activations here: one GEMM with the bias in its epilogue forward, one GEMM for the input gradient, and the
  gradients of A, B and m from rank-r products and one reduction. The rank-r matmuls that
  it avoids run at a tiny fraction of the CPU's matmul peak (oneDNN is not built for an inner size of 2).
  Its magnitude gradient uses `y - bias = (m / n) * (W + s B A) x`, i.e. divides by m: exact unless a
  magnitude is exactly 0, which the forward checks (free on CPU, a host sync on a GPU - where the lean
  forward is used instead).

Only the forward of training changes: the parameters, `state_dict`, saving, merging (`merge_and_unload`) and
inference of a merged model are peft's own. Anything these paths do not cover (adapter dropout in training,
several or disabled adapters, merged weights, trainable base weights, extra forward arguments) falls back to
peft's forward. `tests/test_ast_dora.py` checks both paths against peft's outputs and gradients.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn


class _FoldedDoRALinear(torch.autograd.Function):
    """`(m / n) * (W + s B A) x + bias` as one GEMM, n detached; gradients for x, A, B and m only."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, magnitude, scaling: float, compute_dtype: torch.dtype):
        with torch.no_grad():
            merged = torch.addmm(weight, lora_b, lora_a, alpha=scaling)  # W + s B A, in the parameters' dtype
            scale = magnitude / torch.linalg.norm(merged, dim=1)
            folded = (merged * scale[:, None]).to(compute_dtype)
        x_compute = x.to(compute_dtype)
        bias_compute = None if bias is None else bias.to(compute_dtype)
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are chosen above, as autocast would
            y = F.linear(x_compute, folded, bias_compute)
        ctx.save_for_backward(x_compute, folded, y, lora_a, lora_b, magnitude, scale, bias)
        ctx.scaling, ctx.x_dtype = scaling, x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, folded, y, lora_a, lora_b, magnitude, scale, bias = ctx.saved_tensors
        s = ctx.scaling
        grad_y = grad_y.to(folded.dtype)
        g = grad_y.reshape(-1, grad_y.shape[-1])  # (tokens, out)
        x2 = x.reshape(-1, x.shape[-1])  # (tokens, in)
        grad_x = grad_a = grad_b = grad_m = None
        with torch.autocast(x.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_x = (g @ folded).view(*grad_y.shape[:-1], folded.shape[1]).to(ctx.x_dtype)
            if ctx.needs_input_grad[5]:
                # dL/dm_j = sum_i g_ij [(W + s B A) x_i]_j / n_j = sum_i g_ij (y_ij - bias_j) / m_j
                g_dot_y = (g * y.reshape(g.shape)).sum(0).float()
                if bias is not None:
                    g_dot_y = g_dot_y - bias * g.sum(0).float()
                grad_m = (g_dot_y / magnitude).to(magnitude.dtype)
            if ctx.needs_input_grad[4]:  # dL/dB = s * diag(m/n) g^T (A x)
                down = x2 @ lora_a.to(x2.dtype).t()
                grad_b = ((g.t() @ down).float() * (s * scale)[:, None]).to(lora_b.dtype)
            if ctx.needs_input_grad[3]:  # dL/dA = s * (g diag(m/n) B)^T x
                up = g @ (lora_b * scale[:, None]).to(g.dtype)
                grad_a = (s * (up.t() @ x2).float()).to(lora_a.dtype)
        return grad_x, None, None, grad_a, grad_b, grad_m, None, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def _lean_forward(self: LoraLinear, x: torch.Tensor, adapter: str) -> torch.Tensor:
    base = self.get_base_layer()
    lora_A, lora_B, scaling = self.lora_A[adapter], self.lora_B[adapter], self.scaling[adapter]
    with torch.no_grad():  # detached norm, as in peft and the paper
        norm = torch.linalg.norm(base.weight + scaling * (lora_B.weight @ lora_A.weight), dim=1)
    scale = self.lora_magnitude_vector[adapter].weight / norm
    frozen = F.linear(x, base.weight)
    down = lora_A(x)
    # W x + (s B) (A x) as one addmm: the adapter's rank-r product is added inside the GEMM, so no separate
    # full-size adapter output is written, scaled and added.
    out = torch.addmm(
        frozen.reshape(-1, frozen.shape[-1]),
        down.reshape(-1, down.shape[-1]).to(frozen.dtype),
        (lora_B.weight * scaling).t().to(frozen.dtype),
    ).view(frozen.shape)
    out = out * scale.to(out.dtype)
    # The bias in the output's dtype, as base(x) under autocast would add it.
    return out if base.bias is None else out + base.bias.to(out.dtype)


def _can_fold(x: torch.Tensor, magnitude: torch.Tensor) -> bool:
    """The folded path on CPU, where checking the magnitudes for an exact 0 costs no host sync."""
    return x.device.type == "cpu" and not bool((magnitude == 0).any())


def _fused_dora_forward(self: LoraLinear, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    adapter = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    base = self.get_base_layer()
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or adapter not in self.lora_magnitude_vector
        or (self.training and not isinstance(self.lora_dropout[adapter], nn.Identity))
        or any(p.requires_grad for p in base.parameters())
    ):
        return LoraLinear.forward(self, x, *args, **kwargs)
    magnitude = self.lora_magnitude_vector[adapter].weight
    if _can_fold(x, magnitude):
        return _FoldedDoRALinear.apply(
            x,
            base.weight,
            base.bias,
            self.lora_A[adapter].weight,
            self.lora_B[adapter].weight,
            magnitude,
            self.scaling[adapter],
            _compute_dtype(x),
        )
    return _lean_forward(self, x, adapter)


def fuse_dora_linears(model: nn.Module) -> int:
    """Give every DoRA `peft` linear in `model` the lean forward (per instance); returns how many."""
    fused = 0
    for module in model.modules():
        if isinstance(module, LoraLinear) and module.lora_magnitude_vector:
            module.forward = types.MethodType(_fused_dora_forward, module)
            fused += 1
    return fused


__all__ = ["fuse_dora_linears"]
