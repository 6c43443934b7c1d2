"""Cross-validation in one command (`--split folds --cross_validate true`): every fold under `output_dir/fold_k/`,
`cv_results.json` / `cv_results.md` with per-fold metrics, mean and sample sd, and a killed cross-validation that
continues where it stopped and ends where an uninterrupted one ends (metrics within 1e-6: float rounding only,
as in tests/test_resume.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write_audio

from ast_dora.config import ConfigError, parse_config
from ast_dora.cross_validation import DONE_MARKER, markdown_table, summarize_folds

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_FOLDS = 3
# A ViT-hybrid of width 32, one block: 4 epochs of 2 steps per fold (3 train tracks x 2 windows, batch 4).
TINY_MODEL = (
    "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,hidden_dropout_prob=0.0,"
    "drop_path_rate=0.0,pooling=mean,initializer_range=0.1,num_freq_masks=0"
)


def make_three_label_folder(root: Path) -> Path:
    """3 labels x 3 tracks of 5 s at 22.05 kHz, a different pitch per label."""
    for g, label in enumerate(("Ambient Drones", "chiptune", "zydeco")):
        for i in range(3):
            write_audio(
                root / label / f"take {i}.wav", tone(5.0, 22050, freq=110.0 * 2**g, seed=g * 10 + i), 22050
            )
    return root


def cv_command(data_dir: Path, cache_dir: Path, output_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "finetune" / "run.py"),
        "--config",
        str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
        "--config_overrides",
        TINY_MODEL,
        "--data_dir",
        str(data_dir),
        "--features_cache_dir",
        str(cache_dir),
        "--output_dir",
        str(output_dir),
        "--split",
        "folds",
        "--num_folds",
        str(NUM_FOLDS),
        "--cross_validate",
        "true",
        "--num_train_epochs",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--preprocessing_num_workers",
        "1",
        "--overwrite_output_dir",
        "false",  # the smoke config starts afresh; here a rerun must continue
        "--log_level",
        "info",
        "--disable_tqdm",
        "true",
    ]


def subprocess_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints a rerun resumes from, by the trainer's own test: a `trainer_state.json` that exists can still be
    half written when the kill lands, and the rerun then starts the fold afresh."""
    from ast_dora.trainer import unreadable_checkpoint_file

    return [
        p
        for p in folder.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file() and unreadable_checkpoint_file(str(p)) is None
    ]


def test_summary_is_mean_and_sample_sd_of_the_folds():
    folds = [
        {"fold": k, "test_track_accuracy": v, "eval_accuracy": 1 - v}
        for k, v in enumerate([0.5, 0.7, 0.6, 0.9])
    ]
    summary = summarize_folds(folds)
    values = np.array([0.5, 0.7, 0.6, 0.9])
    assert summary["mean"]["test_track_accuracy"] == pytest.approx(values.mean(), abs=1e-12)
    assert summary["std"]["test_track_accuracy"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    assert summary["std"]["eval_accuracy"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    assert summary["folds"] == folds and "fold" not in summary["mean"]
    table = markdown_table(summary)
    assert "| 3 | 0.900 |" in table
    assert f"**{values.mean():.3f} ± {values.std(ddof=1):.3f}**" in table


def test_cross_validate_needs_the_folds_protocol():
    with pytest.raises(ConfigError, match="--split folds"):
        parse_config(
            ["--model_type", "vit_hybrid", "--data_dir", "x", "--cross_validate", "true", "--output_dir", "o"]
        )


@pytest.mark.slow
def test_killed_cross_validation_continues_and_matches_an_uninterrupted_one(tmp_path):
    data_dir = make_three_label_folder(tmp_path / "library")
    cache_dir = tmp_path / "features"
    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    env = subprocess_env()
    reference = subprocess.Popen(
        cv_command(data_dir, cache_dir, reference_dir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    process = subprocess.Popen(
        cv_command(data_dir, cache_dir, killed_dir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed inside fold 1, once it has a checkpoint: fold 0 is done, fold 1 half trained, fold 2 not begun.
        deadline = time.monotonic() + 300
        while (
            not complete_checkpoints(killed_dir / "fold_1")
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert reference.wait(timeout=400) == 0, "the uninterrupted cross-validation failed"
    finally:
        for p in (process, reference):
            if p.poll() is None:
                p.kill()
    assert (killed_dir / "fold_0" / DONE_MARKER).is_file()
    assert complete_checkpoints(killed_dir / "fold_1") and not (killed_dir / "fold_1" / DONE_MARKER).exists()
    assert not (killed_dir / "fold_2").exists() and not (killed_dir / "cv_results.json").exists()
    fold_0_weights = (killed_dir / "fold_0" / "model.safetensors").stat().st_mtime_ns

    rerun = subprocess.run(
        cv_command(data_dir, cache_dir, killed_dir), env=env, capture_output=True, text=True, timeout=400
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert "fold 1/3 is done" in log  # fold 0 read back, not trained again
    assert (killed_dir / "fold_0" / "model.safetensors").stat().st_mtime_ns == fold_0_weights
    assert f"Resuming from {killed_dir / 'fold_1' / 'checkpoint-'}" in log  # fold 1 from its checkpoint

    expected = json.loads((reference_dir / "cv_results.json").read_text())
    got = json.loads((killed_dir / "cv_results.json").read_text())
    assert [f["fold"] for f in got["folds"]] == list(range(NUM_FOLDS))
    assert {"test_track_accuracy", "test_accuracy", "eval_accuracy"} <= set(got["mean"]) == set(got["std"])
    for key, value in expected["mean"].items():
        assert got["mean"][key] == pytest.approx(value, abs=1e-6), key
        assert got["std"][key] == pytest.approx(expected["std"][key], abs=1e-6), key
    for fold_got, fold_expected in zip(got["folds"], expected["folds"], strict=True):
        for key, value in fold_expected.items():
            assert fold_got[key] == pytest.approx(value, abs=1e-6), (fold_got["fold"], key)
    # Each fold's own results are what cv_results.json lists, and the Markdown table has the mean ± sd row.
    for k in range(NUM_FOLDS):
        all_results = json.loads((killed_dir / f"fold_{k}" / "all_results.json").read_text())
        assert all_results["test_track_accuracy"] == pytest.approx(
            got["folds"][k]["test_track_accuracy"], abs=1e-12
        )
    mean, std = got["mean"]["test_track_accuracy"], got["std"]["test_track_accuracy"]
    assert f"{mean:.3f} ± {std:.3f}" in (killed_dir / "cv_results.md").read_text()
    # Every track is in exactly one fold's test split.
    tested = [
        t
        for k in range(NUM_FOLDS)
        for t in json.loads((killed_dir / f"fold_{k}" / "splits.json").read_text())["test"]
    ]
    assert sorted(tested) == sorted({*tested}) and len(tested) == 9


def test_a_finished_fold_of_other_settings_is_refused_not_mixed_in(tmp_path):
    from ast_dora.cross_validation import fold_dir, fold_run, run_cross_validation
    from ast_dora.training import write_run_config

    argv = [
        "--config",
        str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
        "--data_dir",
        str(tmp_path / "none"),
        "--split",
        "folds",
        "--num_folds",
        "3",
        "--cross_validate",
        "true",
        "--output_dir",
        str(tmp_path / "cv"),
        "--overwrite_output_dir",
        "false",
    ]
    before = fold_run(parse_config([*argv, "--learning_rate", "0.1"]), 0)
    write_run_config(before, before.training.output_dir)
    (fold_dir(tmp_path / "cv", 0) / DONE_MARKER).write_text("{}")
    with pytest.raises(
        ConfigError, match=r"fold_0 is a finished fold .* differs from this config in learning_rate"
    ):
        run_cross_validation(parse_config(argv))


def baseline_cv(data_dir: Path, cache_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """The MFCC baseline (seconds per fold) over 3 folds of each split seed given in `extra`."""
    return [
        sys.executable,
        str(REPO_ROOT / "finetune" / "run.py"),
        "--config",
        str(REPO_ROOT / "configs" / "mfcc_baseline.yaml"),
        "--data_dir",
        str(data_dir),
        "--features_cache_dir",
        str(cache_dir),
        "--output_dir",
        str(output_dir),
        "--split",
        "folds",
        "--num_folds",
        str(NUM_FOLDS),
        "--cross_validate",
        "true",
        "--num_train_epochs",
        "3",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def test_repeated_cross_validation_and_paired_comparison(tmp_path):
    data = make_three_label_folder(tmp_path / "data")
    cache, env = tmp_path / "cache", subprocess_env()
    first, second = tmp_path / "lr_small", tmp_path / "lr_large"
    seeds = ["--split_seeds", "1", "2"]
    done = subprocess.run(
        baseline_cv(data, cache, first, *seeds, "--learning_rate", "1e-4"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(
        baseline_cv(data, cache, second, *seeds, "--learning_rate", "0.05", "--compare", str(first)),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((second / "cv_results.json").read_text())
    assert results["split_seeds"] == [1, 2] and len(results["folds"]) == 2 * NUM_FOLDS
    assert {(f["split_seed"], f["fold"]) for f in results["folds"]} == {
        (s, k) for s in (1, 2) for k in range(NUM_FOLDS)
    }
    for seed in (1, 2):
        assert (second / f"seed_{seed}" / "fold_0" / "all_results.json").is_file()
        values = [f["test_track_accuracy"] for f in results["folds"] if f["split_seed"] == seed]
        assert results["seeds"][str(seed)]["mean"]["test_track_accuracy"] == pytest.approx(np.mean(values))
    # The seeds cut the tracks differently: other test tracks in fold 0.
    splits = [
        json.loads((first / f"seed_{s}" / "fold_0" / "splits.json").read_text())["test"] for s in (1, 2)
    ]
    assert splits[0] != splits[1]
    compare = results["compare"]
    theirs = {
        (f["split_seed"], f["fold"]): f for f in json.loads((first / "cv_results.json").read_text())["folds"]
    }
    differences = [
        f["test_track_accuracy"] - theirs[(f["split_seed"], f["fold"])]["test_track_accuracy"]
        for f in results["folds"]
    ]
    assert [row["test_track_accuracy"] for row in compare["differences"]] == pytest.approx(differences)
    assert compare["mean"]["test_track_accuracy"] == pytest.approx(np.mean(differences))
    assert compare["std"]["test_track_accuracy"] == pytest.approx(np.std(differences, ddof=1))
    assert (compare["won"], compare["tied"], compare["lost"]) == (
        sum(d > 1e-9 for d in differences),
        sum(abs(d) <= 1e-9 for d in differences),
        sum(d < -1e-9 for d in differences),
    )
    assert "folds won / tied / lost" in (second / "cv_results.md").read_text()

    # An ensemble of the two, scored from their saved track probabilities, no training.
    from ast_dora.cross_validation import main as cv_main

    assert (
        cv_main(
            [
                "ensemble",
                str(second),
                str(first),
                "--weights",
                "0.7",
                "0.3",
                "--output_dir",
                str(tmp_path / "ensemble"),
                "--compare",
                str(first),
            ]
        )
        == 0
    )
    ensemble = json.loads((tmp_path / "ensemble" / "cv_results.json").read_text())
    for fold in ensemble["folds"]:
        where = Path(f"seed_{fold['split_seed']}") / f"fold_{fold['fold']}" / "test_track_probabilities.json"
        a, b = (json.loads((run / where).read_text())["tracks"] for run in (second, first))
        hits = [
            int(np.argmax(0.7 * np.array(a[t]["probabilities"]) + 0.3 * np.array(b[t]["probabilities"])))
            == a[t]["label"]
            for t in a
        ]
        assert fold["test_track_accuracy"] == pytest.approx(np.mean(hits))
    assert (
        ensemble["compare"]["won"] + ensemble["compare"]["tied"] + ensemble["compare"]["lost"]
        == 2 * NUM_FOLDS
    )


def test_compare_and_split_seeds_are_checked_before_any_work(tmp_path):
    data = make_three_label_folder(tmp_path / "data")
    command = baseline_cv(data, tmp_path / "cache", tmp_path / "run", "--compare", str(tmp_path / "nothing"))
    done = subprocess.run(
        command, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0 and "has no cv_results.json" in done.stderr + done.stdout
    assert not (tmp_path / "run" / "fold_0").exists()
    with pytest.raises(ConfigError, match="repeats"):
        parse_config(
            [
                "--synthetic",
                "true",
                "--output_dir",
                str(tmp_path),
                "--split",
                "folds",
                "--cross_validate",
                "true",
                "--split_seeds",
                "1",
                "1",
            ]
        )
