"""Build, wrap, save and load the two models behind one `model_type` switch."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    PreTrainedModel,
    SequenceFeatureExtractor,
)
from transformers.dynamic_module_utils import custom_object_save

from ..prefix_cache import frozen_prefix_modules, keep_in_eval_mode
from .ast_mlp import ASTWithMLPHeadForAudioClassification
from .fused_dora import fuse_dora_linears
from .genre_vit_hybrid import (
    GenreViTHybridConfig,
    GenreViTHybridFeatureExtractor,
    GenreViTHybridForAudioClassification,
)
from .tiny_ast import make_tiny_ast

logger = logging.getLogger(__name__)

# (window_seconds, hop_seconds) each model sees: the ViT-hybrid was published on 4-s windows with a 2-s
# hop; AST checkpoints take 1024 frames of 10 ms, i.e. 10.24 s, cut back to back.
DEFAULT_WINDOWS = {"vit_hybrid": (4.0, 2.0), "ast_dora": (10.24, 10.24)}
ADAPTER_SUBFOLDER = "adapter"


def default_window(model_type: str) -> tuple[float, float]:
    return DEFAULT_WINDOWS[model_type]


def _hub_kwargs(model_args) -> dict[str, Any]:
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def build_feature_extractor(model_args) -> SequenceFeatureExtractor:
    if model_args.make_tiny_checkpoint:
        make_tiny_ast(model_args.model_name_or_path, pretrain=True)
    if model_args.model_type == "vit_hybrid":
        if model_args.model_name_or_path:
            return AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path, **_hub_kwargs(model_args))
        return GenreViTHybridFeatureExtractor()
    return ASTFeatureExtractor.from_pretrained(model_args.model_name_or_path, **_hub_kwargs(model_args))


def _label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def build_vit_hybrid(model_args, labels: list[str]) -> GenreViTHybridForAudioClassification:
    model_fields = {
        name: getattr(model_args, name)
        for name in ("loss", "focal_gamma", "hidden_dropout_prob", "drop_path_rate")
        if getattr(model_args, name) is not None
    }
    overrides = {**model_args.parsed_config_overrides(), **model_fields, **_label_kwargs(labels)}
    if model_args.model_name_or_path:
        return GenreViTHybridForAudioClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, **overrides, **_hub_kwargs(model_args)
        )
    return GenreViTHybridForAudioClassification(GenreViTHybridConfig(**overrides))


def dora_target_modules(num_hidden_layers: int, min_layer: int) -> str:
    """Regex (peft full-matches it against module names) for the FFN linears of layers >= `min_layer`.

    transformers 5 names them `audio_spectrogram_transformer.layers.N.mlp.fc1` / `fc2`; a plain
    `["fc1", "fc2"]` would be matched by suffix and also wrap the head's `classifier.fc1` / `fc2`.
    """
    if not 0 <= min_layer < num_hidden_layers:
        raise ValueError(
            f"min_layer={min_layer} leaves no layer to adapt: this AST has {num_hidden_layers} layers "
            f"(0..{num_hidden_layers - 1}); pick min_layer below {num_hidden_layers}."
        )
    layers = "|".join(str(i) for i in range(min_layer, num_hidden_layers))
    return rf"audio_spectrogram_transformer\.layers\.({layers})\.mlp\.(fc1|fc2)"


def build_ast_dora(model_args, labels: list[str]) -> PeftModel:
    # transformers 5 passes unknown from_pretrained kwargs to the model's __init__, so the head's fields
    # go onto the loaded config rather than through from_pretrained.
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **_hub_kwargs(model_args))
    fields = {
        **model_args.parsed_config_overrides(),
        "classifier_hidden_size": model_args.classifier_hidden_size,
        "classifier_dropout": model_args.classifier_dropout,
        "min_layer": model_args.min_layer,  # where `prefix_hidden_states` enter the model's forward (prefix_cache.py)
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    for name, value in fields.items():
        setattr(config, name, value)
    model = ASTWithMLPHeadForAudioClassification.from_pretrained(
        model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True, **_hub_kwargs(model_args)
    )
    dora_config = LoraConfig(
        r=model_args.dora_rank,
        lora_alpha=model_args.dora_alpha,
        lora_dropout=model_args.dora_dropout,
        use_dora=True,
        target_modules=dora_target_modules(model.config.num_hidden_layers, model_args.min_layer),
        modules_to_save=["classifier"],
        bias="none",
    )
    # get_peft_model freezes every base weight; only the adapters and the head train.
    model = get_peft_model(model, dora_config)
    # The frozen layers below min_layer run in eval mode during training too, as they do when the
    # frozen-prefix cache computes them once (ast_dora/prefix_cache.py): both paths compute the same function.
    keep_in_eval_mode(frozen_prefix_modules(model, model_args.min_layer))
    fuse_dora_linears(model)  # same function, less elementwise work per step (models/fused_dora.py)
    return model


def build_model(model_args, labels: list[str], training_args=None) -> torch.nn.Module:
    """The model `model_args.model_type` names; with `training_args`, set up for their device and precision."""
    if model_args.model_type == "vit_hybrid":
        model = build_vit_hybrid(model_args, labels)
    else:
        model = build_ast_dora(model_args, labels)
    if training_args is not None:
        use_fastest_attention(model, training_args.device, bf16=training_args.bf16)
    return model


def use_fastest_attention(model: torch.nn.Module, device: torch.device | str, bf16: bool) -> None:
    """Pick the attention kernel: eager for the ViT-hybrid in bf16 on CPU, the model's default (SDPA) elsewhere.

    Measured on this project's 2-core AMX CPU, ViT-hybrid at its 118 tokens: in bf16, eager beats PyTorch's CPU
    SDPA kernel (default size, batch 32: 0.42 s instead of 0.67 s per inference forward, 2.41 s instead of 2.53 s
    per training step); in fp32 it does not (the tiny smoke model trains ~15% faster with SDPA). AST's 1214
    tokens favour SDPA either way (5.1 s vs 12.7 s eager per 6 windows in bf16). On GPU SDPA stays.
    """
    base = _base_model(model)
    if bf16 and torch.device(device).type == "cpu" and isinstance(base.config, GenreViTHybridConfig):
        if base.config._attn_implementation != "eager":
            base.set_attn_implementation("eager")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def merge_dora(model: PeftModel) -> ASTWithMLPHeadForAudioClassification:
    """Fold the adapters into the frozen weights: a plain transformers model, as fast as the base."""
    return model.merge_and_unload()


def save_trained_model(model: torch.nn.Module, feature_extractor, output_dir: str | os.PathLike) -> None:
    """Save what `load_trained_model` (and `from_pretrained`) reads back.

    AST-DoRA writes the small adapter to `output_dir/adapter` and the merged model to `output_dir`, so
    `output_dir` loads like any transformers model, adapter or not. The model is merged in place.
    """
    output_dir = Path(output_dir)
    is_adapter = isinstance(model, PeftModel)
    if is_adapter:
        model.save_pretrained(output_dir / ADAPTER_SUBFOLDER)
        feature_extractor.save_pretrained(output_dir / ADAPTER_SUBFOLDER)
        model = merge_dora(model)
    model.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    if is_adapter:
        # The adapter folder keeps the fine-tuned config too (labels and head size are not in the base's), written
        # after the merged save so that it names the head's class and ships its code (`auto_map`): the adapter
        # folder then loads without this project installed.
        custom_object_save(model, output_dir / ADAPTER_SUBFOLDER, config=model.config)
        model.config.save_pretrained(output_dir / ADAPTER_SUBFOLDER)


def _is_ast_mlp(config) -> bool:
    return isinstance(config, ASTConfig) and "ASTWithMLPHeadForAudioClassification" in (config.architectures or [])


def load_trained_model(path_or_id: str, **hub_kwargs) -> tuple[PreTrainedModel, SequenceFeatureExtractor]:
    """Load a model this project trained (either kind; local folder or Hub id) and its feature extractor.

    An adapter-only folder (`adapter_config.json`) is put on top of the base checkpoint it names.
    """
    adapter_config = _find_file(path_or_id, "adapter_config.json", **hub_kwargs)
    if adapter_config is not None:
        peft_config = PeftConfig.from_pretrained(path_or_id, **hub_kwargs)
        config = AutoConfig.from_pretrained(path_or_id, **hub_kwargs)
        base = ASTWithMLPHeadForAudioClassification.from_pretrained(
            peft_config.base_model_name_or_path, config=config, ignore_mismatched_sizes=True
        )
        model = PeftModel.from_pretrained(base, path_or_id, **hub_kwargs).merge_and_unload()
    else:
        config = AutoConfig.from_pretrained(path_or_id, **hub_kwargs)
        if _is_ast_mlp(config):
            model = ASTWithMLPHeadForAudioClassification.from_pretrained(path_or_id, **hub_kwargs)
        else:
            model = AutoModelForAudioClassification.from_pretrained(path_or_id, **hub_kwargs)
    feature_extractor = AutoFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)
    return model.eval(), feature_extractor


def _find_file(path_or_id: str, filename: str, **hub_kwargs) -> str | None:
    if os.path.isdir(path_or_id):
        candidate = os.path.join(path_or_id, filename)
        return candidate if os.path.isfile(candidate) else None
    from transformers.utils import cached_file

    return cached_file(
        path_or_id,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **{k: v for k, v in hub_kwargs.items() if k in ("revision", "token", "cache_dir")},
    )


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PeftModel (or the model itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def model_type_of(model: torch.nn.Module) -> str:
    return "vit_hybrid" if isinstance(_base_model(model).config, GenreViTHybridConfig) else "ast_dora"


__all__ = [
    "ADAPTER_SUBFOLDER",
    "build_ast_dora",
    "build_feature_extractor",
    "build_model",
    "build_vit_hybrid",
    "count_parameters",
    "default_window",
    "dora_target_modules",
    "load_trained_model",
    "merge_dora",
    "model_type_of",
    "save_trained_model",
    "use_fastest_attention",
]
