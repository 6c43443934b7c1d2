"""Hub sharing, offline: upload folders load in a clean process and reproduce the trained logits, cards carry the
run's real metrics as valid Hub metadata, and push / Space calls send the expected files to the expected repo.

The Hub is replaced at its client boundary (`ast_dora.hub.HfApi`) by a recorder that checks every call against
the real `HfApi` method's signature; the Trainer's own Hub client is replaced by one that fails the test if used.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, SpaceCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from song_fixtures import save_tiny_model, wav_song
from transformers import ASTFeatureExtractor, EvalPrediction

import ast_dora.hub as hub
import ast_dora.training as training
from ast_dora.config import ModelArguments
from ast_dora.evaluation import make_compute_metrics, write_reports
from ast_dora.model_card import CARD_METRICS, REVISION_PLACEHOLDER, RunRecordsError
from ast_dora.models.ast_mlp.dora import build_ast_dora
from ast_dora.models.factory import load_trained_model, save_trained_model
from ast_dora.models.tiny_ast import make_tiny_ast

REPO_ROOT = Path(__file__).resolve().parents[1]
GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
SECRET = "hf_test_token_that_must_not_leak"
# fp32 rounding only: remote code and this project run the same modules on the same weights (merging the adapter
# folds W + BA rescaled by the DoRA magnitude into one matrix).
LOGITS_ATOL = 1e-5


# ----------------------------------------------------------------------------------------------------------
# a stand-in for the Hub client
# ----------------------------------------------------------------------------------------------------------


class RecordingHubApi:
    """Records calls as (method, arguments); `upload_folder` snapshots the folder (it is deleted afterwards).
    Each call is bound to the real `HfApi` method's signature, so a wrong keyword fails here as it would there."""

    calls: list[tuple[str, dict]] = []
    repo_files: dict[str, list[str]] = {}  # what `list_repo_files` answers, per repo
    space_hardware: dict[str, str] = {}  # existing Spaces and their hardware flavour (others: no such Space)

    def __init__(self, token=None, **kwargs):
        self.token = token

    def _record(self, method: str, *args, **kwargs) -> dict:
        bound = inspect.signature(getattr(HfApi, method)).bind(self, *args, **kwargs)
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        RecordingHubApi.calls.append((method, arguments))
        return arguments

    def create_repo(self, *args, **kwargs):
        arguments = self._record("create_repo", *args, **kwargs)
        repo_id = arguments["repo_id"]
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"someone/{repo_id}")

    def create_branch(self, *args, **kwargs):
        self._record("create_branch", *args, **kwargs)

    def add_space_variable(self, *args, **kwargs):
        self._record("add_space_variable", *args, **kwargs)

    def request_space_hardware(self, *args, **kwargs):
        self._record("request_space_hardware", *args, **kwargs)

    def get_space_runtime(self, *args, **kwargs):
        import httpx2
        from huggingface_hub.errors import RepositoryNotFoundError

        arguments = self._record("get_space_runtime", *args, **kwargs)
        flavor = RecordingHubApi.space_hardware.get(arguments["repo_id"])
        if flavor is None:
            response = httpx2.Response(
                404, request=httpx2.Request("GET", "https://huggingface.co/api/spaces/x")
            )
            raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)
        return SimpleNamespace(hardware=flavor, requested_hardware=flavor, stage="RUNNING")

    def list_repo_files(self, *args, **kwargs):
        arguments = self._record("list_repo_files", *args, **kwargs)
        return list(
            RecordingHubApi.repo_files.get(arguments["repo_id"], ["config.json", "model.safetensors"])
        )

    def upload_folder(self, *args, **kwargs):
        arguments = self._record("upload_folder", *args, **kwargs)
        folder = Path(arguments["folder_path"])
        arguments["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        arguments["readme"] = (folder / "README.md").read_text()
        sha = "0123456789abcdef0123456789abcdef01234567"
        return SimpleNamespace(
            oid=sha, commit_url=f"https://huggingface.co/{arguments['repo_id']}/commit/{sha}"
        )

    @classmethod
    def called(cls, method: str) -> list[dict]:
        return [arguments for name, arguments in cls.calls if name == method]


def fail_if_trainer_reaches_the_hub(*args, **kwargs):
    raise AssertionError("the Trainer tried to reach the Hub: the run must be pushed once, by ast_dora.hub")


@pytest.fixture
def fake_hub(monkeypatch):
    RecordingHubApi.calls = []
    RecordingHubApi.repo_files = {}
    RecordingHubApi.space_hardware = {}
    monkeypatch.setattr(hub, "HfApi", RecordingHubApi)
    return RecordingHubApi


# ----------------------------------------------------------------------------------------------------------
# two finished runs: a real (tiny) ViT-hybrid training run and an AST-DoRA save with generated run records
# ----------------------------------------------------------------------------------------------------------


def vit_run_args(workdir: Path, output_dir: Path) -> list[str]:
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
        "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64",
        "--num_train_epochs",
        "1",
        "--bf16",
        "false",
    ]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """`finetune/run.py`'s main with --push_to_hub: trains, saves, pushes once through the stand-in."""
    workdir = tmp_path_factory.mktemp("vit_run")
    output_dir = workdir / "run"
    waveform = (0.1 * np.random.default_rng(0).standard_normal(4 * 22050)).astype(np.float32)
    captured = {}
    real_save = training.save_trained_model

    def save_and_capture(model, feature_extractor, directory):
        model.eval()
        inputs = feature_extractor(
            [waveform], sampling_rate=feature_extractor.sampling_rate, return_tensors="pt"
        )
        with torch.no_grad():
            captured["logits"] = model(**inputs).logits.float().numpy()
        return real_save(model, feature_extractor, directory)

    RecordingHubApi.calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub, "HfApi", RecordingHubApi)
        patch.setattr("transformers.trainer.hf_api", fail_if_trainer_reaches_the_hub)
        patch.setattr(training, "save_trained_model", save_and_capture)
        training.main(
            vit_run_args(workdir, output_dir) + ["--push_to_hub", "true", "--hub_model_id", "me/gtzan-vit"]
        )
    return SimpleNamespace(
        workdir=workdir,
        output_dir=output_dir,
        waveform=waveform,
        logits=captured["logits"],
        hub_calls=list(RecordingHubApi.calls),
    )


# A valid 1x1 PNG: confusion-matrix plots cost seconds each and the card only links the file.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b550000000a49444154789c636000000002000148afa4"
    "710000000049454e44ae426082"
)


def skip_plots(matrix, label_names, path, title):
    Path(path).write_bytes(TINY_PNG)


def write_run_records(output_dir: Path, base_model: str, seed: int = 0) -> None:
    """What finetune/run.py leaves beside an AST-DoRA model, made with the pipeline's own metric and report code."""
    rng = np.random.default_rng(seed)
    all_results = {
        "epoch": 1.0,
        "model_parameters": 1_234_567,
        "trainable_parameters": 23_456,
        "train_loss": 2.1,
    }
    log = {"epoch": 1.0, "step": 3}
    for prefix in ("eval", "test"):
        labels = np.repeat(np.arange(len(GENRES)), 4)  # 2 tracks per genre, 2 windows each
        track_ids = [f"{GENRES[label]}.{i // 2:05d}" for i, label in enumerate(labels)]
        logits = (
            rng.standard_normal((len(labels), len(GENRES)))
            + 2.0 * np.eye(len(GENRES))[labels] * (rng.random(len(labels)) < 0.6)[:, None]
        )
        metrics = make_compute_metrics(track_ids)(EvalPrediction(predictions=logits, label_ids=labels))
        all_results.update({f"{prefix}_{key}": value for key, value in metrics.items()})
        all_results[f"{prefix}_loss"] = float(rng.uniform(1, 2))
        write_reports(logits, labels, track_ids, GENRES, output_dir, prefix)
    log.update(
        eval_loss=all_results["eval_loss"],
        eval_accuracy=all_results["eval_accuracy"],
        eval_track_accuracy=all_results["eval_track_accuracy"],
    )
    (output_dir / "all_results.json").write_text(json.dumps(all_results, indent=4))
    (output_dir / "trainer_state.json").write_text(
        json.dumps(
            {
                "global_step": 3,
                "epoch": 1.0,
                "train_batch_size": 16,
                "best_metric": log["eval_track_accuracy"],
                "best_global_step": 3,
                "log_history": [log],
            }
        )
    )
    (output_dir / "data_summary.json").write_text(
        json.dumps(
            {
                "source": "folder /data/gtzan (1000 tracks)",
                "split": "fault_filtered",
                "sampling_rate": 16000,
                "tracks": {"train": 443, "validation": 197, "test": 290},
                "windows": {"train": 1329, "validation": 591, "test": 870},
                "window_seconds": 10.24,
                "hop_seconds": 10.24,
            }
        )
    )
    (output_dir / "splits.json").write_text(json.dumps({"train": [], "validation": [], "test": []}))
    run_config = {
        "model_type": "ast_dora",
        "model_name_or_path": base_model,
        "dora_rank": 4,
        "dora_alpha": 8,
        "min_layer": 2,
        "data_dir": "/data/gtzan",
        "split": "fault_filtered",
        "learning_rate": 3e-3,
        "num_train_epochs": 1,
        "load_best_model_at_end": True,
        "metric_for_best_model": "track_accuracy",
        "push_to_hub": True,
        "hub_token": SECRET,
    }
    (output_dir / "run_config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))


@pytest.fixture(scope="module")
def ast_run(tmp_path_factory):
    """A trained-looking AST-DoRA run: perturbed adapters on a tiny local AST (the stand-in for the AudioSet
    checkpoint), saved by `save_trained_model`, plus run records; the unmerged model's logits are the reference."""
    workdir = tmp_path_factory.mktemp("ast_run")
    base = make_tiny_ast(workdir / "tiny_ast")
    args = ModelArguments(
        model_type="ast_dora",
        model_name_or_path=str(base),
        min_layer=2,
        classifier_hidden_size=16,
        dora_rank=4,
        dora_alpha=8,
    )
    model = build_ast_dora(args, GENRES)
    generator = torch.Generator().manual_seed(0)
    with (
        torch.no_grad()
    ):  # DoRA starts as the identity: give the adapters weights so that a lost adapter shows
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.eval()
    feature_extractor = ASTFeatureExtractor.from_pretrained(base)
    waveform = (0.1 * np.random.default_rng(1).standard_normal(3 * 16000)).astype(np.float32)
    inputs = feature_extractor([waveform], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    output_dir = workdir / "run"
    save_trained_model(model, feature_extractor, output_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ast_dora.evaluation.plot_confusion_matrix", skip_plots)
        write_run_records(output_dir, str(base))
    return SimpleNamespace(
        workdir=workdir, output_dir=output_dir, base=base, waveform=waveform, logits=logits
    )


def dry_run(output_dir: Path, folder: Path, repo_id: str, *extra: str) -> Path:
    assert hub.main(["push", str(output_dir), "--repo_id", repo_id, "--dry_run", str(folder), *extra]) == 0
    return folder


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def python_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.S)


# ----------------------------------------------------------------------------------------------------------
# loading the upload folders in a process that never imported this project
# ----------------------------------------------------------------------------------------------------------

CLEAN_PROCESS = """\
import json
import sys

import numpy as np
import torch

loaded, pipeline_scores = {}, {}
for case in json.loads(open("cases.json").read()):
    namespace = {}
    exec(case["pipeline"], namespace)  # the card's first snippet: pipeline("audio-classification"), on case["song"]
    pipeline_scores[case["name"]] = namespace["classifier"](case["song"], top_k=None)
    if case["loading"] != case["pipeline"]:
        exec(case["loading"], namespace)  # the card's loading snippet
    model, feature_extractor = namespace["model"], namespace["feature_extractor"]
    waveform = np.load(case["waveform"])
    inputs = feature_extractor([waveform], sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
    with torch.no_grad():
        np.save(case["name"] + "_logits.npy", model(**inputs).logits.float().numpy())
    namespace["waveform"] = np.concatenate([waveform] * 3)
    exec(case["usage"], namespace)  # the card's track-level usage snippet: prints a genre
    loaded[case["name"]] = type(model).__module__ + "." + type(model).__name__
imported = sorted(name for name in sys.modules if name == "ast_dora" or name.startswith("ast_dora."))
assert not imported, f"the project got imported: {imported}"
open("loaded.json", "w").write(json.dumps(loaded))
open("pipeline_scores.json", "w").write(json.dumps(pipeline_scores))
"""


@pytest.fixture(scope="module")
def clean_process(vit_run, ast_run, tmp_path_factory):
    """The three upload folders (ViT-hybrid, merged AST-DoRA, AST-DoRA adapter), each loaded by its own card's
    snippets (repo id -> the folder) in one fresh interpreter that never imports this project (one process:
    importing torch + transformers is most of the cost)."""
    workdir = tmp_path_factory.mktemp("clean_process")
    runs = {"vit": (vit_run, ()), "merged": (ast_run, ("--merged",)), "adapter": (ast_run, ())}
    song = wav_song(
        workdir
    )  # the real 30-s GTZAN track when ../shared is there, else 12 s of generated stereo
    cases, folders = [], {}
    for name, (run, flags) in runs.items():
        folders[name] = dry_run(run.output_dir, workdir / f"{name}_upload", f"me/gtzan-{name}", *flags)
        # pipeline first; then (model repos) the model and feature extractor on their own; then windows by hand
        blocks = python_blocks((folders[name] / "README.md").read_text())
        pipeline_block, loading, usage = blocks[0], blocks[-2], blocks[-1]
        assert f'repo_id = "me/gtzan-{name}"' in pipeline_block and f'repo_id = "me/gtzan-{name}"' in loading
        pipeline_block, loading = (
            block.replace(f'repo_id = "me/gtzan-{name}"', f"repo_id = {str(folders[name])!r}").replace(
                '"song.mp3"', repr(str(song))
            )
            for block in (pipeline_block, loading)
        )
        np.save(workdir / f"{name}_waveform.npy", run.waveform)
        cases.append(
            {
                "name": name,
                "pipeline": pipeline_block,
                "loading": loading,
                "usage": usage,
                "waveform": f"{name}_waveform.npy",
                "song": str(song),
            }
        )
    (workdir / "cases.json").write_text(json.dumps(cases))
    (workdir / "load.py").write_text(CLEAN_PROCESS)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "load.py"], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    printed_genres = [line for line in result.stdout.splitlines() if line in GENRES]
    assert len(printed_genres) == len(cases), result.stdout
    loaded = json.loads((workdir / "loaded.json").read_text())
    logits = {name: np.load(workdir / f"{name}_logits.npy") for name in runs}
    pipeline_scores = json.loads((workdir / "pipeline_scores.json").read_text())
    return SimpleNamespace(
        folders=folders, loaded=loaded, logits=logits, pipeline_scores=pipeline_scores, song=song
    )


@pytest.mark.slow
def test_vit_hybrid_upload_folder_loads_in_a_clean_process(vit_run, clean_process):
    folder = clean_process.folders["vit"]
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_genre_vit_hybrid.py",
        "modeling_genre_vit_hybrid.py",
        "feature_extraction_genre_vit_hybrid.py",
    } <= files_in(folder)
    blocks = python_blocks((folder / "README.md").read_text())
    assert (
        'pipeline("audio-classification", model=repo_id, revision=revision, trust_remote_code=True)'
        in blocks[0]
    )
    loading = blocks[1]
    assert (
        "AutoModelForAudioClassification.from_pretrained(repo_id, revision=revision, trust_remote_code=True)"
        in loading
    )
    assert (
        "AutoFeatureExtractor.from_pretrained(repo_id, revision=revision, trust_remote_code=True)" in loading
    )
    # the class came from the folder's remote code, not from an installed package
    assert clean_process.loaded["vit"].startswith("transformers_modules.")
    assert clean_process.loaded["vit"].endswith(
        "modeling_genre_vit_hybrid.GenreViTHybridForAudioClassification"
    )
    np.testing.assert_allclose(clean_process.logits["vit"], vit_run.logits, rtol=0, atol=LOGITS_ATOL)


def test_merged_ast_dora_upload_folder_loads_in_a_clean_process(ast_run, clean_process):
    folder = clean_process.folders["merged"]
    files = files_in(folder)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_ast_mlp.py"} <= files
    assert not any(name.startswith("adapter") for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoModelForAudioClassification": "modeling_ast_mlp.ASTWithMLPHeadForAudioClassification"
    }
    assert "trust_remote_code=True" in python_blocks((folder / "README.md").read_text())[0]
    assert clean_process.loaded["merged"].startswith("transformers_modules.")
    assert clean_process.loaded["merged"].endswith("modeling_ast_mlp.ASTWithMLPHeadForAudioClassification")
    np.testing.assert_allclose(clean_process.logits["merged"], ast_run.logits, rtol=0, atol=LOGITS_ATOL)


def test_adapter_upload_folder_loads_with_its_cards_snippet(ast_run, clean_process):
    folder = clean_process.folders["adapter"]
    files = files_in(folder)
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "modeling_ast_mlp.py",
    } <= files
    assert "model.safetensors" not in files, "the adapter repo must not carry the full weights"
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(
        ast_run.base
    )  # the tiny stand-in for the AudioSet AST
    loading = python_blocks((folder / "README.md").read_text())[0]
    assert "import ast_dora" not in loading and "from ast_dora" not in loading
    assert "PeftModel.from_pretrained(base, repo_id, revision=revision)" in loading
    assert (
        'config.custom_pipelines["audio-classification"]["impl"]' in loading
        and "pipeline_class=pipeline_class" in loading
    )
    assert clean_process.loaded["adapter"].endswith("modeling_ast_mlp.ASTWithMLPHeadForAudioClassification")
    np.testing.assert_allclose(clean_process.logits["adapter"], ast_run.logits, rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize("name", ["vit", "merged", "adapter"])
def test_upload_folders_pipeline_hears_the_whole_song(clean_process, name):
    """The card's pipeline call, in the clean process: the project's song analysis of the same file (every window,
    mean probability), for the trained ViT-hybrid, the merged AST-DoRA and the adapter (loaded as its card shows)."""
    from ast_dora.inference import GenreClassifier

    folder = clean_process.folders[name]
    assert {"pipeline_genre_classification.py", "song_windows.py"} <= files_in(folder)
    assert "custom_pipelines" in json.loads((folder / "config.json").read_text())
    analysis = GenreClassifier.from_pretrained(folder, bf16=False).analyse(clean_process.song)
    assert len(analysis.window_starts) > 1
    scores = {entry["label"]: entry["score"] for entry in clean_process.pipeline_scores[name]}
    np.testing.assert_allclose(
        [scores[label] for label in analysis.labels], analysis.probabilities, rtol=0, atol=LOGITS_ATOL
    )
    card = (folder / "README.md").read_text()
    assert "analyses the whole song" in card


# ----------------------------------------------------------------------------------------------------------
# model cards
# ----------------------------------------------------------------------------------------------------------


def assert_card_matches_run(folder: Path, output_dir: Path, repo_id: str) -> ModelCard:
    card = ModelCard.load(folder / "README.md")  # raises on invalid metadata or model-index
    metadata = metadata_load(folder / "README.md")
    all_results = json.loads((output_dir / "all_results.json").read_text())
    model_name, results = model_index_to_eval_results(metadata["model-index"])
    assert model_name == repo_id.split("/")[-1]
    recorded = {}
    for result in results:
        assert result.task_type == "audio-classification"
        prefix = {"validation": "eval", "test": "test"}[result.dataset_split]
        recorded[prefix, result.metric_name] = result.metric_value
    expected = {}
    for prefix, split in (("eval", "validation"), ("test", "test")):
        for suffix, _, name, _ in CARD_METRICS:
            expected[prefix, f"{name} ({split})"] = all_results[f"{prefix}_{suffix}"]
    assert recorded == expected  # every metric, exactly as all_results.json has it (no rounding, no typing)
    assert metadata["pipeline_tag"] == "audio-classification"
    # the human-readable table shows the same numbers
    assert (
        f"| Track accuracy (mean window probability) | {all_results['eval_track_accuracy']:.4f} | {all_results['test_track_accuracy']:.4f} |"
        in card.text
    )
    for genre in GENRES:
        assert re.search(rf"^\| {genre} \| ", card.text, flags=re.M), f"no per-class row for {genre}"
    image = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", card.text).group(1)
    assert (folder / image).is_file() and image == "confusion_matrix_test_track.png"
    for phrase in (
        "Intended use",
        "GTZAN's known faults",
        "Western",
        "30-second clip",
        "Training procedure",
        f'revision = "{REVISION_PLACEHOLDER}"',
        "learning_rate",
    ):
        assert phrase in card.text, phrase
    return card


def test_vit_card_has_the_runs_metrics_and_valid_metadata(vit_run, tmp_path):
    folder = dry_run(vit_run.output_dir, tmp_path / "upload", "me/gtzan-vit")
    card = assert_card_matches_run(folder, vit_run.output_dir, "me/gtzan-vit")
    assert card.data.library_name == "transformers"
    assert card.data.base_model is None
    assert "stratified" in card.text and "Synthetic data" in card.text
    parameters = json.loads((vit_run.output_dir / "all_results.json").read_text())["model_parameters"]
    assert f"**Parameters:** {parameters:,} in total" in card.text


def test_adapter_card_names_its_base_and_split_and_leaks_no_token(ast_run, tmp_path):
    public_base = "MIT/ast-finetuned-audioset-10-10-0.4593"
    folder = dry_run(
        ast_run.output_dir, tmp_path / "upload", "me/gtzan-ast-dora", "--base_model", public_base
    )
    card = assert_card_matches_run(folder, ast_run.output_dir, "me/gtzan-ast-dora")
    assert card.data.library_name == "peft"
    assert card.data.base_model == public_base
    assert card.data.datasets == ["marsyas/gtzan"]
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == public_base
    assert "fault-filtered" in card.text and "443 / 197 / 290" in card.text
    assert "DoRA:** rank 4" in card.text
    # run_config.yaml had a hub token in it: neither the card nor any uploaded file may carry it
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"token leaked into {path.name}"
    assert "hub_token" not in yaml.safe_load((folder / "run_config.yaml").read_text())


# ----------------------------------------------------------------------------------------------------------
# pushing
# ----------------------------------------------------------------------------------------------------------


def test_training_pushes_once_at_the_end_through_the_hub_module(vit_run, tmp_path):
    # The Trainer's client raised on any use during training; ours was called once, with the whole folder.
    calls = [name for name, _ in vit_run.hub_calls]
    assert calls == ["create_repo", "upload_folder"]
    create = dict(vit_run.hub_calls[0][1])
    upload = dict(vit_run.hub_calls[1][1])
    assert create["repo_id"] == "me/gtzan-vit" and create["repo_type"] == "model" and create["exist_ok"]
    assert upload["repo_id"] == "me/gtzan-vit" and upload["repo_type"] == "model"
    assert upload["delete_patterns"] == "*"  # the repo mirrors the folder
    expected = files_in(dry_run(vit_run.output_dir, tmp_path / "upload", "me/gtzan-vit"))
    assert set(upload["files"]) == expected
    assert not any(name.startswith("checkpoint-") or name.endswith(".bin") for name in upload["files"])


def test_push_run_sends_the_dry_run_folder_to_the_repo(ast_run, fake_hub, tmp_path):
    commit = hub.push_run(ast_run.output_dir, "gtzan-ast-dora", revision="v1", private=True)
    [create] = fake_hub.called("create_repo")
    assert (
        create["repo_id"] == "gtzan-ast-dora" and create["repo_type"] == "model" and create["private"] is True
    )
    [branch] = fake_hub.called("create_branch")
    assert branch["repo_id"] == "someone/gtzan-ast-dora" and branch["branch"] == "v1"
    [upload] = fake_hub.called("upload_folder")
    assert upload["repo_id"] == "someone/gtzan-ast-dora" and upload["repo_type"] == "model"
    assert upload["revision"] == "v1"
    expected = files_in(dry_run(ast_run.output_dir, tmp_path / "upload", "someone/gtzan-ast-dora"))
    assert set(upload["files"]) == expected
    # a bare name got the user's namespace: the uploaded card names the full id
    assert 'repo_id = "someone/gtzan-ast-dora"' in upload["readme"]
    assert commit.oid == "0123456789abcdef0123456789abcdef01234567"


def test_upload_carries_the_onnx_export_which_runs_without_the_base(ast_run, tmp_path):
    from ast_dora.export import export_onnx
    from ast_dora.inference import GenreClassifier

    output_dir = tmp_path / "run"
    shutil.copytree(ast_run.output_dir, output_dir)
    export_onnx(output_dir, quantize="int8")
    folder = dry_run(output_dir, tmp_path / "upload", "me/gtzan-ast-dora")  # the adapter upload, by default
    assert {"onnx/model.onnx", "onnx/model_quantized.onnx", "onnx/export.json"} <= files_in(folder)
    assert "adapter_model.safetensors" in files_in(folder) and "model.safetensors" not in files_in(folder)
    assert "--backend onnx" in (folder / "README.md").read_text()
    # The export is the merged model: the adapter repo's ONNX files reproduce the trained logits on their own.
    classifier = GenreClassifier.from_pretrained(folder, backend="onnx", onnx_precision="fp32")
    # (an exported classifier computes AST's features with the batched numpy fbank, the served path)
    inputs = classifier.features(np.asarray([ast_run.waveform], dtype=np.float32))
    np.testing.assert_allclose(classifier.runner(inputs), ast_run.logits, atol=LOGITS_ATOL)

    # weights saved again after the export: pushing the old ONNX files is refused
    model, feature_extractor = load_trained_model(str(output_dir))
    with torch.no_grad():
        model.classifier.fc2.bias.add_(1.0)
    model.save_pretrained(output_dir)
    with pytest.raises(hub.HubError, match="exported from other weights"):
        hub.build_upload_folder(output_dir, tmp_path / "again", "me/gtzan-ast-dora")


def test_push_command_fails_clearly(ast_run, vit_run, tmp_path, fake_hub):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something.txt").write_text("x")
    with pytest.raises(hub.HubError, match="not empty"):
        hub.build_upload_folder(ast_run.output_dir, occupied, "me/x")
    with pytest.raises(hub.HubError, match="--merged / push_merged is for adapter runs"):
        hub.build_upload_folder(vit_run.output_dir, tmp_path / "a", "me/x", merged=True)
    with pytest.raises(RunRecordsError, match="finished training run"):
        hub.build_upload_folder(tmp_path / "not_a_run", tmp_path / "b", "me/x")
    assert fake_hub.calls == []


# ----------------------------------------------------------------------------------------------------------
# loading by id: prediction and evaluation
# ----------------------------------------------------------------------------------------------------------


def test_load_resolves_an_adapter_folder_onto_its_base(ast_run, tmp_path, capsys):
    from conftest import write_audio

    folder = dry_run(ast_run.output_dir, tmp_path / "upload", "me/gtzan-ast-dora")
    model, feature_extractor = load_trained_model(str(folder))
    inputs = feature_extractor([ast_run.waveform], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(model(**inputs).logits.numpy(), ast_run.logits, rtol=0, atol=LOGITS_ATOL)

    song = write_audio(tmp_path / "song.wav", np.tile(ast_run.waveform, 5), 16000)
    capsys.readouterr()
    assert hub.main(["load", str(folder), "--audio", str(song)]) == 0
    summary, prediction = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:])
    assert summary["model_type"] == "ast_dora" and summary["labels"] == GENRES
    assert prediction["genre"] in GENRES and prediction["windows"] == 2


def test_load_evaluate_reproduces_the_runs_test_metrics(vit_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ast_dora.evaluation.plot_confusion_matrix", skip_plots)
    folder = dry_run(vit_run.output_dir, tmp_path / "upload", "me/gtzan-vit")
    config_args = vit_run_args(vit_run.workdir, tmp_path / "unused")[2:]  # the run's data, without --config
    capsys.readouterr()
    code = hub.main(
        [
            "load",
            str(folder),
            "--evaluate",
            "--config",
            str(REPO_ROOT / "configs" / "smoke_vit_hybrid.yaml"),
            "--eval_dir",
            str(tmp_path / "eval"),
            *config_args,
        ]
    )
    assert code == 0
    run_results = json.loads((vit_run.output_dir / "all_results.json").read_text())
    eval_results = json.loads((tmp_path / "eval" / "all_results.json").read_text())
    for key in ("test_accuracy", "test_track_accuracy", "eval_accuracy", "test_f1_macro"):
        assert eval_results[key] == pytest.approx(run_results[key], abs=1e-9), key
    assert (tmp_path / "eval" / "confusion_matrix_test_track.png").is_file()
    assert not (tmp_path / "unused").exists()


# ----------------------------------------------------------------------------------------------------------
# the Space
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path):
    """A repo root with an app.py and the project's pyproject.toml (the real app.py is not this module's)."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "app.py").write_text(
        textwrap.dedent("""\
        import os
        import gradio as gr
        MODELS = os.environ.get("GENRE_MODELS", "").split(",")
        gr.Interface(lambda audio: MODELS[0], gr.Audio(), "text").launch()
        """)
    )
    (root / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    return root


def test_space_command_sends_app_requirements_and_readme_header(app_dir, fake_hub):
    assert (
        hub.main(
            [
                "space",
                "--repo_id",
                "me/gtzan-genres",
                "--models",
                "me/gtzan-ast-dora,me/gtzan-vit",
                "--app_dir",
                str(app_dir),
            ]
        )
        == 0
    )
    [create] = fake_hub.called("create_repo")
    assert (
        create["repo_id"] == "me/gtzan-genres"
        and create["repo_type"] == "space"
        and create["space_sdk"] == "gradio"
    )
    [variable] = fake_hub.called("add_space_variable")
    assert (variable["repo_id"], variable["key"], variable["value"]) == (
        "me/gtzan-genres",
        "GENRE_MODELS",
        "me/gtzan-ast-dora,me/gtzan-vit",
    )
    [upload] = fake_hub.called("upload_folder")
    assert upload["repo_id"] == "me/gtzan-genres" and upload["repo_type"] == "space"
    files = set(upload["files"])
    assert {"app.py", "requirements.txt", "README.md", "ast_dora/__init__.py", "ast_dora/hub.py"} <= files
    assert "packages.txt" not in files, "nothing comes from apt: PyAV's wheels carry FFmpeg"
    assert "packages.txt" in upload["delete_patterns"]  # an earlier deploy's packages.txt goes too
    assert not any("__pycache__" in name for name in files)

    header = SpaceCard(upload["readme"]).data
    assert header.sdk == "gradio" and header.app_file == "app.py"
    assert header.models == ["me/gtzan-ast-dora", "me/gtzan-vit"]
    assert header.sdk_version == importlib.metadata.version("gradio")
    # a new Space gets the free CPU unless told otherwise (create_repo's hardware: no separate request)
    assert create["space_hardware"] == "cpu-basic" and header.suggested_hardware == "cpu-basic"
    assert fake_hub.called("request_space_hardware") == []


def test_space_redeploy_keeps_the_spaces_hardware_unless_asked(app_dir, fake_hub):
    fake_hub.space_hardware = {"me/zero": "zero-a10g"}
    command = ["space", "--repo_id", "me/zero", "--models", "me/gtzan-vit", "--app_dir", str(app_dir)]
    assert hub.main(command) == 0
    # no --hardware: the ZeroGPU Space stays one (no request; its requirements keep `spaces` and torch)
    assert fake_hub.called("request_space_hardware") == []
    [upload] = fake_hub.called("upload_folder")
    assert SpaceCard(upload["readme"]).data.suggested_hardware == "zero-a10g"
    fake_hub.calls.clear()
    assert hub.main([*command, "--hardware", "cpu"]) == 0  # asked for explicitly: switched
    [hardware] = fake_hub.called("request_space_hardware")
    assert (hardware["repo_id"], hardware["hardware"]) == ("me/zero", "cpu-basic")
    fake_hub.calls.clear()
    fake_hub.space_hardware = {"me/zero": "cpu-basic"}
    assert hub.main([*command, "--hardware", "cpu"]) == 0  # already so: nothing to request
    assert fake_hub.called("request_space_hardware") == []


def test_space_for_zerogpu_asks_for_it_and_installs_spaces(app_dir, fake_hub, tmp_path):
    assert (
        hub.main(
            [
                "space",
                "--repo_id",
                "me/gtzan-genres",
                "--models",
                "me/gtzan-vit",
                "--app_dir",
                str(app_dir),
                "--hardware",
                "zerogpu",
            ]
        )
        == 0
    )
    [create], [hardware], [upload] = (
        fake_hub.called(m) for m in ("create_repo", "request_space_hardware", "upload_folder")
    )
    assert create["space_hardware"] == hardware["hardware"] == "zero-a10g"
    assert (
        SpaceCard(upload["readme"]).data.suggested_hardware == "zero-a10g" and "ZeroGPU" in upload["readme"]
    )
    folder = hub.build_space_folder(tmp_path / "zero", ["me/a"], repo_root=app_dir, hardware="zerogpu")
    requirements = [line.strip() for line in (folder / "requirements.txt").read_text().splitlines()]
    assert (
        "spaces" in requirements
        and "av>=18" in requirements
        and not any("torchcodec" in r for r in requirements)
    )
    cpu = hub.build_space_folder(tmp_path / "cpu", ["me/a"], repo_root=app_dir)
    assert "spaces" not in (cpu / "requirements.txt").read_text().split()
    with pytest.raises(SystemExit):
        hub.main(["space", "--repo_id", "me/x", "--models", "me/a", "--hardware", "tpu"])


@pytest.mark.slow
def test_space_folder_requirements_come_from_the_repo(app_dir, tmp_path):
    generated = hub.build_space_folder(tmp_path / "generated", ["me/a"], repo_root=app_dir)
    requirements = (generated / "requirements.txt").read_text()
    assert "transformers>=5.23,<6" in requirements and "peft>=0.21" in requirements
    assert not re.search(r"^gradio", requirements, flags=re.M)  # the Space installs gradio from sdk_version
    assert (generated / "app.py").read_text() == (app_dir / "app.py").read_text()

    (app_dir / "requirements.txt").write_text("ast-dora-deps==1\n")
    given = hub.build_space_folder(tmp_path / "given", ["me/a"], repo_root=app_dir)
    assert (given / "requirements.txt").read_text() == "ast-dora-deps==1\n"
    with pytest.raises(hub.HubError, match="not Hub model ids"):
        hub.build_space_folder(tmp_path / "bad", [str(app_dir)], repo_root=app_dir)  # a local folder


# What the Space runs, in its own folder: app.py with the copied `ast_dora` package (not this checkout, not the
# installed one), torchcodec unimportable, no `ffmpeg` program on PATH. It analyses an mp3 through the demo's handler
# and reports which package it used and every FFmpeg library mapped into the process.
SPACE_APP = """
import importlib.util, json, sys
sys.modules["torchcodec"] = None
spec = importlib.util.spec_from_file_location("space_app", "app.py")
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
import ast_dora
classifiers = app.load_classifiers([sys.argv[1]], max_seconds=600, backend="torch")
*_, (label, plot, result, summary) = app.make_analyse(classifiers)(sys.argv[2], progress=lambda *a, **k: None)
maps = [line.split()[-1] for line in open("/proc/self/maps") if line.split()]
print(json.dumps({"package": ast_dora.__file__, "genre": result["genre"], "windows": result["windows_total"],
                  "duration": result["duration"], "ffmpeg": sorted({path for path in maps if "libavcodec" in path})}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
@pytest.mark.slow
def test_space_folder_app_decodes_mp3_without_system_ffmpeg(tmp_path):
    import av

    from ast_dora.benchmarks.song import generated_song

    folder = hub.build_space_folder(tmp_path / "space", ["me/gtzan-vit"])
    assert not (folder / "packages.txt").exists()
    model = save_tiny_model("vit_hybrid", tmp_path / "model")
    song = generated_song(tmp_path / "song.mp3", seconds=20.0)  # written by PyAV (lame), 44.1-kHz stereo
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PYTHONPATH": str(folder), "PATH": str(empty_bin), "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(
        [sys.executable, "-c", SPACE_APP, str(model), str(song)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).resolve().is_relative_to(folder.resolve()), report["package"]
    assert report["windows"] == 5 and abs(report["duration"] - 20.0) < 0.1 and report["genre"]
    wheel = Path(av.__file__).resolve().parent.parent
    assert report["ffmpeg"] and all(Path(lib).resolve().is_relative_to(wheel) for lib in report["ffmpeg"]), (
        report
    )


def test_space_requirements_leave_torch_out_when_every_model_has_an_export(tmp_path, fake_hub, capsys):
    fake_hub.repo_files = {
        "me/vit": ["config.json", "openvino/openvino_model_int8.xml", "openvino/openvino_model_int8.bin"],
        "me/ast": ["config.json", "onnx/model_quantized.onnx"],
        "me/plain": ["config.json"],
    }
    assert (
        hub.main(
            ["space", "--repo_id", "me/s", "--models", "me/vit,me/ast", "--dry_run", str(tmp_path / "free")]
        )
        == 0
    )
    assert "Torch-free" in capsys.readouterr().out  # it says so
    free = (tmp_path / "free" / "requirements.txt").read_text()
    today = (REPO_ROOT / "requirements.txt").read_text()
    names = {
        hub._requirement_name(line) for line in free.splitlines() if line.strip() and not line.startswith("#")
    }
    assert names.isdisjoint({"torch", "torchaudio", "torchcodec", "peft", "accelerate", "datasets"})
    assert {"transformers", "onnxruntime", "openvino", "numpy", "av", "huggingface_hub"} <= names
    assert "torch==" in today and "peft" in today
    # one model without an export: today's requirements, torch included
    assert (
        hub.main(
            ["space", "--repo_id", "me/s", "--models", "me/vit,me/plain", "--dry_run", str(tmp_path / "t")]
        )
        == 0
    )
    assert (tmp_path / "t" / "requirements.txt").read_text() == today
    assert (
        hub.main(
            [
                "space",
                "--repo_id",
                "me/s",
                "--models",
                "me/plain",
                "--torch_free",
                "yes",
                "--dry_run",
                str(tmp_path / "forced"),
            ]
        )
        == 0
    )
    assert (tmp_path / "forced" / "requirements.txt").read_text() == free


# ----------------------------------------------------------------------------------------------------------
# the windows travel with the model
# ----------------------------------------------------------------------------------------------------------


def test_a_run_saves_its_windows_and_inference_reads_them(vit_run, tmp_path):
    """finetune/run.py writes window_seconds / hop_seconds into preprocessor_config.json; song analysis cuts the song
    with the saved window, so editing it changes the number of windows."""
    import shutil

    import soundfile as sf

    from ast_dora.inference import GenreClassifier

    saved = json.loads((vit_run.output_dir / "preprocessor_config.json").read_text())
    assert (saved["window_seconds"], saved["hop_seconds"]) == (4.0, 2.0)  # smoke_vit_hybrid.yaml's windows
    song = tmp_path / "song.wav"
    sf.write(song, (0.1 * np.random.default_rng(1).standard_normal(12 * 22050)).astype(np.float32), 22050)
    assert (
        len(GenreClassifier.from_pretrained(vit_run.output_dir, bf16=False).analyse(song).window_starts) == 3
    )

    edited = tmp_path / "edited"
    shutil.copytree(vit_run.output_dir, edited, ignore=shutil.ignore_patterns("checkpoint-*"))
    config_path = edited / "preprocessor_config.json"
    config_path.write_text(json.dumps({**saved, "window_seconds": 2.0, "hop_seconds": 1.0}))
    analysis = GenreClassifier.from_pretrained(edited, bf16=False).analyse(song)
    assert analysis.window_seconds == 2.0 and len(analysis.window_starts) == 6
