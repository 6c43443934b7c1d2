"""Two processes: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) runs the same pipeline and ends where one
process with the same global batch ends.

Made deterministic enough to compare: no dropout, DropPath or SpecAugment (each process would draw its own
masks), and batches that divide the splits (20 windows each; train 2 x 5 per step, evaluation 5 per process), so that both runs see the
same samples in every step (accelerate's seedable sampler gives both the same permutation; two processes take
alternate halves of it). What remains is the order of float sums (a mean over 10 samples vs the average of two
means over 5), so: the same accuracies (segment and track, validation and test) and the same per-step training
losses and evaluation losses within LOSS_RTOL. (Weights are not compared one by one: AdamW turns the float noise
of exactly-zero gradients, such as that of the attention key bias, into full-size steps of no consequence.)
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 10
EPOCHS = 5
LOSS_RTOL = 1e-4
# The smoke config's tiny ViT-hybrid without its random parts.
DETERMINISTIC_OVERRIDES = (
    "hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=128,"
    "hidden_dropout_prob=0.0,drop_path_rate=0.0,apply_spec_augment=false"
)


def pipeline_arguments(data_dir: Path, cache_dir: Path, output_dir: Path, per_device_batch: int) -> list[str]:
    return [
        str(REPO_ROOT / "finetune" / "run.py"),
        "--config",
        str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
        "--data_dir",
        str(data_dir),
        "--features_cache_dir",
        str(cache_dir),
        "--output_dir",
        str(output_dir),
        "--config_overrides",
        DETERMINISTIC_OVERRIDES,
        "--num_train_epochs",
        str(EPOCHS),
        "--per_device_train_batch_size",
        str(per_device_batch),
        "--per_device_eval_batch_size",
        "5",  # 20 windows per evaluation split: no padding of the last batch
        "--learning_rate",
        "1e-2",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--disable_tqdm",
        "true",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one(synthetic_gtzan_folder, tmp_path):
    cache_dir = tmp_path / "features"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.Popen(
        [
            sys.executable,
            *pipeline_arguments(synthetic_gtzan_folder, cache_dir, tmp_path / "one", GLOBAL_BATCH),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    two = subprocess.run(
        # `--multi_gpu` is accelerate's torchrun launcher; with no GPU the processes run on CPU with gloo.
        # (`--cpu --num_processes 2` would start a single process: accelerate's CPU launcher needs mpirun.)
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            *pipeline_arguments(synthetic_gtzan_folder, cache_dir, tmp_path / "two", GLOBAL_BATCH // 2),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_log, _ = one.communicate(timeout=300)
    assert one.returncode == 0, one_log[-3000:]
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]

    single, double = metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two")
    # The run really was distributed: 2 steps per epoch with 2 x 5 samples, as with 10 samples on one process.
    states = {
        name: json.loads((tmp_path / name / "trainer_state.json").read_text()) for name in ("one", "two")
    }
    assert states["two"]["global_step"] == states["one"]["global_step"] == 2 * EPOCHS
    # Step by step the same losses (the logged loss of two processes is the mean over both), and training moved.
    losses = {
        name: [e["loss"] for e in state["log_history"] if "loss" in e] for name, state in states.items()
    }
    assert len(losses["one"]) == 2 * EPOCHS and len(set(losses["one"])) > 1
    assert losses["two"] == pytest.approx(losses["one"], rel=LOSS_RTOL)
    for split in ("eval", "test"):
        for name in ("accuracy", "track_accuracy", "f1_macro"):
            assert double[f"{split}_{name}"] == single[f"{split}_{name}"], (split, name, single, double)
        assert double[f"{split}_loss"] == pytest.approx(single[f"{split}_loss"], rel=LOSS_RTOL)
