"""Config files and command lines: parsing, overrides, and clear failures."""

import dataclasses
import json
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
# parse_config(['--config', f]).raw and .search of each search config, dumped before they were rewritten as
# `base:` + overrides: the rewritten files must describe the same runs.
BEFORE_BASE = json.loads((Path(__file__).parent / "fixtures" / "hpo_configs_before_base.json").read_text())


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
        "mfcc_baseline.yaml",
        "small_data_vit_hybrid.yaml",
        "small_data_musicnn.yaml",
    }
    for path in CONFIGS:
        run = parse_config(["--config", str(path)])
        assert run.model.model_type in ("vit_hybrid", "ast_dora", "mfcc_baseline", "musicnn"), path


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
    path = write_config(
        tmp_path, model_type="vit_hybrid", learning_rate=0.1, output_dir=str(tmp_path / "out")
    )
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
    assert args.parsed_config_overrides() == {
        "hidden_size": 64,
        "drop_path_rate": 0.1,
        "loss": "cross_entropy",
    }
    with pytest.raises(ConfigError, match="not of the form"):
        ModelArguments(config_overrides="hidden_size").parsed_config_overrides()


@pytest.mark.parametrize("probe", ["faster", "slower"])
def test_auto_bf16_follows_the_measured_probe_and_an_explicit_setting_forces(
    tmp_path, monkeypatch, caplog, probe
):
    """Training and torch serving: `auto` (the real configs' `bf16: auto`, serving's `bf16=None`) computes in bf16
    where the probe measures bf16 faster and in fp32 where slower; true / false force either way."""
    from ast_dora.benchmarks.song import random_genre_model
    from ast_dora.inference import GenreClassifier

    monkeypatch.setenv("AST_DORA_BF16_PROBE", probe)  # the probe's answer, forced (hardware.py)
    faster = probe == "faster"

    def training(bf16):
        return config_module.GenreTrainingArguments(
            output_dir=str(tmp_path), bf16=bf16, use_cpu=True, report_to="none"
        )

    auto = training("auto")
    assert auto.bf16 is faster and auto.bf16_choice["setting"] == "auto"
    assert auto.bf16_choice["reason"].startswith(
        "auto: the CPU's bf16 is " + ("faster" if faster else "not faster")
    )
    for path in ("vit_hybrid.yaml", "ast_dora.yaml"):
        assert (
            parse_config(["--config", str(REPO / "configs" / path), "--use_cpu", "true"]).training.bf16
            is faster
        )
    with caplog.at_level(logging.WARNING, logger="ast_dora.config"):
        forced = training(True)
    assert forced.bf16 is True and forced.bf16_choice["reason"] == "bf16 true (forced)"
    assert ("measured slower than fp32" in caplog.text) is not faster  # forced, but told what auto would do
    assert training(False).bf16 is False and training("false").bf16 is False
    assert (
        parse_config(
            ["--config", str(REPO / "configs" / "vit_hybrid.yaml"), "--use_cpu", "true", "--bf16", "false"]
        ).training.bf16
        is False
    )
    with pytest.raises(ConfigError, match="use true, false or auto"):
        training("sometimes")

    def serving(bf16):
        model, feature_extractor = random_genre_model("vit_hybrid", size="tiny")
        return GenreClassifier(model, feature_extractor, bf16=bf16, device="cpu")

    assert serving(None).bf16 is faster
    assert serving(True).bf16 is True and serving(False).bf16 is False


def test_run_py_reports_a_missing_data_folder_in_one_line(tmp_path):
    missing = tmp_path / "no_such_gtzan"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "finetune" / "run.py"),
            "--config",
            str(REPO / "configs" / "smoke_vit_hybrid.yaml"),
            "--data_dir",
            str(missing),
            "--synthetic",
            "false",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    assert f"Data error: data_dir '{missing}' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------------------
# base: one config as overrides of another
# ----------------------------------------------------------------------------------------------------------


def write_yaml(path, mapping):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return str(path)


def field_values(run):
    return {
        f.name: getattr(args, f.name)
        for args in (run.model, run.data, run.training)
        for f in dataclasses.fields(args)
    }


@pytest.mark.parametrize("name", sorted(BEFORE_BASE))
def test_search_configs_rewritten_on_a_base_describe_the_same_runs(tmp_path, name):
    path = REPO / "configs" / name
    own = yaml.safe_load(path.read_text())
    assert "base" in own, "the search configs are overrides of their training config"
    before = BEFORE_BASE[name]
    run = parse_config(["--config", str(path)])
    assert run.raw == before["raw"]
    assert run.search == before["search"]
    # The same field values as the self-contained file of before, parsed on this machine.
    standalone = write_yaml(tmp_path / name, {**before["raw"], "search": before["search"]})
    assert field_values(run) == field_values(parse_config(["--config", standalone]))
    # Only what differs from the base is written in the file.
    base = parse_config(["--config", str(path.parent / own["base"])]).raw
    repeated = [key for key, value in own.items() if key not in ("base", "search") and base.get(key) == value]
    assert not repeated, f"{name} repeats its base's values for {repeated}"


def test_a_config_overrides_its_base_field_by_field(tmp_path):
    write_yaml(
        tmp_path / "base.yaml",
        {
            "model_type": "vit_hybrid",
            "data_dir": str(tmp_path),
            "learning_rate": 0.1,
            "weight_decay": 0.2,
            "overwrite_output_dir": True,
            "output_dir": "runs/a",
        },
    )
    child = write_yaml(
        tmp_path / "child.yaml",
        {"base": "base.yaml", "learning_rate": 0.3, "seed": 7, "overwrite_output_dir": None},
    )
    run = parse_config(["--config", child, "--weight_decay", "0.5"])
    assert (run.training.learning_rate, run.training.weight_decay, run.training.seed) == (0.3, 0.5, 7)
    assert run.training.output_dir == "runs/a"
    assert run.training.overwrite_output_dir is False  # null: back to the field's default
    assert run.raw == {
        "model_type": "vit_hybrid",
        "data_dir": str(tmp_path),
        "learning_rate": 0.3,
        "weight_decay": 0.5,
        "output_dir": "runs/a",
        "seed": 7,
    }
    assert run.config_path == child


def test_bases_chain_and_resolve_relative_to_the_file_naming_them(tmp_path, monkeypatch):
    root = write_yaml(
        tmp_path / "root.yaml",
        {
            "model_type": "vit_hybrid",
            "data_dir": str(tmp_path),
            "learning_rate": 0.1,
            "seed": 1,
            "num_train_epochs": 2,
        },
    )
    write_yaml(
        tmp_path / "configs" / "middle.yaml", {"base": root, "seed": 2, "num_train_epochs": 3}
    )  # absolute
    leaf = write_yaml(
        tmp_path / "configs" / "sub" / "leaf.yaml", {"base": "../middle.yaml", "num_train_epochs": 4}
    )
    monkeypatch.chdir(tmp_path / "configs" / "sub")  # relative to the file, not to where python runs
    run = parse_config(["--config", "leaf.yaml"])
    assert (run.training.learning_rate, run.training.seed, run.training.num_train_epochs) == (0.1, 2, 4)
    monkeypatch.chdir(tmp_path)
    assert parse_config(["--config", leaf]).training.num_train_epochs == 4


def test_a_cycle_of_bases_fails_naming_the_chain(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"base": "b.yaml", "seed": 1})
    write_yaml(tmp_path / "b.yaml", {"base": "a.yaml", "seed": 2})
    a = str(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"cycle: '.*a\.yaml' -> '.*b\.yaml' -> '.*a\.yaml'"):
        parse_config(["--config", a])
    write_yaml(tmp_path / "self.yaml", {"base": "self.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(["--config", str(tmp_path / "self.yaml")])


def test_a_missing_base_fails_naming_the_file_that_names_it(tmp_path):
    child = write_yaml(tmp_path / "child.yaml", {"base": "nowhere.yaml", "seed": 1})
    with pytest.raises(
        ConfigError, match=r"nowhere\.yaml', named as `base:` by '.*child\.yaml', does not exist"
    ):
        parse_config(["--config", child])
    with pytest.raises(ConfigError, match="must be the path of another config file"):
        parse_config(["--config", write_yaml(tmp_path / "list.yaml", {"base": ["a.yaml", "b.yaml"]})])


def test_an_unknown_key_fails_naming_the_file_it_is_in(tmp_path):
    write_yaml(tmp_path / "base.yaml", {"model_type": "vit_hybrid", "data_dir": str(tmp_path)})
    child = write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "learning_rat": 0.1})
    with pytest.raises(
        ConfigError, match=r"Unknown config key 'learning_rat' in '.*child\.yaml'.*'learning_rate'"
    ):
        parse_config(["--config", child])
    write_yaml(tmp_path / "bad_base.yaml", {"model_type": "vit_hybrid", "dora_rnk": 2})
    child = write_yaml(tmp_path / "child2.yaml", {"base": "bad_base.yaml", "seed": 3})
    with pytest.raises(
        ConfigError, match=r"Unknown config key 'dora_rnk' in '.*bad_base\.yaml'.*'dora_rank'"
    ):
        parse_config(["--config", child])
    with pytest.raises(ConfigError, match="Unknown config key 'base' in the command line"):
        parse_config(["--config", str(tmp_path / "base.yaml"), "--base", "other.yaml"])


def test_search_of_a_child_replaces_its_bases_wholesale(tmp_path):
    space = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}, "seed": [1, 2]}
    write_yaml(
        tmp_path / "base.yaml",
        {"model_type": "vit_hybrid", "data_dir": str(tmp_path), "search": {"n_trials": 5, "space": space}},
    )
    child = write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "search": {"space": {"seed": [3, 4]}}})
    assert parse_config(["--config", child]).search == {"space": {"seed": [3, 4]}}
    inherits = write_yaml(tmp_path / "inherits.yaml", {"base": "base.yaml", "seed": 9})
    assert parse_config(["--config", inherits]).search == {"n_trials": 5, "space": space}
    drops = write_yaml(tmp_path / "drops.yaml", {"base": "base.yaml", "search": None})
    assert parse_config(["--config", drops]).search is None
    with pytest.raises(ConfigError, match=r"`search:` in '.*bad\.yaml' must be a mapping"):
        parse_config(["--config", write_yaml(tmp_path / "bad.yaml", {"base": "base.yaml", "search": 5})])


def test_the_merged_config_is_self_contained(tmp_path):
    """raw (written back as run_config.yaml / best_config.yaml) reruns the same run without its bases."""
    child = REPO / "configs" / "hpo_smoke_vit_hybrid.yaml"
    run = parse_config(["--config", str(child), "--learning_rate", "0.01"])
    assert "base" not in run.raw
    written = write_yaml(tmp_path / "elsewhere" / "run_config.yaml", {**run.raw, "search": run.search})
    again = parse_config(["--config", written])
    assert field_values(again) == field_values(run)
    assert again.search == run.search


# ----------------------------------------------------------------------------------------------------------
# do_train / do_eval / do_predict
# ----------------------------------------------------------------------------------------------------------


def test_a_config_that_names_no_stage_runs_all_three():
    for path in CONFIGS:
        run = parse_config(["--config", str(path)])
        assert run.stages == {"train", "eval", "predict"}, path
        assert all(run.runs_stage(stage) for stage in ("train", "eval", "predict"))


def test_given_stages_run_exactly_those_set_true(tmp_path):
    path = write_config(tmp_path, model_type="vit_hybrid", eval_strategy="epoch", do_train=True)
    run = parse_config(["--config", path])
    assert run.training.do_eval  # TrainingArguments turns it on for eval_strategy=epoch ...
    assert run.stages == {"train"}  # ... but the user asked for training only
    assert not run.runs_stage("eval") and not run.runs_stage("predict")
    assert parse_config(["--config", path, "--do_predict"]).stages == {"train", "predict"}
    assert parse_config(["--config", path, "--do_predict", "true", "--do_eval=true"]).stages == {
        "train",
        "eval",
        "predict",
    }
    with pytest.raises(ValueError, match="Unknown stage 'test'"):
        run.runs_stage("test")


def test_stages_given_on_the_command_line_are_kept_as_typed(tmp_path):
    path = write_config(tmp_path, model_type="vit_hybrid", eval_strategy="epoch")
    run = parse_config(["--config", path, "--do_train", "true", "--do_eval", "false"])
    assert run.training.do_eval  # set again by TrainingArguments
    assert (run.raw["do_train"], run.raw["do_eval"]) == (True, False)  # what a rerun of run_config.yaml needs
    assert run.stages == {"train"}


def test_stages_come_through_bases_and_null_unsets_them(tmp_path):
    write_yaml(
        tmp_path / "base.yaml", {"model_type": "vit_hybrid", "data_dir": str(tmp_path), "do_train": True}
    )
    child = write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "do_predict": True})
    assert parse_config(["--config", child]).stages == {"train", "predict"}
    unset = write_yaml(tmp_path / "unset.yaml", {"base": "base.yaml", "do_train": None})
    assert parse_config(["--config", unset]).stages == {"train", "eval", "predict"}


def test_no_stage_at_all_fails(tmp_path):
    with pytest.raises(ConfigError, match="all false: nothing to run"):
        parse_config(["--config", write_config(tmp_path, model_type="vit_hybrid"), "--do_train", "false"])


def test_evaluating_without_training_needs_a_trained_model(tmp_path):
    vit = write_config(tmp_path, model_type="vit_hybrid", do_eval=True, do_predict=True)
    with pytest.raises(
        ConfigError,
        match="do_train false evaluates model_name_or_path.*set model_name_or_path to a "
        "trained run's output_dir",
    ):
        parse_config(["--config", vit])
    trained = str(tmp_path / "runs" / "vit")
    assert parse_config(["--config", vit, "--model_name_or_path", trained]).stages == {"eval", "predict"}

    ast = write_config(tmp_path, model_type="ast_dora", do_predict=True)
    with pytest.raises(ConfigError, match="base checkpoint without a trained genre head"):
        parse_config(["--config", ast])  # the AudioSet AST by default
    smoke = REPO / "configs" / "smoke_ast_dora.yaml"
    with pytest.raises(ConfigError, match="make_tiny_checkpoint"):
        parse_config(["--config", str(smoke), "--do_eval", "true"])
    run = parse_config(
        [
            "--config",
            str(smoke),
            "--do_eval",
            "true",
            "--make_tiny_checkpoint",
            "false",
            "--model_name_or_path",
            str(tmp_path / "runs" / "ast"),
        ]
    )
    assert run.stages == {"eval"}


def test_a_search_must_train(tmp_path):
    with pytest.raises(ConfigError, match="A search trains its trials"):
        parse_config(
            [
                "--config",
                str(REPO / "configs" / "hpo_smoke_vit_hybrid.yaml"),
                "--do_train",
                "false",
                "--do_eval",
                "true",
                "--model_name_or_path",
                str(tmp_path),
            ]
        )
