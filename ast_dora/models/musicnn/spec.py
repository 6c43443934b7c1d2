"""What the project needs to know about musicnn: its registry entry (`ast_dora.models.registry`)."""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..builders import hub_kwargs, label_kwargs
from ..registry import ModelSpec
from . import register_auto_classes
from .feature_extraction_musicnn import MusicnnFeatureExtractor

# The published models' input: 187 frames = 3 s at 16 kHz; patches back to back as upstream's tagger cuts them.
WINDOW_SECONDS, HOP_SECONDS = 3.0, 3.0
CONVERT_COMMAND = "python -m ast_dora.models.musicnn.convert --variant MSD_musicnn"
# Narrow layers, few tags: the shapes of musicnn (96 mel bands, 187 frames) at a fraction of its width.
TINY_CONFIG = dict(
    timbral_filters=8,
    temporal_filters=4,
    midend_filters=8,
    backend_units=16,
    tag_labels=["rock", "pop", "electronic", "jazz", "guitar"],
)


# config.json's `model_type` (MusicnnConfig.model_type; a test holds the two equal): the spec imports no transformers
# configuration module, which imports torch wherever it is installed.
HF_MODEL_TYPE = "genre_musicnn"


def config_class():
    from .configuration_musicnn import MusicnnConfig

    return MusicnnConfig


def torch_free_feature_extractor(path_or_id: str, **hub_kwargs) -> MusicnnFeatureExtractor:
    """The saved feature extractor, loaded by its own class (numpy; no Auto class, no torch)."""
    return MusicnnFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)


def model_class():
    """The model class (torch: imported here, only when a model is built or loaded), registered with the Auto
    classes."""
    from . import __getattr__ as load_modeling  # the package's lazy loader registers the model classes

    return load_modeling("MusicnnForAudioClassification")


def _check_local(model_args) -> None:
    path = model_args.model_name_or_path
    looks_local = path.startswith((".", "/", "~")) or path.startswith("models/") or Path(path).exists()
    if looks_local and not (Path(path).expanduser() / "config.json").is_file():
        raise ConfigError(
            f"model_name_or_path={path!r} has no converted musicnn model: write it first with "
            f"`{CONVERT_COMMAND} {path}`."
        )


def build_feature_extractor(model_args) -> MusicnnFeatureExtractor:
    if model_args.model_name_or_path:
        _check_local(model_args)
        from transformers import AutoFeatureExtractor

        register_auto_classes()
        return AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path, **hub_kwargs(model_args))
    return MusicnnFeatureExtractor(window_seconds=WINDOW_SECONDS)


def build_model(model_args, labels: list[str]):
    MusicnnForAudioClassification = model_class()
    overrides = {**model_args.parsed_config_overrides(), **label_kwargs(labels)}
    if model_args.model_name_or_path:
        _check_local(model_args)
        # The genre head of a converted folder has the 50 tags as classes: a new head is drawn for the genres.
        return MusicnnForAudioClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, **overrides, **hub_kwargs(model_args)
        )
    return MusicnnForAudioClassification(config_class()(**overrides))


def random_model(model_args, size: str, labels: list[str]):
    return model_class()(config_class()(**(TINY_CONFIG if size == "tiny" else {}), **label_kwargs(labels)))


def write_tiny_checkpoint(path: str) -> None:
    """An offline stand-in for a converted musicnn: tiny, random, saved as the converter saves (smoke runs)."""
    if (Path(path) / "config.json").is_file():
        return
    register_auto_classes()
    tags = TINY_CONFIG["tag_labels"]
    model = model_class()(config_class()(**TINY_CONFIG, **label_kwargs(tags)))
    model.save_pretrained(path)
    MusicnnFeatureExtractor(window_seconds=WINDOW_SECONDS).save_pretrained(path)


SPEC = ModelSpec(
    name="musicnn",
    display_name="musicnn",
    hf_model_type=HF_MODEL_TYPE,
    register_auto_classes=register_auto_classes,
    torch_free_feature_extractor=torch_free_feature_extractor,
    load_model_class=model_class,
    build_model=build_model,
    build_feature_extractor=build_feature_extractor,
    default_feature_extractor=lambda: MusicnnFeatureExtractor(window_seconds=WINDOW_SECONDS),
    random_model=random_model,
    window_seconds=WINDOW_SECONDS,
    hop_seconds=HOP_SECONDS,
    inference_batch_size=32,
    inference_first_batch_size=8,
    bench_batch_size=32,
    search_fields={},
    card_tags=("musicnn", "music-tagging", "cnn"),
    card_description=(
        "musicnn (Pons & Serra, ISMIR 2019 LBD), pretrained music tagger with a genre head beside its 50-tag head, "
        "`MusicnnForAudioClassification` (remote code shipped in this repo)"
    ),
    card_summary={"model": "musicnn, a pretrained music-tagging CNN, fine-tuned for genres"},
    upload_kinds=("model",),
    tiny_checkpoint=write_tiny_checkpoint,
    # The frozen network's penultimate features, computed once per window (`cache_frozen_features`).
    prefix_cache=True,
    gpu_check=None,  # 0.8 M parameters on 3-s patches: a CPU model
)

__all__ = ["CONVERT_COMMAND", "HOP_SECONDS", "SPEC", "TINY_CONFIG", "WINDOW_SECONDS"]
