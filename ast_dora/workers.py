"""Worker processes that are safe to start from a process holding native thread pools.

`fork` copies a process with only the forking thread alive: a native runtime whose thread pool was running in the
parent (OpenVINO's oneTBB arena, ONNX Runtime's pool, NNCF's OpenVINO) finds its pool's threads gone and its
locks possibly held in the child, and its fork handlers run in the parent while those threads are live. That is
the fork-after-threads hazard: the test suite died with SIGSEGV in a `datasets` map with two worker processes
after OpenVINO had run in the same process. So every worker pool the project starts asks `start_method()`:
`fork` (fast, the features' modules already imported) while none of those runtimes is loaded, as in a training
run; `forkserver` once one is (the server is a fresh interpreter started by exec, which never held such a pool,
and workers fork from it).

Torch's own OpenMP pool is not on the list: torch re-initialises it in a forked child, and the project's workers
run with one torch thread (`data/features.py`, torch's DataLoader workers).

The homes that start workers: `datasets.Dataset.map(num_proc=...)` (`data/features.py`, through
`datasets_start_method`), the synthetic generator's process pool (`data/synthetic.py`) and the `Trainer`'s
DataLoader workers (`trainer.py`, `dataloader_multiprocessing_context`). Search workers and exports' subprocesses
start by exec (`subprocess`), which needs nothing of this.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys

# Runtimes whose thread pools do not survive a fork (modules are looked up in `sys.modules`, never imported here).
FORK_UNSAFE_MODULES = ("openvino", "onnxruntime", "nncf")
# What the forkserver imports once, so that each worker forked from it starts with the features' modules loaded.
FORKSERVER_PRELOAD = ("ast_dora.data.features", "ast_dora.data.synthetic")


def fork_unsafe_runtimes() -> list[str]:
    """The runtimes loaded in this process whose native thread pools make `fork` unsafe."""
    return [name for name in FORK_UNSAFE_MODULES if name in sys.modules]


def start_method() -> str:
    """`fork` while no fork-unsafe runtime is loaded in this process, `forkserver` once one is."""
    return "forkserver" if fork_unsafe_runtimes() else "fork"


def in_worker_process() -> bool:
    """Whether this process is a worker of a `multiprocessing` or `multiprocess` (datasets') pool, whatever its
    start method (a spawned or forkserver worker has its own module state, so a pid noted at import cannot tell)."""
    if multiprocessing.parent_process() is not None:
        return True
    multiprocess = sys.modules.get("multiprocess")
    return multiprocess is not None and multiprocess.parent_process() is not None


def _preload(module) -> None:
    with contextlib.suppress(AttributeError, ValueError):
        module.set_forkserver_preload(list(FORKSERVER_PRELOAD))


def mp_context():
    """A `multiprocessing` context for a process pool (`ProcessPoolExecutor(mp_context=...)`,
    `DataLoader(multiprocessing_context=...)`) with `start_method()`'s method."""
    method = start_method()
    if method == "forkserver":
        _preload(multiprocessing)
    return multiprocessing.get_context(method)


@contextlib.contextmanager
def datasets_start_method():
    """Within the block, `datasets.Dataset.map(num_proc=...)` starts its workers with `start_method()`.

    `map` takes no start method: it opens `multiprocess.Pool(num_proc)` (dill's fork of `multiprocessing`) on
    `multiprocess`'s default context, so the block sets that default and puts the previous one back.
    """
    method = start_method()
    if method == "fork":
        yield method
        return
    import multiprocess

    previous = multiprocess.get_start_method(allow_none=True)
    _preload(multiprocess)
    multiprocess.set_start_method(method, force=True)
    try:
        yield method
    finally:
        multiprocess.set_start_method(previous, force=True)


__all__ = [
    "FORK_UNSAFE_MODULES",
    "datasets_start_method",
    "fork_unsafe_runtimes",
    "in_worker_process",
    "mp_context",
    "start_method",
]
