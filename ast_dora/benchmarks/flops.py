"""Analytic FLOPs per sample of the project's models (multiply-adds x 2, matmuls only), for MFU figures.

Both benchmarks (`train`, `song`) and the GPU check take their FLOPs from here.
"""

from __future__ import annotations

from transformers import ASTConfig

from ..models.genre_vit_hybrid import GenreViTHybridConfig


def _layer_flops(tokens: int, hidden: int, intermediate: int) -> dict[str, float]:
    return {
        "attention_projections": 2 * tokens * hidden * 4 * hidden,  # q, k, v and output
        "attention_scores_values": 2 * 2 * tokens * tokens * hidden,  # QK^T and PV
        "ffn": 2 * 2 * tokens * hidden * intermediate,
    }


def vit_hybrid_flops(config) -> dict[str, float]:
    """Forward and training FLOPs per sample of a `GenreViTHybridConfig` (every weight trains: 3x forward)."""
    tokens = config.num_patches + 1
    patch = 2 * config.num_patches * config.num_channels * config.patch_size**2 * config.hidden_size
    layer = sum(_layer_flops(tokens, config.hidden_size, config.intermediate_size).values())
    head = 2 * config.hidden_size * config.num_labels
    forward = patch + config.num_hidden_layers * layer + head
    return {"forward": forward, "train": 3 * forward, "tokens": tokens}


def ast_dora_flops(config, min_layer: int, classifier_hidden_size: int, num_labels: int) -> dict[str, float]:
    """AST-DoRA FLOPs per sample, through all layers ("uncached") and from the frozen-prefix cache ("cached")."""
    freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    time_ = (config.max_length - config.patch_size) // config.time_stride + 1
    tokens = freq * time_ + 2
    hidden, intermediate, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    patch = 2 * freq * time_ * config.patch_size**2 * hidden
    layer = _layer_flops(tokens, hidden, intermediate)
    head = 2 * (hidden * classifier_hidden_size + classifier_hidden_size * num_labels)
    top = layers - min_layer
    forward_full = patch + layers * sum(layer.values()) + head
    forward_top = top * sum(layer.values()) + head
    # Backward: the head's weights and inputs (2x); layers above min_layer pass input gradients through frozen
    # projections and FFN (1x) and through the attention scores and values (2x); in layer min_layer itself
    # only fc2's input gradient is needed (fc1's adapters need fc1's output gradient, not its input's).
    above = layer["attention_projections"] + 2 * layer["attention_scores_values"] + layer["ffn"]
    backward = 2 * head + (top - 1) * above + layer["ffn"] / 2
    return {
        "forward_uncached": forward_full,
        "forward_cached": forward_top,
        "train_uncached": forward_full + backward,
        "train_cached": forward_top + backward,
        "tokens": tokens,
    }


def forward_flops(model) -> float:
    """Analytic forward FLOPs per window of a loaded genre model (ViT-hybrid, or merged AST with its MLP head)."""
    from ..models import base_model_of

    return forward_flops_of_config(base_model_of(model).config)


def forward_flops_of_config(config) -> float:
    """`forward_flops` from the model's config alone (e.g. a model run from its ONNX export)."""
    if not hasattr(config, "to_json_string"):
        # An exported model's config.json read without transformers (`SavedConfig`): its transformers config.
        from ..models import spec_for_config

        config = spec_for_config(config).model_class.config_class.from_dict(config.to_dict())
    if isinstance(config, GenreViTHybridConfig):
        return vit_hybrid_flops(config)["forward"]
    if isinstance(config, ASTConfig):
        hidden = getattr(config, "classifier_hidden_size", 200)
        return ast_dora_flops(config, config.num_hidden_layers, hidden, config.num_labels)["forward_uncached"]
    raise TypeError(f"No FLOP formula for a model with a {type(config).__name__}.")


__all__ = ["ast_dora_flops", "forward_flops", "forward_flops_of_config", "vit_hybrid_flops"]
