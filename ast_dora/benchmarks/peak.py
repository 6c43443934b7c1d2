"""Matmul peak of this machine, measured: the denominator of model-FLOPs utilisation (MFU).

Not a benchmark of its own (no `add_arguments`/`run`): `train` (and any other benchmark that reports a
utilisation) calls `measure_matmul_peak` in the same process as its model timings, so the two figures see the
same CPU, the same thread count and the same load from other processes.
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def _matmul_tflops(
    n: int, dtype: torch.dtype, device: torch.device, seconds: float, repeats: int
) -> tuple[float, bool]:
    """(best TFLOP/s of back-to-back `n x n @ n x n` matmuls, whether one call fitted the time budget).

    Each of the `repeats` timings lasts about `seconds`. A call slower than that (bf16 on a CPU without native
    bf16 is emulated, orders of magnitude slower than fp32: a 2048-square product can take minutes) is
    timed once, on its warm-up, and the caller tries no larger size.
    """
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    flops = 2.0 * n**3

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Warm up (oneDNN/cuBLAS pick their kernels, AMX tiles get configured) and size the timed loop.
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < 0.2 * seconds:
        torch.matmul(a, b, out=out)
        calls += 1
        sync()
        if time.perf_counter() - start > seconds:
            break
    per_call = (time.perf_counter() - start) / calls
    if per_call > seconds:
        return flops / per_call / 1e12, False
    loop = max(1, int(seconds / per_call))
    best = 0.0
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(loop):
            torch.matmul(a, b, out=out)
        sync()
        best = max(best, flops * loop / (time.perf_counter() - start))
    return best / 1e12, True


def measure_matmul_peak(
    dtypes=("bf16", "fp32"),
    sizes: tuple[int, ...] | None = None,
    seconds: float = 1.0,
    repeats: int = 3,
    device=None,
) -> dict[str, float]:
    """`{"bf16": TFLOP/s, "fp32": TFLOP/s}`: the best sustained rate of square matmuls on `device`.

    The best over a few sizes (on CPU the fastest size depends on cache sizes and the AMX/AVX-512 kernels:
    1024, 2048 and 4096; on GPU 8192) and over several repeats, because other processes on a shared machine
    only ever make a timing slower. The highest rate found is the most demanding denominator for MFU. Sizes
    go up from the smallest and stop at the first whose single call outlasts its share of `seconds`, so a
    dtype the hardware only emulates costs seconds, not minutes.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = sorted(sizes or ((8192,) if device.type == "cuda" else (1024, 2048, 4096)))
    peaks = {}
    with torch.inference_mode():
        for name in dtypes:
            peaks[name] = 0.0
            for n in sizes:
                tflops, fitted = _matmul_tflops(n, DTYPES[name], device, seconds / len(sizes), repeats)
                peaks[name] = max(peaks[name], tflops)
                if not fitted:
                    break
    return peaks


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m ast_dora.benchmarks.peak",
        description="Print this machine's measured bf16 and fp32 matmul peak (TFLOP/s).",
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    build_parser().parse_args(argv)
    peaks = measure_matmul_peak()
    print(peaks)
    return peaks


# ----------------------------------------------------------------------------------------------------------
# int8: the exported backends' own int8 matmul
# ----------------------------------------------------------------------------------------------------------


def _best_ops_rate(run, ops: float, seconds: float, repeats: int) -> float:
    """Best TOP/s of `run()` over `repeats` loops of about `seconds` each (after one warm-up call)."""
    start = time.perf_counter()
    run()
    per_call = max(time.perf_counter() - start, 1e-6)
    loop = max(1, int(seconds / per_call))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loop):
            run()
        best = max(best, ops * loop / (time.perf_counter() - start))
    return best / 1e12


def measure_int8_matmul_peak(
    backend: str,
    shape: tuple[int, int, int] = (512, 768, 3072),
    threads: int | None = None,
    seconds: float = 1.0,
    repeats: int = 3,
) -> dict:
    """`{"tops": TOP/s, "shape": [m, k, n], "kernel": ..., "threads": ...}`: the best rate of `backend`'s own int8
    matmul of a transformer layer's shape (tokens x hidden @ hidden x 4 hidden), measured now. 2 m k n operations
    per call, so the figure is comparable with a model's FLOP/s counted the same way."""
    import os

    from ..backends import get_backend

    kernel_of = getattr(get_backend(backend), "int8_matmul", None)
    if kernel_of is None:
        raise ValueError(
            f"backend={backend!r} runs no int8 matmul of its own: the int8 peak is measured for "
            "an exported backend with int8 files (onnx, openvino)."
        )
    threads = int(threads or torch.get_num_threads() or os.cpu_count() or 1)
    m, k, n = shape
    run, kernel = kernel_of(m, k, n, threads)
    return {
        "tops": _best_ops_rate(run, 2.0 * m * k * n, seconds, repeats),
        "shape": [m, k, n],
        "kernel": kernel,
        "threads": threads,
        "backend": backend,
    }


if __name__ == "__main__":
    main()
