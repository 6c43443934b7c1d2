"""The model registry: what the rest of the project needs to know about each model, in one `ModelSpec`.

Each model folder (`ast_dora/models/<name>/spec.py`) defines one spec; `ast_dora/models/__init__.py` registers
it. Training, search, inference, the Hub tools, the model card, the demo and the benchmarks ask the registry
(`get_model_spec(model_type)`, `spec_for_config(config)`, `spec_for_model(model)`) instead of comparing
`model_type` strings, so adding a model is one folder plus one `register_model` line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

_REGISTRY: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class GPUCheckSettings:
    """How `python -m ast_dora.bench gpu` trains a model, which recipe it projects, and the targets it reports on
    an H100 / H200 (targets are reported beside the steps, not part of passing)."""

    # Per-step batches to time, in groups: of each group the first size that fits in GPU memory is timed.
    batch_sizes: tuple[tuple[int, ...], ...]
    # Train and validation tracks per epoch of the published recipe the wall-time projection is for (30-s clips).
    recipe_tracks: tuple[int, int]
    mfu_target: float | None = None  # training MFU at the largest batch timed (through all layers)
    recipe_minutes_target: float | None = None  # projected wall time of the full recipe at the config's batch
    song_latency_target_s: float | None = None  # analysis of a 3-min song


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model of the project.

    Builders take the run's `ModelArguments` (duck-typed: a spec never imports the config module).
    """

    name: str  # the `model_type` value in configs, e.g. "vit_hybrid"
    display_name: str  # how the demo and the benchmarks name it, e.g. "ViT-hybrid"
    hf_model_type: str  # `config.model_type` of a saved model (config.json "model_type")
    # () -> the transformers class a saved (merged) model loads with: imported when asked for (`model_class`),
    # so that the registry, and song analysis on an exported model, import no torch.
    load_model_class: Callable[[], type]
    build_model: Callable[[Any, list[str]], Any]  # (model_args, labels) -> model to train
    build_feature_extractor: Callable[[Any], Any]  # model_args -> feature extractor
    default_feature_extractor: Callable[
        [], Any
    ]  # the feature extractor of the default checkpoint, built offline
    # (model_args, size "default" | "tiny", labels) -> the model to train, random weights (benchmarks, tests)
    random_model: Callable[[Any, str, list[str]], Any]
    window_seconds: float  # training window the model was published with
    hop_seconds: float  # training hop between windows
    inference_batch_size: int  # windows per forward pass in song analysis
    bench_batch_size: int  # per-step batch of `bench train`
    search_fields: Mapping[str, type]  # ModelArguments fields a search space may sample, with their types
    card_tags: tuple[str, ...]  # model card tags beside the common ones
    card_description: str  # the model card's "Model" line
    card_summary: Mapping[str, str]  # upload kind -> what the repo holds, for the card's first sentence
    aliases: tuple[
        str, ...
    ] = ()  # other names benchmark command lines accept (`get_model_spec(..., aliases=True)`)
    upload_kinds: tuple[str, ...] = ("model",)  # what `hub push` can upload; the first is the default
    default_checkpoint: str | None = None  # model_name_or_path when none is given (None: from scratch)
    tiny_checkpoint: Callable[[str], None] | None = None  # writes an offline stand-in checkpoint (smoke runs)
    prefix_cache: bool = False  # frozen layers whose output the frozen-prefix cache can compute once
    eager_attention_on_cpu_bf16: bool = False  # eager attention beats CPU SDPA in bf16 (short sequences)
    gpu_check: GPUCheckSettings | None = None  # None: `bench gpu` leaves the model out
    # Windows in the first batch of a song analysis, so that a streamed first result comes sooner (None: a full
    # `inference_batch_size` batch); the later batches are full.
    inference_first_batch_size: int | None = None
    # A training-time model -> the plain transformers model inference runs (e.g. adapters merged).
    for_inference: Callable[[Any], Any] = field(default=lambda model: model)
    # Node-name patterns (regular expressions of the exported graph) NNCF's int8 quantization leaves in fp32
    # (`python -m ast_dora.export openvino --quantize int8`).
    int8_ignored_patterns: tuple[str, ...] = ()
    # (path_or_id, **hub_kwargs) -> the saved feature extractor's settings where its class cannot be built
    # without torch (transformers' `ASTFeatureExtractor`): song analysis computes the features itself in numpy
    # (the spec's `batched_features`). None: the class loads without torch.
    torch_free_feature_extractor: Callable[..., Any] | None = None
    # feature_extractor -> a callable (batch, samples) float32 -> input_values (float32 numpy) that song analysis
    # calls instead of the feature extractor: the same numbers, a batch at a time, numpy only (no torch). None:
    # the feature extractor itself (`ast_dora.models.ast_mlp.fbank.ASTFbankFeatures` is AST's).
    batched_features: Callable[[Any], Callable[[Any], Any]] | None = None
    # () -> registers the model's classes with transformers' Auto classes (idempotent). Called by the factory
    # before it uses an Auto class (`register_auto_classes`), never at import: transformers' configuration module
    # imports torch wherever it is installed, and song analysis on an exported model must not.
    register_auto_classes: Callable[[], None] | None = None

    @property
    def model_class(self) -> type:
        return self.load_model_class()

    @property
    def default_windows(self) -> tuple[float, float]:
        return self.window_seconds, self.hop_seconds


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"A model named {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def register_auto_classes() -> None:
    """Every registered model's classes with transformers' Auto classes (idempotent)."""
    for spec in _REGISTRY.values():
        if spec.register_auto_classes is not None:
            spec.register_auto_classes()


def model_types() -> tuple[str, ...]:
    """The registered `model_type` values, in registration order (the first is the default)."""
    return tuple(_REGISTRY)


def get_model_spec(model_type: str, aliases: bool = False) -> ModelSpec:
    """The spec registered as `model_type`; with `aliases`, a spec's other names count too (benchmark flags)."""
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    for spec in _REGISTRY.values():
        if aliases and model_type in spec.aliases:
            return spec
    raise ConfigError(
        f"model_type={model_type!r} is not a model of this project; use one of {', '.join(_REGISTRY)}."
    )


def spec_for_config(config: Any) -> ModelSpec:
    """The spec of a saved model, from its config (a `PretrainedConfig` or config.json's dict)."""
    hf_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    for spec in _REGISTRY.values():
        if spec.hf_model_type == hf_type:
            return spec
    known = ", ".join(f"{spec.hf_model_type} ({spec.name})" for spec in _REGISTRY.values())
    raise ConfigError(
        f"A model of config model_type {hf_type!r} was not trained by this project; it knows {known}."
    )


def base_model_of(model: Any) -> Any:
    """The transformers model inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def spec_for_model(model: Any) -> ModelSpec:
    return spec_for_config(base_model_of(model).config)


__all__ = [
    "GPUCheckSettings",
    "ModelSpec",
    "base_model_of",
    "get_model_spec",
    "model_types",
    "register_auto_classes",
    "register_model",
    "spec_for_config",
    "spec_for_model",
]
