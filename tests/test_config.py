"""Config files and command lines: parsing, overrides, and clear failures."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ast_dora.config as config_module
from ast_dora.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def write_config(tmp_path, **fields):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path), **fields}))
    return str(path)


def test_every_shipped_config_parses():
    assert {p.name for p in CONFIGS} >= {
        "smoke_vit_hybrid.yaml",
        "smoke_ast_dora.yaml",
        "vit_hybrid.yaml",
        "ast_dora.yaml",
    }
    for path in CONFIGS:
        run = parse_config(["--config", str(path)])
        assert run.model.model_type in ("vit_hybrid", "ast_dora"), path


def test_real_configs_carry_the_published_values():
    ast = parse_config(["--config", str(REPO / "configs/ast_dora.yaml")])
    assert ast.model.model_name_or_path == "MIT/ast-finetuned-audioset-10-10-0.4593"
    assert (ast.model.dora_rank, ast.model.dora_alpha, ast.model.min_layer) == (2, 4.25, 10)
    assert ast.model.classifier_hidden_size == 200
    assert ast.training.learning_rate == pytest.approx(1.32e-4)
    assert ast.training.get_warmup_steps(1000) == 85
    assert ast.training.num_train_epochs == 13
    assert ast.training.weight_decay == pytest.approx(0.0676)
    assert (ast.training.per_device_train_batch_size, ast.training.gradient_accumulation_steps) == (2, 8)

    vit = parse_config(["--config", str(REPO / "configs/vit_hybrid.yaml")])
    assert vit.training.per_device_train_batch_size == 64
    assert vit.training.num_train_epochs == 150
    assert vit.training.early_stopping_patience == 10
    assert vit.training.learning_rate == pytest.approx(1e-4)
    assert vit.training.weight_decay == pytest.approx(0.1)
    assert vit.training.lr_scheduler_kwargs == {"min_lr": 1e-7}
    assert (vit.model.loss, vit.model.focal_gamma) == ("focal", 2.5)


def test_command_line_overrides_the_file(tmp_path):
    path = write_config(tmp_path, model_type="vit_hybrid", learning_rate=0.1, output_dir=str(tmp_path / "out"))
    run = parse_config(["--config", path, "--learning_rate", "0.5", "--bf16", "true"])
    assert run.training.learning_rate == 0.5
    assert run.training.bf16 is True
    assert run.raw["learning_rate"] == 0.5


def test_data_source_on_the_command_line_replaces_the_configs(tmp_path):
    config = REPO / "configs/smoke_vit_hybrid.yaml"
    run = parse_config(["--config", str(config), "--data_dir", str(tmp_path)])
    assert run.data.data_dir == str(tmp_path)
    assert not run.data.synthetic


def test_unknown_key_fails_naming_it(tmp_path):
    path = write_config(tmp_path, model_type="vit_hybrid", learning_rat=0.1)
    with pytest.raises(ConfigError, match=r"Unknown config key 'learning_rat'.*Did you mean 'learning_rate'"):
        parse_config(["--config", path])
    with pytest.raises(ConfigError, match="Unknown config key 'dora_rnk'"):
        parse_config(["--config", write_config(tmp_path, model_type="vit_hybrid"), "--dora_rnk", "3"])


def test_wrong_values_fail_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        parse_config(["--config", write_config(tmp_path, learning_rate="fast")])
    with pytest.raises(ConfigError, match="model_type='resnet'"):
        parse_config(["--config", write_config(tmp_path, model_type="resnet")])
    with pytest.raises(ConfigError, match="warmup_ratio=1.5"):
        parse_config(["--config", write_config(tmp_path, warmup_ratio=1.5)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(["--config", str(tmp_path / "missing.yaml")])


def test_config_overrides_keep_types():
    from ast_dora.config import ModelArguments

    args = ModelArguments(config_overrides="hidden_size=64, drop_path_rate=0.1,loss=cross_entropy")
    assert args.parsed_config_overrides() == {"hidden_size": 64, "drop_path_rate": 0.1, "loss": "cross_entropy"}
    with pytest.raises(ConfigError, match="not of the form"):
        ModelArguments(config_overrides="hidden_size").parsed_config_overrides()


@pytest.mark.parametrize("native_bf16", [False, True], ids=["emulated", "native"])
def test_bf16_on_a_cpu_without_native_bf16_says_to_use_fp32(tmp_path, monkeypatch, caplog, native_bf16):
    monkeypatch.setattr(config_module, "cpu_has_fast_bf16", lambda: native_bf16)
    with caplog.at_level(logging.WARNING, logger="ast_dora.config"):
        args = config_module.GenreTrainingArguments(output_dir=str(tmp_path), bf16=True, use_cpu=True, report_to="none")
    assert args.bf16  # a warning, not a silent change of precision
    assert ("no native bf16" in caplog.text and "--bf16 false" in caplog.text) is (not native_bf16)


def test_run_py_reports_a_missing_data_folder_in_one_line(tmp_path):
    missing = tmp_path / "no_such_gtzan"
    result = subprocess.run(
        [sys.executable, str(REPO / "finetune" / "run.py"), "--config", str(REPO / "configs" / "smoke_vit_hybrid.yaml"),
         "--data_dir", str(missing), "--synthetic", "false", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    assert f"Data error: data_dir '{missing}' does not exist" in result.stderr
    assert "Traceback" not in result.stderr
