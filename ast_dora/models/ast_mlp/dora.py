"""AST-DoRA: the frozen AudioSet AST with DoRA adapters on the FFN linears of its top layers and the MLP head."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AutoConfig

from ...prefix_cache import frozen_prefix_modules, keep_in_eval_mode
from ..builders import hub_kwargs
from ..fused_dora import fuse_dora_linears
from ..tiny_ast import STAND_IN_AUDIOSET_LABELS, TINY_AST_CONFIG, make_tiny_ast
from .modeling_ast_mlp import ASTWithMLPHeadForAudioClassification


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


def build_feature_extractor(model_args) -> ASTFeatureExtractor:
    return ASTFeatureExtractor.from_pretrained(model_args.model_name_or_path, **hub_kwargs(model_args))


def audioset_fields(base_config, min_layer: int) -> dict:
    """Config fields of the AudioSet branch (music detection) for a model built on `base_config`: the base
    checkpoint's class names in index order and the first layer DoRA adapts. Empty for a base without labels."""
    labels = getattr(base_config, "id2label", None) or {}
    if len(labels) < 2 or any(name.startswith("LABEL_") for name in labels.values()):
        return {}  # no named classes: not a classifier checkpoint, nothing to detect music with
    return {"audioset_labels": [labels[i] for i in range(len(labels))], "audioset_from_layer": min_layer}


def build_ast_dora(model_args, labels: list[str]) -> PeftModel:
    # transformers 5 passes unknown from_pretrained kwargs to the model's __init__, so the head's fields
    # go onto the loaded config rather than through from_pretrained.
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub_kwargs(model_args))
    fields = {
        **audioset_fields(config, model_args.min_layer),
        **model_args.parsed_config_overrides(),
        "classifier_hidden_size": model_args.classifier_hidden_size,
        "classifier_dropout": model_args.classifier_dropout,
        "min_layer": model_args.min_layer,  # where `prefix_hidden_states` enter the model's forward (prefix_cache.py)
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    for name, value in fields.items():
        setattr(config, name, value)
    # from an AudioSet checkpoint: the AudioSet branch (music detection) is copied from its own head
    model = ASTWithMLPHeadForAudioClassification.from_pretrained(
        model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True, **hub_kwargs(model_args)
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


def merge_dora(model: PeftModel) -> ASTWithMLPHeadForAudioClassification:
    """Fold the adapters into the frozen weights: a plain transformers model, as fast as the base."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def random_model(model_args, size: str, labels: list[str]) -> PeftModel:
    """AST-DoRA on a randomly initialised AST: AudioSet-sized (`"default"`) or the tiny stand-in's shape.

    Goes through `build_ast_dora` like a real run: an AST saved with `save_pretrained`, `model_args`' rank and
    layers (`min_layer` 2 and a 16-wide head at tiny size).
    """
    base_dir = tempfile.mkdtemp(prefix="random_ast_")
    try:
        if size == "tiny":  # named classes, as the pretrained stand-in's: the AudioSet branch is built too
            base_config = ASTConfig(
                **{**TINY_AST_CONFIG, "num_labels": len(STAND_IN_AUDIOSET_LABELS)},
                id2label=dict(enumerate(STAND_IN_AUDIOSET_LABELS)),
            )
        else:  # AudioSet-sized, with AudioSet's "Speech" and "Music" where the real checkpoint has them
            names = {0: "Speech", 137: "Music"}
            base_config = ASTConfig(
                num_labels=527, id2label={i: names.get(i, f"AudioSet class {i}") for i in range(527)}
            )
        ASTForAudioClassification(base_config).save_pretrained(base_dir)
        ASTFeatureExtractor().save_pretrained(base_dir)
        tiny = (
            dict(min_layer=min(model_args.min_layer, 2), classifier_hidden_size=16) if size == "tiny" else {}
        )
        return build_ast_dora(dataclasses.replace(model_args, model_name_or_path=base_dir, **tiny), labels)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def write_tiny_checkpoint(path: str) -> None:
    make_tiny_ast(path, pretrain=True)


__all__ = [
    "build_ast_dora",
    "build_feature_extractor",
    "audioset_fields",
    "dora_target_modules",
    "merge_dora",
    "random_model",
    "write_tiny_checkpoint",
]
