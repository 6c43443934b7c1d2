"""What this machine computes fast: one answer shared by training, song analysis and the exported backends.

Whether bf16 pays is decided by measuring it, not by a CPU flag: a CPU with native bf16 instructions (AMX,
AVX512-BF16) can still run torch's bf16 matmuls slower than fp32, while OpenVINO's bf16 kernels on the same CPU
are fast. `bf16_is_faster(engine)` times a short bf16-vs-fp32 matmul probe in that engine, once per machine,
and caches the answer (`probe_cache_path()`); a CPU without native bf16 is answered without a probe (bf16 is
emulated there: never faster). An explicit setting (`bf16=True/False`, `--no_bf16`, a config's `bf16:`) always
wins over the probe; the environment variable `AST_DORA_BF16_PROBE=faster|slower` forces the probe's answer
(tests, or a machine where the probe is not wanted).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

ENGINES = ("torch", "openvino")
FORCE_ENV = "AST_DORA_BF16_PROBE"
# Matmul shapes of the models' transformer layers (tokens x hidden @ hidden x 4 hidden): the probe measures what
# the models run, not the best square size.
PROBE_SHAPE = (512, 768, 3072)
PROBE_SECONDS = 0.25  # per dtype and repeat


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AMX tiles or AVX512-BF16); elsewhere bf16 is emulated and
    far slower than fp32. Native instructions are necessary for bf16 to pay, not sufficient: `bf16_is_faster`."""
    import torch  # here: song analysis on an exported backend runs without torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False


def cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo`), e.g. "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16_flags() -> bool:
    """Native bf16 from the CPU's flags alone (no torch import): AMX-BF16 or AVX512-BF16."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def _engine_version(engine: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(engine)
    except PackageNotFoundError:
        return "absent"


def _machine_key(engine: str, threads: int) -> str:
    """What the probe's answer depends on: the CPU, its bf16 flags, the engine's version and the threads."""
    flags = ",".join(sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f or f.startswith("avx512")))
    raw = f"{cpu_name()}|{flags}|{engine}=={_engine_version(engine)}|threads={threads}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def probe_cache_path() -> Path:
    root = os.environ.get("AST_DORA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        __name__.split(".")[0],  # the package's
    )
    return Path(root) / "bf16_probe.json"


def _best_rate(run, flops: float, seconds: float, repeats: int = 3) -> float:
    """Best TFLOP/s of `run()` over `repeats` timed loops of about `seconds` each (a shared machine only ever
    slows a timing down, so the best is the machine's)."""
    start = time.perf_counter()
    run()  # warm-up: kernels chosen, AMX tiles configured
    per_call = time.perf_counter() - start
    if per_call > seconds:  # emulated bf16: one call outlasts the budget; that call is the answer
        return flops / per_call / 1e12
    loop = max(1, int(seconds / max(per_call, 1e-6)))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loop):
            run()
        best = max(best, flops * loop / (time.perf_counter() - start))
    return best / 1e12


def _probe_torch(threads: int, seconds: float) -> dict[str, float]:
    import torch

    m, k, n = PROBE_SHAPE
    rates = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                a = torch.randn(m, k).to(dtype)
                b = torch.randn(k, n).to(dtype)
                out = torch.empty(m, n, dtype=dtype)
                rates[name] = _best_rate(
                    lambda a=a, b=b, out=out: torch.matmul(a, b, out=out), 2.0 * m * k * n, seconds
                )
    finally:
        torch.set_num_threads(previous)
    return rates


def _probe_openvino(threads: int, seconds: float) -> dict[str, float]:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from .signal_stack import preserved_signal_stack

    m, k, n = PROBE_SHAPE
    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], ov.Type.f32, name="x")
    w = ops.constant(rng.standard_normal((k, n)).astype(np.float32))
    model = ov.Model([ops.matmul(x, w, False, False)], [x], "bf16_probe")
    data = rng.standard_normal((m, k)).astype(np.float32)
    core = ov.Core()
    rates = {}
    for name, hint in (("fp32", "f32"), ("bf16", "bf16")):
        with preserved_signal_stack():  # the CPU plugin replaces this thread's signal stack (signal_stack.py)
            compiled = core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": hint,
                    "INFERENCE_NUM_THREADS": threads,
                    "PERFORMANCE_HINT": "LATENCY",
                },
            )
        computed = compiled.get_property("INFERENCE_PRECISION_HINT")
        computed = computed.get_type_name() if hasattr(computed, "get_type_name") else str(computed)
        request = compiled.create_infer_request()
        rate = _best_rate(lambda request=request: request.infer({0: data}), 2.0 * m * k * n, seconds)
        # A CPU without bf16 compiles the bf16 hint as f32: that is no bf16 to choose.
        rates[name] = rate if name == "fp32" or computed == "bf16" else 0.0
        del request, compiled
    return rates


def probe_bf16(engine: str = "torch", threads: int | None = None, seconds: float = PROBE_SECONDS) -> dict:
    """Measure bf16 against fp32 in `engine` now (no cache): `{"fp32": TFLOP/s, "bf16": TFLOP/s, "shape": ...}`."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: one of {', '.join(ENGINES)}")
    threads = int(threads or os.cpu_count() or 1)
    rates = (_probe_torch if engine == "torch" else _probe_openvino)(threads, seconds)
    return {**rates, "shape": list(PROBE_SHAPE), "threads": threads, "cpu": cpu_name(), "engine": engine}


def bf16_probe_result(engine: str = "torch", threads: int | None = None) -> dict:
    """The probe's figures and verdict for `engine` on this machine, measured once and cached per machine.

    Returns `{"faster": bool, "fp32": TFLOP/s, "bf16": TFLOP/s, "source": "probe" | "cache" | "no native bf16"
    | "forced"}`.
    """
    forced = os.environ.get(FORCE_ENV, "").strip().lower()
    if forced:
        if forced not in ("faster", "slower"):
            raise ValueError(f"{FORCE_ENV}={forced!r}: use 'faster' or 'slower' (or unset it to measure).")
        return {"faster": forced == "faster", "source": "forced", "engine": engine}
    if not native_bf16_flags():
        return {"faster": False, "source": "no native bf16", "engine": engine}
    threads = int(threads or os.cpu_count() or 1)
    key = f"{engine}:{_machine_key(engine, threads)}"
    path = probe_cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return {**cache[key], "source": "cache"}
    figures = probe_bf16(engine, threads)
    result = {**figures, "faster": figures["bf16"] > figures["fp32"]}
    cache[key] = result
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: measure again next time
    return {**result, "source": "probe"}


def bf16_is_faster(engine: str = "torch", threads: int | None = None) -> bool:
    """Whether bf16 computes faster than fp32 in `engine` ("torch" or "openvino") on this CPU: what `auto`
    precision chooses. Measured once per machine (see the module's docstring)."""
    return bool(bf16_probe_result(engine, threads)["faster"])


def resolve_bf16(setting: bool | None, engine: str = "torch", threads: int | None = None) -> bool:
    """An explicit `True` / `False` forces; `None` (auto) asks the probe."""
    return bool(setting) if setting is not None else bf16_is_faster(engine, threads)


__all__ = [
    "bf16_is_faster",
    "bf16_probe_result",
    "cpu_has_fast_bf16",
    "cpu_name",
    "native_bf16_flags",
    "probe_bf16",
    "probe_cache_path",
    "resolve_bf16",
]
