"""Several workers of one study on this machine (`search.workers: N`, `--workers N`).

The command that asked for N workers prepares the data once (so the feature cache is built once), then starts N
copies of itself as worker processes (`python -m ast_dora.cli <the same arguments> --workers 1 --storage
<the study>`), each with a device of its own: `CUDA_VISIBLE_DEVICES` set to one GPU (round-robin when there are
fewer GPUs than workers) and the CPU cores split between them (`OMP_NUM_THREADS`). It waits for them and then
writes the search's outputs once. Each worker is an ordinary search worker: it runs trials until the study holds
`n_trials` finished ones, so a worker that dies only costs its running trial.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ..config import RunConfig
from .settings import SearchSettings

logger = logging.getLogger(__name__)

# Set in each worker process to "<index>/<count>": the worker offsets a seeded sampler by its index (so that
# workers do not draw the same first trials) and leaves the outputs to the command that started it.
WORKER_ENV = "AST_DORA_SEARCH_WORKER"
THREAD_ENV_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
STOP_TIMEOUT_SECONDS = 30


def worker_index() -> int | None:
    """This process's index among the workers started by `run_local_workers`, or None if it is not one."""
    value = os.environ.get(WORKER_ENV)
    return int(value.split("/")[0]) if value else None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        return [device.strip() for device in given.split(",") if device.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def worker_environments(workers: int, use_cpu: bool) -> list[dict[str, str]]:
    """The environment of each worker process: its GPU and its share of the CPU cores.

    A thread count already set in the environment is the user's choice and is kept."""
    gpus = [] if use_cpu else visible_gpus()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // workers))
    environments = []
    for index in range(workers):
        environment = dict(os.environ)
        environment[WORKER_ENV] = f"{index}/{workers}"
        for name in THREAD_ENV_VARIABLES:
            environment.setdefault(name, threads)
        if gpus:
            environment["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        environments.append(environment)
    return environments


def worker_command(run: RunConfig, settings: SearchSettings) -> list[str]:
    return [sys.executable, "-m", "ast_dora.cli", *run.argv, "--workers", "1", "--storage", settings.storage]


def run_local_workers(run: RunConfig, settings: SearchSettings) -> list[int]:
    """Start `settings.workers` worker processes on the study and wait for all of them; their exit codes.

    Interrupting this process (Ctrl-C) stops the workers; their running trials are marked failed and run again
    when the command is rerun."""
    command = worker_command(run, settings)
    environments = worker_environments(settings.workers, use_cpu=run.training.use_cpu)
    # The workers import this very package, wherever it was imported from here.
    package_root = str(Path(__file__).resolve().parents[2])
    processes = []
    for index, environment in enumerate(environments):
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, environment.get("PYTHONPATH")) if p
        )
        logger.info(
            "Starting search worker %d of %d (CUDA_VISIBLE_DEVICES=%s, %s threads).",
            index + 1,
            settings.workers,
            environment.get("CUDA_VISIBLE_DEVICES", "unset"),
            environment["OMP_NUM_THREADS"],
        )
        processes.append(subprocess.Popen(command, env=environment))
    try:
        while any(process.poll() is None for process in processes):
            time.sleep(1.0)
    except BaseException:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        raise
    return [process.returncode for process in processes]


__all__ = [
    "WORKER_ENV",
    "run_local_workers",
    "visible_gpus",
    "worker_command",
    "worker_environments",
    "worker_index",
]
