"""What the project needs to know about AST-DoRA: its registry entry (`ast_dora.models.registry`)."""

from __future__ import annotations

from ..registry import GPUCheckSettings, ModelSpec

# The builders import torch and peft: here only when called, so that the registry imports neither.


def _model_class():
    from .modeling_ast_mlp import ASTWithMLPHeadForAudioClassification

    return ASTWithMLPHeadForAudioClassification


def _dora(name: str):
    def call(*args, **kwargs):
        from . import dora

        return getattr(dora, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


# config.json's `model_type` (transformers' `ASTConfig.model_type`; a test holds the two equal): the spec
# imports no transformers configuration module, which imports torch wherever it is installed.
HF_MODEL_TYPE = "audio-spectrogram-transformer"


def default_feature_extractor():
    """The AudioSet checkpoints' feature extractor: their settings are the class defaults."""
    from transformers import ASTFeatureExtractor

    return ASTFeatureExtractor()


def batched_features(feature_extractor):
    from .fbank import ASTFbankFeatures  # numpy only

    return ASTFbankFeatures(feature_extractor)


def feature_settings(path_or_id: str, **hub_kwargs):
    """The saved `ASTFeatureExtractor`'s settings (preprocessor_config.json) as attributes, for a process without
    torch, where transformers' class cannot be built; `feature_extractor_type` names the class they belong to."""
    import json
    from types import SimpleNamespace

    from ..factory import find_model_file

    path = find_model_file(path_or_id, "preprocessor_config.json", **hub_kwargs)
    if path is None:
        raise FileNotFoundError(
            f"{path_or_id} has no preprocessor_config.json: save the model with its feature extractor."
        )
    with open(path) as f:
        settings = json.load(f)
    if settings.get("feature_extractor_type") != "ASTFeatureExtractor":
        raise ValueError(
            f"{path} describes a {settings.get('feature_extractor_type')}, not an ASTFeatureExtractor."
        )
    return SimpleNamespace(**settings)


build_ast_dora, build_feature_extractor, merge_dora, random_model, write_tiny_checkpoint = (
    _dora(name)
    for name in (
        "build_ast_dora",
        "build_feature_extractor",
        "merge_dora",
        "random_model",
        "write_tiny_checkpoint",
    )
)

DEFAULT_CHECKPOINT = "MIT/ast-finetuned-audioset-10-10-0.4593"

SPEC = ModelSpec(
    name="ast_dora",
    display_name="AST-DoRA",
    hf_model_type=HF_MODEL_TYPE,
    load_model_class=_model_class,
    torch_free_feature_extractor=feature_settings,
    batched_features=batched_features,
    # int8 (NNCF) leaves the patch projection (the raw spectrogram in) and the classifier head (the logits out) in
    # fp32: the two layers whose rounding every window's answer feels most, a few percent of the compute.
    int8_ignored_patterns=(r".*patch_embeddings.*", r".*classifier.*", r"logits"),
    build_model=build_ast_dora,
    build_feature_extractor=build_feature_extractor,
    default_feature_extractor=default_feature_extractor,
    random_model=random_model,
    # AST checkpoints take 1024 frames of 10 ms, i.e. 10.24 s, cut back to back.
    window_seconds=10.24,
    hop_seconds=10.24,
    inference_batch_size=6,  # an AST window is 1214 tokens of 768: a small batch bounds the activations
    inference_first_batch_size=2,  # a first result after 2 windows (~1/3 of a 6-window batch's wait)
    bench_batch_size=8,  # configs/ast_dora.yaml: 2 windows x 8 accumulation steps, timed as 8 per step
    search_fields={
        "dora_rank": int,
        "dora_alpha": float,
        "dora_dropout": float,
        "min_layer": int,
        "classifier_hidden_size": int,
        "classifier_dropout": float,
    },
    card_tags=("audio-spectrogram-transformer", "dora", "peft"),
    card_description=(
        "Audio Spectrogram Transformer with DoRA adapters on the FFN linears of its top layers and a small MLP "
        "head, `ASTWithMLPHeadForAudioClassification` (remote code shipped in this repo)"
    ),
    card_summary={
        "adapter": "the DoRA adapter and MLP head of an AST",
        "model": "an AST with DoRA adapters merged into its weights and an MLP head",
    },
    aliases=("ast",),
    upload_kinds=("adapter", "model"),
    default_checkpoint=DEFAULT_CHECKPOINT,
    tiny_checkpoint=write_tiny_checkpoint,
    prefix_cache=True,
    for_inference=merge_dora,
    gpu_check=GPUCheckSettings(
        batch_sizes=((8,), (32,)),
        # configs/ast_dora.yaml's fault-filtered split: 443 / 197 tracks, three 10.24-s windows per 30-s clip.
        recipe_tracks=(443, 197),
        mfu_target=0.35,
        song_latency_target_s=0.5,
    ),
)

__all__ = ["DEFAULT_CHECKPOINT", "SPEC"]
