"""What the project needs to know about the ViT-hybrid: its registry entry (`ast_dora.models.registry`)."""

from __future__ import annotations

from ..builders import hub_kwargs, label_kwargs
from ..registry import GPUCheckSettings, ModelSpec
from . import register_auto_classes
from .feature_extraction_genre_vit_hybrid import GenreViTHybridFeatureExtractor

# ModelArguments fields that go onto the config when set (empty keeps the published architecture's value).
CONFIG_FIELDS = ("loss", "focal_gamma", "hidden_dropout_prob", "drop_path_rate")
# A few-layer model for tests and `--tiny` benchmarks; the feature extractor, and so the input, stays the real one.
TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def build_feature_extractor(model_args) -> GenreViTHybridFeatureExtractor:
    if model_args.model_name_or_path:
        from transformers import AutoFeatureExtractor

        register_auto_classes()
        return AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path, **hub_kwargs(model_args))
    return GenreViTHybridFeatureExtractor()


def _config_fields(model_args) -> dict:
    return {
        name: getattr(model_args, name) for name in CONFIG_FIELDS if getattr(model_args, name) is not None
    }


# config.json's `model_type` (GenreViTHybridConfig.model_type; a test holds the two equal): the spec imports no transformers
# configuration module, which imports torch wherever it is installed.
HF_MODEL_TYPE = "genre_vit_hybrid"


def config_class():
    from .configuration_genre_vit_hybrid import GenreViTHybridConfig

    return GenreViTHybridConfig


def torch_free_feature_extractor(path_or_id: str, **hub_kwargs) -> GenreViTHybridFeatureExtractor:
    """The saved feature extractor, loaded by its own class (numpy; no Auto class, no torch)."""
    return GenreViTHybridFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)


def model_class():
    """The model class (torch: imported here, only when a model is built or loaded), registered with the Auto
    classes."""
    from . import __getattr__ as load_modeling  # the package's lazy loader registers the model classes

    return load_modeling("GenreViTHybridForAudioClassification")


def build_model(model_args, labels: list[str]):
    GenreViTHybridForAudioClassification = model_class()
    fields = _config_fields(model_args)
    overrides = {**model_args.parsed_config_overrides(), **fields, **label_kwargs(labels)}
    if model_args.model_name_or_path:
        return GenreViTHybridForAudioClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, **overrides, **hub_kwargs(model_args)
        )
    return GenreViTHybridForAudioClassification(config_class()(**overrides))


def random_model(model_args, size: str, labels: list[str]):
    # The run's loss and regularisation fields apply here too (the GPU check trains with the config's focal loss).
    config = config_class()(
        **(TINY_CONFIG if size == "tiny" else {}), **_config_fields(model_args), **label_kwargs(labels)
    )
    return model_class()(config)


SPEC = ModelSpec(
    name="vit_hybrid",
    display_name="ViT-hybrid",
    hf_model_type=HF_MODEL_TYPE,
    register_auto_classes=register_auto_classes,
    torch_free_feature_extractor=torch_free_feature_extractor,
    load_model_class=model_class,
    # int8 (NNCF) leaves the patch projection (the raw spectrogram in) and the classifier head (the logits out) in
    # fp32: the two layers whose rounding every window's answer feels most, a few percent of the compute.
    int8_ignored_patterns=(r".*patch_embeddings.*", r".*classifier.*", r"logits"),
    build_model=build_model,
    build_feature_extractor=build_feature_extractor,
    default_feature_extractor=GenreViTHybridFeatureExtractor,
    random_model=random_model,
    # Published on 4-s windows with a 2-s hop.
    window_seconds=4.0,
    hop_seconds=2.0,
    inference_batch_size=32,
    inference_first_batch_size=8,  # the first 32 s of a song, a quarter of a full batch's wait
    bench_batch_size=64,  # configs/vit_hybrid.yaml
    search_fields={"hidden_dropout_prob": float, "drop_path_rate": float, "focal_gamma": float, "loss": str},
    card_tags=("vit", "from-scratch"),
    card_description=(
        "ViT-hybrid genre classifier trained from scratch on normalised log-mel images (conv patch projection, "
        "pre-norm transformer blocks, SpecAugment, DropPath), `GenreViTHybridForAudioClassification` (remote "
        "code shipped in this repo)"
    ),
    card_summary={"model": "a ViT-hybrid trained from scratch"},
    upload_kinds=("model",),
    # Its 118 tokens are too short for PyTorch's CPU SDPA kernel to pay off in bf16 (docs/results.md, "Training speed and MFU").
    eager_attention_on_cpu_bf16=True,
    gpu_check=GPUCheckSettings(
        batch_sizes=((64,), (256, 128)),  # configs/vit_hybrid.yaml's batch, then the largest that fits
        # The seed notebook's recipe: GTZAN's 1000 tracks split 8:1:1 (14 four-second windows per 30-s clip).
        recipe_tracks=(800, 100),
        mfu_target=0.25,
        # The notebook it reproduces ran 124 epochs in 35 minutes on an RTX 4070 Super.
        recipe_minutes_target=10.0,
        song_latency_target_s=0.2,
    ),
)

__all__ = ["SPEC", "TINY_CONFIG"]
