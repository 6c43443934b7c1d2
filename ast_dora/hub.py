"""Share trained models and the demo on the Hugging Face Hub.

    python -m ast_dora.hub push OUTPUT_DIR --repo_id ID [--merged] [--dry_run FOLDER]
    python -m ast_dora.hub space --repo_id USER/SPACE --models ID[,ID...] [--hardware cpu|zerogpu] [--dry_run FOLDER]
    python -m ast_dora.hub load ID_OR_DIR [--revision SHA] [--audio FILE ...] [--evaluate --config CONFIG ...]

`push` uploads one folder, built by `build_upload_folder` from a training run's `output_dir`: the model (the
ViT-hybrid, or for AST-DoRA the adapter by default and the merged model with `--merged`), its feature extractor,
the remote code that loads it without this project, a model card generated from the run's records, and those
records (metrics, per-class reports, confusion matrices, splits), and the ONNX export (`onnx/`, written by
`python -m ast_dora.export onnx OUTPUT_DIR`) when the run has one. `--dry_run FOLDER` writes that same folder
and uploads nothing, for review. The repo (or branch) then mirrors the folder: remote files that are not in it
are deleted in the same commit, so an adapter push over a merged push leaves no stale weights behind.

`finetune/run.py --push_to_hub true --hub_model_id ID` calls `push_run` once, at the end of training: the
`Trainer`'s own per-checkpoint pushing is switched off (see `ast_dora.training.prepare`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from .backends import (
    RECORD_FILE,
    BackendError,
    check_export_is_current,
    repo_files_have_export,
    upload_patterns,
)
from .config import public_config
from .model_card import CARD_KINDS, RunRecords, build_model_card, looks_like_hub_id
from .models.factory import ADAPTER_SUBFOLDER

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_FILE_PATTERNS = (
    "config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "*.py",
)
ADAPTER_FILE_PATTERNS = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",
    "preprocessor_config.json",
    "*.py",
)
RECORD_FILE_PATTERNS = (
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "trainer_state.json",
    "splits.json",
    "data_summary.json",
    "classification_report_*.json",
    "classification_report_*.txt",
    "confusion_matrix_*.png",
)
SPACE_MODELS_VARIABLE = "GENRE_MODELS"  # what app.py reads: comma-separated model ids (or local dirs)
# gradio is installed by the Space from `sdk_version`. Nothing comes from apt (no packages.txt): PyAV's wheels
# carry the FFmpeg libraries that decoding needs.
SPACE_SKIPPED_REQUIREMENTS = ("gradio",)
# `--hardware` -> (the Hub's hardware flavour, extra requirements). ZeroGPU attaches a GPU to each call of a
# function decorated with `spaces.GPU` (app.py does so when Hugging Face sets SPACES_ZERO_GPU); its flavour keeps
# the Hub's historical name.
SPACE_HARDWARE = {"cpu": ("cpu-basic", ()), "zerogpu": ("zero-a10g", ("spaces",))}
HARDWARE_NOTES = {
    "cpu": "the free 2-core CPU (ONNX Runtime int8 for models with an `onnx/` export).",
    "zerogpu": "ZeroGPU: each analysis runs on a GPU slice inside `spaces.GPU` (PyTorch, bf16).",
}
# What a Space serving only exported models (onnx/ or openvino/ in every model repo) does not install: song
# analysis there runs ONNX Runtime / OpenVINO with numpy features and PyAV decoding (docs/serving.md, "OpenVINO backend").
TORCH_FREE_SKIPPED_REQUIREMENTS = ("torch", "torchaudio", "torchcodec", "peft", "accelerate", "datasets")


class HubError(ValueError):
    """A push, Space or load request that cannot be carried out as given."""


# ----------------------------------------------------------------------------------------------------------
# model repos
# ----------------------------------------------------------------------------------------------------------


def upload_kind(records: RunRecords, merged: bool) -> str:
    """What to upload: the spec's default (AST-DoRA: 'adapter'), or with `merged` the whole 'model'."""
    kinds = records.spec.upload_kinds
    if not merged:
        return kinds[0]
    if kinds[0] == "model":
        raise HubError(
            f"--merged / push_merged is for adapter runs; a {records.spec.display_name} run is always "
            "pushed whole."
        )
    return "model"


def _copy_matching(source: Path, folder: Path, patterns: tuple[str, ...]) -> list[str]:
    copied = []
    for pattern in patterns:
        for path in sorted(source.glob(pattern)):
            if path.is_file() and path.name not in copied:
                _place(path, folder / path.name)
                copied.append(path.name)
    return copied


def _place(path: Path, destination: Path) -> None:
    # Weights are hard-linked where the file system allows (a merged AST is ~350 MB) and never written to;
    # everything else is copied, because some of it is rewritten in the upload folder (adapter_config.json).
    if path.suffix in (".safetensors", ".onnx"):
        try:
            destination.hardlink_to(path)
            return
        except OSError:
            pass
    shutil.copy2(path, destination)


def _has_code(folder: Path, references) -> bool:
    """Whether `folder` holds the module of every remote-code reference ("module.Class") of a config."""
    files = {f"{ref.split('.')[0]}.py" for ref in references if isinstance(ref, str)}
    return all((folder / name).is_file() for name in files)


def _check_loadable(folder: Path, kind: str, source: Path) -> None:
    """Fail before uploading a folder that could not be loaded without this project."""
    weights = "adapter_model.safetensors" if kind == "adapter" else "*.safetensors"
    if not any(folder.glob(weights)):
        bin_files = sorted(path.name for path in source.glob("*.bin"))
        found = f" (found {', '.join(bin_files)}; this project ships safetensors only)" if bin_files else ""
        raise HubError(f"No {weights} in {source}{found}: is this the output_dir of a finished training run?")
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map", {})
    if "AutoModelForAudioClassification" not in auto_map or not _has_code(folder, auto_map.values()):
        raise HubError(
            f"{source / 'config.json'} has no auto_map / model code, so the upload would not load with "
            "trust_remote_code=True: it was saved before the model classes were registered for the Auto classes. "
            "Retrain, or re-save with this version: `model, _ = load_trained_model(OUTPUT_DIR); "
            "model.save_pretrained(OUTPUT_DIR)` adds them to OUTPUT_DIR (then push with --merged); copying its "
            "config.json and modeling_ast_mlp.py into OUTPUT_DIR/adapter fixes the adapter folder."
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise HubError(
            f"No preprocessor_config.json in {source}: the feature extractor must travel with the model."
        )
    pipelines = config.get("custom_pipelines") or {}
    pipeline_refs = [entry.get("impl") for entry in pipelines.values() if isinstance(entry, dict)]
    if "audio-classification" not in pipelines or not _has_code(folder, pipeline_refs):
        raise HubError(
            f"{source / 'config.json'} names no whole-song audio-classification pipeline (custom_pipelines) or its "
            'code is missing, so `pipeline("audio-classification", model=repo_id)` would hear only the first '
            "window: the run was saved before the pipeline travelled with models. Re-save it with this version: "
            "`model, feature_extractor = load_trained_model(OUTPUT_DIR); save_trained_model(model, feature_extractor, "
            "OUTPUT_DIR)` (ast_dora.models.factory) writes it into OUTPUT_DIR (then push with --merged)."
        )


# The exported copies of a model a push uploads: subfolder -> the files of that export (besides export.json),
# from the backends' registry (each backend names its own).
EXPORT_FILE_PATTERNS = upload_patterns()


def _copy_onnx_export(output_dir: Path, folder: Path) -> None:
    """`output_dir/onnx/` and `output_dir/openvino/` (the model exported merged, fp32 and int8) into the upload,
    for each the run has, if it was exported from the run's current weights."""
    for subfolder, patterns in EXPORT_FILE_PATTERNS.items():
        source = output_dir / subfolder
        files = sorted(p for pattern in patterns for p in source.glob(pattern)) if source.is_dir() else []
        if not files:
            continue
        try:
            check_export_is_current(str(output_dir), str(files[0]))
        except BackendError as error:
            raise HubError(str(error)) from None
        (folder / subfolder).mkdir()
        for path in [*files, source / RECORD_FILE]:
            if path.is_file():
                _place(path, folder / subfolder / path.name)


def build_upload_folder(
    output_dir: str | Path,
    folder: str | Path,
    repo_id: str,
    merged: bool = False,
    base_model: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write exactly what `push_run` uploads for the run in `output_dir` into the new or empty `folder`.

    `base_model` replaces the adapter's `base_model_name_or_path` (e.g. a run that started from a local copy of
    the AudioSet AST: the adapter must name a checkpoint that others can download).
    """
    output_dir, folder = Path(output_dir), Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise HubError(
            f"{folder} is not empty: give a new or empty folder (it receives exactly what would be uploaded)."
        )
    if folder.resolve() == output_dir.resolve() or output_dir.resolve() in folder.resolve().parents:
        raise HubError(
            f"{folder} is inside the run's output_dir {output_dir}: write the upload folder elsewhere."
        )
    records = RunRecords.read(output_dir)
    kind = upload_kind(records, merged)
    source = output_dir / ADAPTER_SUBFOLDER if kind == "adapter" else output_dir
    if kind == "adapter" and not (source / "adapter_config.json").is_file():
        raise HubError(
            f"No {source / 'adapter_config.json'}: pass --merged, or give an AST-DoRA run's output_dir."
        )
    folder.mkdir(parents=True, exist_ok=True)
    _copy_matching(source, folder, ADAPTER_FILE_PATTERNS if kind == "adapter" else MODEL_FILE_PATTERNS)
    _check_loadable(folder, kind, source)

    if kind == "adapter":
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        if base_model:
            adapter_config["base_model_name_or_path"] = base_model
            (folder / "adapter_config.json").write_text(
                json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"
            )
        records.adapter_config = adapter_config
        if not looks_like_hub_id(adapter_config.get("base_model_name_or_path")):
            logger.warning(
                "The adapter's base is %r, which is not a Hub id: others cannot load this adapter. Pass "
                "--base_model MIT/ast-finetuned-audioset-10-10-0.4593 (or the id it was copied from).",
                adapter_config.get("base_model_name_or_path"),
            )

    _copy_matching(output_dir, folder, RECORD_FILE_PATTERNS)
    _copy_onnx_export(output_dir, folder)
    if records.run_config:
        with open(folder / "run_config.yaml", "w") as f:
            yaml.safe_dump(public_config(records.run_config), f, sort_keys=False)
    build_model_card(records, repo_id=repo_id, kind=kind, license=license).save(folder / "README.md")
    return folder


def push_run(
    output_dir: str | Path,
    repo_id: str,
    merged: bool = False,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
):
    """Build the upload folder of `output_dir` and make `repo_id` (at branch `revision`) mirror it.

    Returns the `CommitInfo`; its `oid` is the commit to pin as `revision` when loading the remote code.
    """
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ast_dora_upload_") as tmp:
        folder = build_upload_folder(output_dir, Path(tmp) / "upload", repo_id, merged, base_model, license)
        repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if repo_url.repo_id != repo_id:
            # A bare name got the user's namespace: the card's snippet must name the full id.
            repo_id = repo_url.repo_id
            shutil.rmtree(folder)
            folder = build_upload_folder(output_dir, folder, repo_id, merged, base_model, license)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {Path(output_dir).name}{' (merged)' if merged else ''}",
            delete_patterns="*",
        )
    logger.info(
        "Pushed %s to %s; pin revision=%r when loading its remote code.",
        output_dir,
        repo_id,
        getattr(commit, "oid", None),
    )
    return commit


# ----------------------------------------------------------------------------------------------------------
# Space
# ----------------------------------------------------------------------------------------------------------


def _requirement_name(line: str) -> str:
    return re.split(r"[\[=<>!~;\s]", line.strip(), maxsplit=1)[0].lower()


def space_requirements(repo_root: Path, torch_free: bool = False) -> str:
    """`requirements.txt` of the repo root if there is one, else pyproject's dependencies (minus gradio); with
    `torch_free`, without `TORCH_FREE_SKIPPED_REQUIREMENTS` (for a Space whose models all have an export)."""
    text = _all_space_requirements(repo_root)
    if not torch_free:
        return text
    kept = [
        line
        for line in text.splitlines()
        if line.lstrip().startswith("#") or _requirement_name(line) not in TORCH_FREE_SKIPPED_REQUIREMENTS
    ]
    return (
        "# Torch-free: every model this Space serves has an ONNX or OpenVINO export, so "
        f"{', '.join(TORCH_FREE_SKIPPED_REQUIREMENTS)} are left out (`python -m ast_dora.hub space`).\n"
        + "\n".join(kept)
        + "\n"
    )


def model_has_export(model_id: str, token: str | None = None) -> bool:
    """Whether the Hub model repo `model_id` holds a file an exported backend runs (ONNX, OpenVINO, ...: the
    backends' registry says which)."""
    try:
        files = HfApi(token=token).list_repo_files(model_id)
    except Exception as error:  # noqa: BLE001 (offline, private, missing: then it cannot be counted on)
        logger.warning(
            "Could not list the files of %s (%s): keeping torch in the Space's requirements.",
            model_id,
            type(error).__name__,
        )
        return False
    return repo_files_have_export(files)


def _all_space_requirements(repo_root: Path) -> str:
    if (repo_root / "requirements.txt").is_file():
        return (repo_root / "requirements.txt").read_text()
    pyproject = repo_root / "pyproject.toml"
    if not pyproject.is_file():
        raise HubError(
            f"Neither requirements.txt nor pyproject.toml in {repo_root}: the Space needs its requirements."
        )
    import tomllib

    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kept = [
        dep
        for dep in dependencies
        if dep.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
        not in SPACE_SKIPPED_REQUIREMENTS
    ]
    return (
        "# Generated from pyproject.toml by `python -m ast_dora.hub space` (gradio comes from sdk_version).\n"
        + "\n".join(kept)
        + "\n"
    )


def hardware_of_flavor(flavor: str) -> str:
    """The `--hardware` a Hub hardware flavour is served as: ZeroGPU for `zero-*`, else the CPU setup."""
    return "zerogpu" if flavor.startswith("zero") else "cpu"


def current_space_hardware(api, space_id: str) -> str | None:
    """The hardware flavour the Space `space_id` has (or asked for), None when there is no such Space."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        runtime = api.get_space_runtime(space_id)
    except RepositoryNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 (offline, no permission: then it cannot be kept)
        raise HubError(
            f"Could not read the hardware of the Space {space_id} ({type(error).__name__}: {error}); give "
            "--hardware cpu or --hardware zerogpu to set it."
        ) from None
    flavor = runtime.requested_hardware or runtime.hardware
    return str(flavor) if flavor else None


def check_hardware(hardware: str) -> str:
    if hardware not in SPACE_HARDWARE:
        raise HubError(f"hardware={hardware!r} is not one of {', '.join(SPACE_HARDWARE)}.")
    return hardware


def build_space_folder(
    folder: str | Path,
    model_ids: list[str],
    repo_root: str | Path = REPO_ROOT,
    title: str = "GTZAN music genre classifier",
    license: str = "apache-2.0",
    hardware: str = "cpu",
    torch_free: bool | None = None,
) -> Path:
    """Write exactly what `push_space` uploads: app.py, requirements.txt, README.md (Space config header, with
    the hardware it suggests) and the `ast_dora` package app.py imports (so no remote code of the model repos
    runs). No packages.txt: nothing comes from apt. `hardware="zerogpu"` adds `spaces` to the requirements.

    `torch_free=None` writes torch-free requirements when every model has an export on the Hub
    (`model_has_export`) and the hardware is a CPU, today's otherwise, and logs which; True / False decide it
    (ZeroGPU runs the torch models, so it always keeps torch)."""
    folder, repo_root = Path(folder), Path(repo_root)
    flavor, extra_requirements = SPACE_HARDWARE[check_hardware(hardware)]
    if not model_ids:
        raise HubError("Give the models the Space serves: --models user/model-a,user/model-b")
    not_ids = [model_id for model_id in model_ids if not looks_like_hub_id(model_id)]
    if not_ids:
        raise HubError(
            f"{not_ids} are not Hub model ids (org/name): the Space can only load models from the Hub."
        )
    if not (repo_root / "app.py").is_file():
        raise HubError(
            f"No app.py in {repo_root}: the Space runs the repo's Gradio app, app.py at the repo root."
        )
    if folder.exists() and any(folder.iterdir()):
        raise HubError(
            f"{folder} is not empty: give a new or empty folder (it receives exactly what would be uploaded)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(repo_root / "app.py", folder / "app.py")
    if hardware == "zerogpu":
        if torch_free:
            raise HubError(
                "--hardware zerogpu runs the models in PyTorch on the GPU: it cannot be torch-free."
            )
        torch_free = False
    elif torch_free is None:
        torch_free = all(model_has_export(model_id) for model_id in model_ids)
    requirements = space_requirements(repo_root, torch_free=torch_free)
    logger.info(
        "requirements.txt %s",
        f"without {', '.join(TORCH_FREE_SKIPPED_REQUIREMENTS)}: every model has an ONNX or OpenVINO export"
        if torch_free
        else "with torch",
    )
    if extra_requirements:
        requirements += f"# {hardware} (python -m ast_dora.hub space --hardware {hardware})\n"
        requirements += "".join(f"{requirement}\n" for requirement in extra_requirements)
    (folder / "requirements.txt").write_text(requirements)
    package = Path(__file__).resolve().parent
    shutil.copytree(package, folder / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=importlib.metadata.version("gradio"),  # the Space runs the gradio we test with
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        license=license,
        models=list(model_ids),
        tags=["audio-classification", "music-genre-classification", "gtzan"],
        emoji="🎵",
        colorFrom="indigo",
        colorTo="pink",
        pinned=False,
        short_description="Music genre of a song: AST + DoRA and ViT-hybrid models trained on GTZAN",
        suggested_hardware=flavor,
    )
    models = "\n".join(f"- [{model_id}](https://huggingface.co/{model_id})" for model_id in model_ids)
    body = (
        f"# {title}\n\nUpload or record a song; the app cuts it into windows, classifies each and shows the "
        f"track's genre probabilities.\n\nModels (the `{SPACE_MODELS_VARIABLE}` variable of this Space, "
        f"comma-separated; change it under *Settings* or with `python -m ast_dora.hub space`):\n\n{models}\n\n"
        "Deployed with `python -m ast_dora.hub space` from the ast-dora project: `app.py`, the `ast_dora` package it "
        "imports and `requirements.txt` (audio is decoded by PyAV, whose wheels carry FFmpeg's libraries: no system "
        f"package). Hardware: {HARDWARE_NOTES[hardware]}\n"
    )
    SpaceCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}").save(folder / "README.md")
    return folder


def push_space(
    space_id: str,
    model_ids: list[str],
    token: str | None = None,
    private: bool | None = None,
    repo_root: str | Path = REPO_ROOT,
    title: str = "GTZAN music genre classifier",
    commit_message: str | None = None,
    hardware: str | None = None,
    torch_free: bool | None = None,
):
    """Create or update the Gradio Space `space_id` serving `model_ids`; returns the `CommitInfo`.

    `hardware` (`cpu` or `zerogpu`) is requested for the Space; None (the default) keeps an existing Space's
    hardware (a redeploy never downgrades a ZeroGPU Space) and gives a new one the free CPU."""
    api = HfApi(token=token)
    explicit = hardware is not None
    try:
        current = current_space_hardware(api, space_id)
    except HubError:
        if not explicit:  # the hardware to keep is unknown: ask for it
            raise
        current = None  # asked for explicitly: requested whatever it is now
    if not explicit:
        hardware = hardware_of_flavor(current) if current else "cpu"
        logger.info("Space hardware: %s", f"keeping {current}" if current else "cpu-basic for the new Space")
    flavor = SPACE_HARDWARE[check_hardware(hardware)][0]
    with tempfile.TemporaryDirectory(prefix="ast_dora_space_") as tmp:
        folder = build_space_folder(
            Path(tmp) / "space",
            model_ids,
            repo_root=repo_root,
            title=title,
            hardware=hardware,
            torch_free=torch_free,
        )
        repo_url = api.create_repo(
            space_id,
            repo_type="space",
            space_sdk="gradio",
            private=private,
            exist_ok=True,
            space_hardware=flavor,
        )
        # create_repo's hardware applies to a new Space only; an existing one is switched only when asked
        # (`--hardware`; ZeroGPU needs a PRO account or an Enterprise organisation: the Hub refuses otherwise).
        if explicit and current != flavor:
            api.request_space_hardware(repo_url.repo_id, flavor)
        # Set before the upload, so that the build the upload triggers already sees the models.
        api.add_space_variable(
            repo_url.repo_id,
            SPACE_MODELS_VARIABLE,
            ",".join(model_ids),
            description="Comma-separated model ids the app serves",
        )
        commit = api.upload_folder(
            repo_id=repo_url.repo_id,
            repo_type="space",
            folder_path=folder,
            commit_message=commit_message or f"Deploy app.py serving {', '.join(model_ids)}",
            # modules removed from the package do not linger in the Space, nor does an older deploy's packages.txt
            delete_patterns=["ast_dora/*", "packages.txt"],
        )
    logger.info(
        "Space %s updated (commit %s), serving %s.", repo_url.repo_id, getattr(commit, "oid", "?"), model_ids
    )
    return commit


# ----------------------------------------------------------------------------------------------------------
# loading a pushed model: prediction and evaluation
# ----------------------------------------------------------------------------------------------------------


def predict_files(classifier, paths: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """Track-level genre of each audio file through the project's one song analysis (`GenreClassifier.analyse`):
    the model's own windows, mean window probability, as the model was evaluated."""
    predictions = []
    for path in paths:
        analysis = classifier.analyse(str(path))
        predictions.append(
            {
                "file": str(path),
                "genre": analysis.genre,
                "probabilities": {label: round(p, 4) for label, p in analysis.top(top_k)},
                "windows": len(analysis.window_starts),
            }
        )
    return predictions


def evaluate_loaded_model(
    model, feature_extractor, config_args: list[str], eval_dir: str
) -> dict[str, float]:
    """Evaluate a loaded model on the validation and test splits of a run config's data, with the training
    pipeline's own metrics and reports (written to `eval_dir`, never to the config's output_dir)."""
    from .config import parse_config
    from .data import build_datasets
    from .models import spec_for_model
    from .models.factory import model_windows
    from .trainer import GenreTrainer, evaluate_splits

    run = parse_config([*config_args, "--output_dir", eval_dir])
    run.training.push_to_hub = False
    data = build_datasets(
        run.data,
        feature_extractor,
        default_window=model_windows(feature_extractor, spec_for_model(model)),
        seed=run.training.seed,
        output_dir=eval_dir,
    )
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_labels != list(data.labels):
        raise HubError(
            f"The model's labels {model_labels} are not the data's {list(data.labels)}: evaluate it on "
            "data with the genres it was trained on."
        )
    trainer = GenreTrainer(
        model=model,
        args=run.training,
        eval_dataset=data.datasets["validation"],
        processing_class=feature_extractor,
    )
    return evaluate_splits(trainer, data, eval_dir)


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------


def _model_ids(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_TORCH_FREE = {"auto": None, "yes": True, "no": False}


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `load --evaluate` passes unknown flags on to the run config, which has its own `--eval_*`.
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.hub",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser(
        "push", allow_abbrev=False, help="Upload a training run's model, feature extractor, card and records."
    )
    push.add_argument("output_dir", help="The output_dir of a finished finetune/run.py run.")
    push.add_argument("--repo_id", required=True, help="Hub model repo, e.g. me/gtzan-ast-dora.")
    push.add_argument(
        "--merged", action="store_true", help="AST-DoRA: push the merged model instead of the adapter."
    )
    push.add_argument(
        "--dry_run", metavar="FOLDER", help="Write the exact upload folder here and upload nothing."
    )
    push.add_argument(
        "--base_model", help="AST-DoRA adapter: the Hub id of its base (when trained from a local copy)."
    )
    push.add_argument("--revision", help="Branch to push to (created if needed); default main.")
    push.add_argument("--private", action="store_true", default=None, help="Create the repo private.")
    push.add_argument("--token", help="Hub token with write access (default: the logged-in one).")
    push.add_argument(
        "--license", default="apache-2.0", help="License in the model card (default apache-2.0)."
    )
    push.add_argument("--commit_message")

    space = commands.add_parser(
        "space", allow_abbrev=False, help="Create or update the Gradio Space running app.py."
    )
    space.add_argument("--repo_id", required=True, help="Hub Space id, e.g. me/gtzan-genres.")
    space.add_argument(
        "--models", required=True, type=_model_ids, help="Comma-separated model ids the app serves."
    )
    space.add_argument(
        "--dry_run", metavar="FOLDER", help="Write the exact upload folder here and upload nothing."
    )
    space.add_argument("--title", default="GTZAN music genre classifier")
    space.add_argument(
        "--app_dir", default=str(REPO_ROOT), help="Folder with app.py (default: the repo root)."
    )
    space.add_argument("--private", action="store_true", default=None)
    space.add_argument(
        "--torch_free",
        choices=tuple(_TORCH_FREE),
        default="auto",
        help="requirements.txt without torch, torchaudio, peft, accelerate, datasets: auto (default) "
        "when every model has an ONNX or OpenVINO export on the Hub; yes; no.",
    )
    space.add_argument("--token")
    space.add_argument(
        "--hardware",
        choices=tuple(SPACE_HARDWARE),
        default=None,
        help="cpu (the free 2-core CPU) or zerogpu (a GPU attached to each analysis; the Space's "
        "owner needs a PRO account or an Enterprise organisation). Default: keep an existing "
        "Space's hardware; cpu for a new one.",
    )

    load = commands.add_parser(
        "load",
        allow_abbrev=False,
        help="Load a pushed (or local) model; predict files or evaluate it.",
        description="Extra arguments after --evaluate --config CONFIG are config overrides "
        "(e.g. --split fault_filtered --data_dir /path/to/gtzan).",
    )
    load.add_argument(
        "model", help="Hub id or local folder (adapter repos are put on their base automatically)."
    )
    load.add_argument(
        "--revision", help="Commit (or branch) of the model repo; pin a commit for remote code."
    )
    load.add_argument("--token")
    load.add_argument(
        "--audio", nargs="+", default=[], help="Audio files to classify (JSON lines on stdout)."
    )
    load.add_argument("--top_k", type=int, default=3)
    load.add_argument(
        "--evaluate", action="store_true", help="Evaluate on the validation/test data of --config."
    )
    load.add_argument("--config", help="Run config giving the evaluation data (e.g. configs/ast_dora.yaml).")
    load.add_argument("--eval_dir", default="runs/hub_eval", help="Where evaluation metrics and reports go.")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The whole command line, checked without running anything: the arguments, and the config overrides that
    follow `load --evaluate --config CONFIG` (any other extra argument is an error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not (args.command == "load" and args.evaluate):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "load" and args.evaluate and not args.config:
        parser.error("--evaluate needs --config CONFIG (the run config whose data to evaluate on).")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    args, extra = parse_args(argv)
    try:
        if args.command == "push":
            if args.dry_run:
                folder = build_upload_folder(
                    args.output_dir, args.dry_run, args.repo_id, args.merged, args.base_model, args.license
                )
                print(f"Wrote the upload folder for {args.repo_id} to {folder} (nothing uploaded):")
                print(
                    "\n".join(
                        f"  {path.relative_to(folder)}"
                        for path in sorted(folder.rglob("*"))
                        if path.is_file()
                    )
                )
            else:
                commit = push_run(
                    args.output_dir,
                    args.repo_id,
                    args.merged,
                    args.token,
                    args.private,
                    args.revision,
                    args.commit_message,
                    args.base_model,
                    args.license,
                )
                print(
                    f'Pushed: {commit.commit_url}\nPin it when loading remote code: revision="{commit.oid}"'
                )
        elif args.command == "space":
            if args.dry_run:
                folder = build_space_folder(
                    args.dry_run,
                    args.models,
                    repo_root=args.app_dir,
                    title=args.title,
                    hardware=args.hardware or "cpu",
                    torch_free=_TORCH_FREE[args.torch_free],
                )
                hardware = (
                    f"the hardware {SPACE_HARDWARE[args.hardware][0]}"
                    if args.hardware
                    else "the Space's hardware kept (cpu-basic for a new Space)"
                )
                print(
                    f"Wrote the Space folder to {folder} (nothing uploaded); the Space variable "
                    f"{SPACE_MODELS_VARIABLE}={','.join(args.models)} would be set, {hardware}."
                )
                print((folder / "requirements.txt").read_text().splitlines()[0])
            else:
                commit = push_space(
                    args.repo_id,
                    args.models,
                    args.token,
                    args.private,
                    args.app_dir,
                    args.title,
                    hardware=args.hardware,
                    torch_free=_TORCH_FREE[args.torch_free],
                )
                print(f"Space updated: {commit.commit_url}")
        else:
            from .models.factory import load_trained_model, model_type_of

            hub_kwargs = {
                key: value for key, value in (("revision", args.revision), ("token", args.token)) if value
            }
            model, feature_extractor = load_trained_model(args.model, **hub_kwargs)
            labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
            print(
                json.dumps(
                    {
                        "model": args.model,
                        "model_type": model_type_of(model),
                        "labels": labels,
                        "parameters": sum(p.numel() for p in model.parameters()),
                    }
                )
            )
            if args.audio:
                from .inference import GenreClassifier

                # The classifier casts the model it is given; evaluation afterwards needs the fp32 weights.
                classifier = GenreClassifier(
                    model, feature_extractor, bf16=False if args.evaluate else None, name=args.model
                )
                for prediction in predict_files(classifier, args.audio, args.top_k):
                    print(json.dumps(prediction))
            if args.evaluate:
                metrics = evaluate_loaded_model(
                    model, feature_extractor, ["--config", args.config, *extra], args.eval_dir
                )
                print(json.dumps(metrics, indent=2))
    except HubError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "CARD_KINDS",
    "HubError",
    "SPACE_MODELS_VARIABLE",
    "build_space_folder",
    "build_upload_folder",
    "evaluate_loaded_model",
    "predict_files",
    "push_run",
    "push_space",
    "upload_kind",
]


if __name__ == "__main__":
    sys.exit(main())
