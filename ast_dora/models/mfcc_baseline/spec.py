"""What the project needs to know about the classical baseline: its registry entry (`ast_dora.models.registry`)."""

from __future__ import annotations

from ..builders import hub_kwargs, label_kwargs
from ..registry import ModelSpec
from . import register_auto_classes
from .feature_extraction_mfcc_baseline import MfccBaselineFeatureExtractor

# Short windows give the classifier many examples per track; 3-s windows with a 1-s hop were the best of full
# clips, 10, 6, 4 and 3 s in a probe on the real clips (docs/results.md, "Real music").
WINDOW_SECONDS, HOP_SECONDS = 3.0, 1.0
TINY_CONFIG = dict(hidden_size=0)


# config.json's `model_type` (MfccBaselineConfig.model_type; a test holds the two equal): the spec imports no transformers
# configuration module, which imports torch wherever it is installed.
HF_MODEL_TYPE = "genre_mfcc_baseline"


def config_class():
    from .configuration_mfcc_baseline import MfccBaselineConfig

    return MfccBaselineConfig


def torch_free_feature_extractor(path_or_id: str, **hub_kwargs) -> MfccBaselineFeatureExtractor:
    """The saved feature extractor, loaded by its own class (numpy; no Auto class, no torch)."""
    return MfccBaselineFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)


def model_class():
    """The model class (torch: imported here, only when a model is built or loaded), registered with the Auto
    classes."""
    from . import __getattr__ as load_modeling  # the package's lazy loader registers the model classes

    return load_modeling("MfccBaselineForAudioClassification")


def build_feature_extractor(model_args) -> MfccBaselineFeatureExtractor:
    if model_args.model_name_or_path:
        from transformers import AutoFeatureExtractor

        register_auto_classes()
        return AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path, **hub_kwargs(model_args))
    return MfccBaselineFeatureExtractor(window_seconds=WINDOW_SECONDS)


def build_model(model_args, labels: list[str]):
    MfccBaselineForAudioClassification = model_class()
    overrides = {**model_args.parsed_config_overrides(), **label_kwargs(labels)}
    if model_args.model_name_or_path:
        return MfccBaselineForAudioClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, **overrides, **hub_kwargs(model_args)
        )
    return MfccBaselineForAudioClassification(config_class()(**overrides))


def random_model(model_args, size: str, labels: list[str]):
    return model_class()(config_class()(**(TINY_CONFIG if size == "tiny" else {}), **label_kwargs(labels)))


SPEC = ModelSpec(
    name="mfcc_baseline",
    display_name="MFCC baseline",
    hf_model_type=HF_MODEL_TYPE,
    register_auto_classes=register_auto_classes,
    torch_free_feature_extractor=torch_free_feature_extractor,
    load_model_class=model_class,
    build_model=build_model,
    build_feature_extractor=build_feature_extractor,
    default_feature_extractor=lambda: MfccBaselineFeatureExtractor(window_seconds=WINDOW_SECONDS),
    random_model=random_model,
    window_seconds=WINDOW_SECONDS,
    hop_seconds=HOP_SECONDS,
    inference_batch_size=64,  # a window is 296 numbers: the features, not the model, are the work
    inference_first_batch_size=8,
    bench_batch_size=64,
    search_fields={},
    card_tags=("mfcc", "logistic-regression", "baseline"),
    card_description=(
        "classical baseline: logistic regression on per-window mean and standard deviation of 20 MFCCs and 128 "
        "log-mels, `MfccBaselineForAudioClassification` (remote code shipped in this repo)"
    ),
    card_summary={"model": "a logistic-regression baseline on MFCC and log-mel statistics"},
    upload_kinds=("model",),
    gpu_check=None,  # nothing for a GPU to do: the features are numpy, the model is one small matmul
)

__all__ = ["HOP_SECONDS", "SPEC", "TINY_CONFIG", "WINDOW_SECONDS"]
