"""What this machine computes fast: one answer shared by training (a warning) and inference (the default)."""

from __future__ import annotations


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AMX tiles or AVX512-BF16); elsewhere bf16 is emulated and
    far slower than fp32 (docs/results.md has the figures; `python -m ast_dora.benchmarks.peak` measures them)."""
    import torch  # here: song analysis on an exported backend runs without torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False
