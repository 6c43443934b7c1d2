"""`python -m ast_dora.bench gpu --tiny`: every step passes on CPU, in a process where the packages training does not
need cannot be imported; and the step runner's failure handling and out-of-memory fallback, which a CPU run of the
command never takes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ast_dora.benchmarks import gpu
from ast_dora.models import get_model_spec, model_types

REPO_ROOT = Path(__file__).resolve().parents[1]
# The GPU check must run where only torch, transformers, peft, accelerate, datasets and numpy are installed (a GPU
# machine's preinstalled PyTorch plus a wheel or two): the demo, the search, metrics, plots, audio decoding and
# resampling are not for it.
ABSENT = (
    "gradio",
    "optuna",
    "sklearn",
    "scipy",
    "matplotlib",
    "torchaudio",
    "torchcodec",
    "soundfile",
    "librosa",
)
# `sys.modules[name] = None` makes `import name` fail, and `importlib.util.find_spec(name)` (how transformers and
# datasets probe optional packages) answer "not installed".
RUNNER = """
import sys
for name in {absent!r}:
    sys.modules[name] = None
from ast_dora.bench import main
main(["gpu", "--tiny", "--json", sys.argv[1]])
"""


@pytest.fixture(scope="module")
def gpu_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.run(
        [sys.executable, "-c", RUNNER.format(absent=ABSENT), str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-4000:]
    return json.loads(out.read_text()), process.stdout


def gpu_model_types() -> list[str]:
    """The registered models the GPU check trains (a spec with `gpu_check`; the MFCC baseline has none)."""
    return [t for t in model_types() if get_model_spec(t).gpu_check is not None]


def expected_step_names() -> list[str]:
    types = gpu_model_types()
    return (
        ["matmul peak"]
        + [f"{t} training" for t in types]
        + ["lean DoRA", "resume", "data loader"]
        + [f"{t} song" for t in types]
        + ["projection"]
    )


@pytest.mark.slow
def test_every_step_passes_without_the_packages_training_does_not_need(gpu_check):
    result, stdout = gpu_check
    failed = {step["name"]: step.get("error") for step in result["steps"] if not step["ok"]}
    assert result["all_ok"] and not failed, failed
    assert [step["name"] for step in result["steps"]] == expected_step_names()
    assert result["device"] and result["peak_bf16_tflops"] > 0 and result["size"] == "tiny"
    for step in result["steps"]:
        assert step["seconds"] >= 0 and "summary" in step, step["name"]
    # One table: a row per step, then the verdict.
    assert all(name in stdout for name in expected_step_names()) and "all steps passed" in stdout


@pytest.mark.slow
def test_steps_report_the_issue_figures(gpu_check):
    result, _ = gpu_check
    steps = {step["name"]: step for step in result["steps"]}
    full, prefix = (steps[f"{t} training"] for t in gpu_model_types())
    assert (
        full["bf16"] == result["bf16"]
        and full["optim"] == "adamw_torch_fused"
        and full["loss_function"] == "focal"
    )
    assert len(full["runs"]) == 2 and all(run["samples_per_s"] > 0 and run["mfu"] > 0 for run in full["runs"])
    assert full["eval_loss"] < full["eval_loss_before"] * full["loss_fall"]
    batches = {(run["path"], run["batch"]) for run in prefix["runs"]}
    assert batches == {(path, batch) for path in ("through all layers", "from cache") for batch in (2, 4)}
    assert all(run["loss_max_rel_diff"] <= gpu.PREFIX_LOSS_RTOL for run in prefix["runs"])
    assert prefix["cache_build_windows_per_s"] > 0
    assert {c["precision"] for c in steps["lean DoRA"]["comparisons"]} >= {"fp32"}
    assert steps["resume"]["rel_diff"] <= gpu.RESUME_RTOL
    assert all(run["windows_per_s"] > 0 and run["num_workers"] == 2 for run in steps["data loader"]["runs"])
    for t in gpu_model_types():
        assert steps[f"{t} song"]["latency_s"] > 0 and steps[f"{t} song"]["features"]
    # Without torchaudio, AST features still come from the project's batched numpy fbank (it needs no torchaudio
    # since the torch-free song analysis); the step says which implementation ran.
    assert steps["ast_dora song"]["features"] == "ASTFbankFeatures"
    rows = steps["projection"]["rows"]
    assert {row["model_type"] for row in rows} == set(gpu_model_types())
    assert all(row["total_minutes"] > 0 and row["limited_by"] in ("data", "model") for row in rows)
    assert not result["targets_apply"] and {t["name"].split()[0] for t in result["targets"]} == set(
        gpu_model_types()
    )


def test_a_failing_step_is_reported_with_its_error(tmp_path):
    check = gpu.Check(gpu.TINY, torch.device("cpu"), gpu.CONFIG_DIR)

    def broken():
        raise ValueError("no such kernel")

    entry = gpu._run_step(check, "broken", broken)
    assert entry["ok"] is False and entry["error"] == "ValueError: no such kernel" and entry["traceback"]
    entry = gpu._run_step(
        check, "wrong", lambda: {"summary": "x", "checks": {"losses agree": False, "fits": True}}
    )
    assert entry["ok"] is False and entry["error"] == "failed: losses agree"
    assert gpu._run_step(check, "fine", lambda: {"summary": "x", "checks": {"fits": True}})["ok"] is True


def test_out_of_memory_falls_back_to_the_next_batch():
    check = gpu.Check(gpu.TINY, torch.device("cpu"), gpu.CONFIG_DIR)
    tried, oom = [], []

    def attempt(batch):
        tried.append(batch)
        if batch > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"batch": batch}

    assert gpu._first_fitting((256, 128), attempt, check, oom) == {"batch": 128}
    assert tried == [256, 128] and oom == [256]
    assert gpu._first_fitting((512,), attempt, check, oom) is None and oom == [256, 512]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_real_sizes_without_cuda_say_to_use_tiny():
    from ast_dora.bench import main

    with pytest.raises(SystemExit, match="--tiny"):
        main(["gpu"])
