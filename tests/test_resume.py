"""Kill and resume: a run SIGKILLed mid-epoch and started again with the same command resumes from its last
checkpoint at the right step and ends exactly where an uninterrupted run of the same seed ends.

Exactly: the Trainer's checkpoints hold the model, optimizer, scheduler and RNG states and it skips the batches
already seen, so the resumed run draws the same batches and the same dropout / DropPath / SpecAugment masks;
final weights and evaluation metrics are compared with a tolerance of float rounding (1e-6) only.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 5  # 20 train windows (10 tracks x 2 four-second windows of 6 s) in batches of 4
EPOCHS = 5
SAVE_STEPS = 2  # checkpoint-2 is in the middle of the first epoch


def run_command(data_dir: Path, cache_dir: Path, output_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "finetune" / "run.py"),
        "--config",
        str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
        "--data_dir",
        str(data_dir),
        "--features_cache_dir",
        str(cache_dir),
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        str(EPOCHS),
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        str(SAVE_STEPS),
        "--save_total_limit",
        "2",
        "--load_best_model_at_end",
        "false",
        "--overwrite_output_dir",
        "false",  # the smoke config starts afresh; here a rerun must resume
        "--log_level",
        "info",
        "--disable_tqdm",
        "true",
    ]


def subprocess_env() -> dict[str, str]:
    # One thread: the same float results in every run, and no OpenMP waiting on a busy shared machine.
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def complete_checkpoints(output_dir: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1])
        for p in output_dir.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file()
    )


def final_state(output_dir: Path) -> tuple[dict, dict]:
    results = json.loads((output_dir / "all_results.json").read_text())
    metrics = {
        k: v
        for k, v in results.items()
        if k.startswith(("eval_", "test_")) and not k.endswith(("_runtime", "_per_second"))
    }
    return metrics, load_file(output_dir / "model.safetensors")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.mark.slow
def test_killed_run_resumes_and_matches_uninterrupted_run(synthetic_gtzan_folder, cache_dir, tmp_path):
    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    # The uninterrupted run goes alongside the one that gets killed (one thread each, two cores).
    reference = subprocess.Popen(
        run_command(synthetic_gtzan_folder, cache_dir, reference_dir),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    command = run_command(synthetic_gtzan_folder, cache_dir, killed_dir)
    process = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while not complete_checkpoints(killed_dir) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert reference.wait(timeout=300) == 0, "the uninterrupted run failed"
    finally:
        for p in (process, reference):
            if p.poll() is None:
                p.kill()
    saved = complete_checkpoints(killed_dir)
    assert saved, "the run was killed before it saved any checkpoint"
    resume_step = max(saved)
    total_steps = STEPS_PER_EPOCH * EPOCHS
    assert resume_step < total_steps and not (killed_dir / "all_results.json").exists(), (
        "the run finished before it could be killed; the test needs a slower run"
    )

    rerun = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert f"Resuming from {killed_dir / f'checkpoint-{resume_step}'}" in log
    epochs_done, batches_done = divmod(resume_step, STEPS_PER_EPOCH)
    assert batches_done > 0, "killed at an epoch boundary: not the mid-epoch case this test is about"
    assert re.search(
        rf"Resuming training from checkpoint with epoch {epochs_done} and global step {resume_step}\b", log
    ), log[-3000:]
    assert f"Fast-forwarding the dataloader past {epochs_done} epochs and {batches_done} batches" in log, log[
        -3000:
    ]
    state = json.loads((killed_dir / "trainer_state.json").read_text())
    assert state["global_step"] == total_steps

    reference_metrics, reference_weights = final_state(reference_dir)
    metrics, weights = final_state(killed_dir)
    assert metrics == pytest.approx(reference_metrics, rel=1e-6, abs=1e-6)
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-6, atol=1e-6, msg=name)


def test_incomplete_checkpoint_is_skipped(tmp_path, caplog):
    from safetensors.torch import save_file

    from ast_dora.trainer import last_complete_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        save_file({"weight": torch.zeros(3)}, tmp_path / f"checkpoint-{step}" / "model.safetensors")
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-6: incomplete" in caplog.text


# ------------------------------------------------------------------------------------------------------
# unreadable checkpoints and a changed config
# ------------------------------------------------------------------------------------------------------

# checkpoint-14 is broken; checkpoint-12 is the one to resume. Both are mid-epoch (epoch 3, batches 2 and 4), as in
# the killed run above: a checkpoint at an epoch's last step is saved before that epoch's evaluation, whose data
# loader draws from the global RNG, so a run resumed there draws other dropout masks than the uninterrupted one.
RESUMED_FROM, BROKEN = 12, 14


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_unreadable_checkpoint_is_skipped_and_the_run_matches_an_uninterrupted_one(
    synthetic_gtzan_folder, cache_dir, tmp_path
):
    """The state a run killed after writing checkpoint-14 would leave, with checkpoint-14's weights (in one copy)
    or trainer state (in another) cut in half, as a full disk leaves them: the rerun skips it with a warning,
    resumes from checkpoint-12 and ends exactly where the uninterrupted run ends. The second rerun also changes
    logging_steps, which may differ on resume; a changed learning_rate may not."""
    reference_dir = tmp_path / "uninterrupted"
    keep_all = ["--save_total_limit", str(EPOCHS * STEPS_PER_EPOCH)]  # the last --save_total_limit wins
    reference = subprocess.run(
        run_command(synthetic_gtzan_folder, cache_dir, reference_dir) + keep_all,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

    cases = {"weights": ("model.safetensors", []), "state": ("trainer_state.json", ["--logging_steps", "3"])}
    reruns = {}
    for case, (broken_file, extra) in cases.items():
        output_dir = tmp_path / case
        output_dir.mkdir()
        shutil.copy(reference_dir / "run_config.yaml", output_dir)
        for step in (RESUMED_FROM, BROKEN):
            shutil.copytree(reference_dir / f"checkpoint-{step}", output_dir / f"checkpoint-{step}")
        truncate(output_dir / f"checkpoint-{BROKEN}" / broken_file)
        command = run_command(synthetic_gtzan_folder, cache_dir, output_dir) + keep_all + extra
        reruns[case] = subprocess.Popen(
            command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    logs = {}
    try:
        for case, process in reruns.items():
            logs[case], _ = process.communicate(timeout=300)
            assert process.returncode == 0, logs[case][-3000:]
    finally:
        for process in reruns.values():
            if process.poll() is None:
                process.kill()

    reference_metrics, reference_weights = final_state(reference_dir)
    for case, (broken_file, _) in cases.items():
        output_dir, log = tmp_path / case, logs[case]
        assert f"Skipping {output_dir / f'checkpoint-{BROKEN}'}: {broken_file} cannot be read" in log, log[
            -3000:
        ]
        assert f"Resuming from {output_dir / f'checkpoint-{RESUMED_FROM}'}" in log, log[-3000:]
        assert re.search(
            rf"Resuming training from checkpoint with epoch \d+ and global step {RESUMED_FROM}\b", log
        )
        metrics, weights = final_state(output_dir)
        assert metrics == pytest.approx(reference_metrics, rel=1e-6, abs=1e-6), case
        for name, tensor in weights.items():
            torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-6, atol=1e-6, msg=name)

    # A changed learning rate is refused before any data is prepared, naming the field and the ways out.
    from ast_dora.cli import main
    from ast_dora.config import ConfigError

    command = run_command(synthetic_gtzan_folder, cache_dir, tmp_path / "weights")[2:] + [
        "--learning_rate",
        "0.0005",
    ]
    with pytest.raises(ConfigError) as refused:
        main(command)
    message = str(refused.value)
    assert "learning_rate (0.002 there, 0.0005 now)" in message
    assert "--overwrite_output_dir true" in message and "another output_dir" in message
    assert "logging_steps" not in message


def test_unreadable_checkpoints_everywhere_start_afresh(tmp_path, caplog):
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from ast_dora.trainer import resolve_checkpoint

    for step in (2, 4):
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        save_file({"weight": torch.zeros(1000)}, checkpoint / "model.safetensors")
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        torch.save({"state": {}}, checkpoint / "optimizer.pt")
    truncate(tmp_path / "checkpoint-4" / "optimizer.pt")
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "log_hi')
    args = SimpleNamespace(resume_from_checkpoint=None, overwrite_output_dir=False, output_dir=str(tmp_path))
    assert resolve_checkpoint(args) is None
    assert f"Skipping {tmp_path / 'checkpoint-4'}: optimizer.pt cannot be read" in caplog.text
    assert f"Skipping {tmp_path / 'checkpoint-2'}: trainer_state.json cannot be read" in caplog.text
    assert "can be resumed from (see the warnings above): starting afresh" in caplog.text
