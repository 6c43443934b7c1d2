"""`do_train` / `do_eval` / `do_predict` are honoured as `run_audio_classification.py` users expect."""

from __future__ import annotations

import json
from pathlib import Path

from ast_dora.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"


def tiny_run(workdir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
        "--output_dir",
        str(output_dir),
        "--synthetic",
        "true",
        "--data_dir",
        str(workdir / "synth"),
        "--synthetic_tracks_per_genre",
        "3",
        "--synthetic_duration_seconds",
        "4",
        "--features_cache_dir",
        str(workdir / "features"),
        "--config_overrides",
        TINY_VIT,
        "--num_train_epochs",
        "1",
        "--bf16",
        "false",
        *extra,
    ]


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


def test_stages_run_only_what_is_asked(tmp_path):
    trained = tmp_path / "trained"
    metrics = main(tiny_run(tmp_path, trained, "--do_train", "true", "--do_eval", "true"))
    assert any(key.startswith("eval_") for key in metrics)
    assert not any(key.startswith("test_") for key in results(trained)), (
        "do_predict was not given: no test split"
    )
    assert (trained / "model.safetensors").is_file() and "train_loss" in results(trained)

    evaluated = tmp_path / "evaluated"
    metrics = main(
        tiny_run(
            tmp_path,
            evaluated,
            "--do_train",
            "false",
            "--do_predict",
            "true",
            "--model_name_or_path",
            str(trained),
        )
    )
    assert set(metrics) and all(key.startswith("test_") for key in metrics)
    assert not (evaluated / "model.safetensors").exists(), "nothing was trained, so nothing is saved"
    assert "train_loss" not in results(evaluated)


def test_no_stage_given_runs_all_three(tmp_path):
    output_dir = tmp_path / "all"
    main(tiny_run(tmp_path, output_dir))
    keys = results(output_dir)
    assert "train_loss" in keys and "eval_accuracy" in keys and "test_accuracy" in keys
