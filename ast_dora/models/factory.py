"""Build, set up, save and load any registered model: the `model_type` switch, answered by the registry."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from transformers.dynamic_module_utils import custom_object_save

if TYPE_CHECKING:  # torch and peft are imported where a model is built or loaded, not for exported backends
    import torch
    from transformers import PreTrainedModel, SequenceFeatureExtractor

from .registry import (
    ModelSpec,
    base_model_of,
    get_model_spec,
    register_auto_classes,
    spec_for_config,
    spec_for_model,
)

logger = logging.getLogger(__name__)

ADAPTER_SUBFOLDER = "adapter"
# Feature-extractor attributes (saved in preprocessor_config.json) holding the windows a model was trained on.
WINDOW_FIELDS = ("window_seconds", "hop_seconds")


def build_feature_extractor(model_args) -> SequenceFeatureExtractor:
    spec = get_model_spec(model_args.model_type)
    if model_args.make_tiny_checkpoint:
        spec.tiny_checkpoint(model_args.model_name_or_path)
    return spec.build_feature_extractor(model_args)


def build_model(
    model_args, labels: list[str], training_args=None, class_weights: list[float] | None = None
) -> torch.nn.Module:
    """The model `model_args.model_type` names; with `training_args`, set up for their device and precision.

    `class_weights` (one per label, or None) goes to `config.class_weights`, which every registered model's loss
    reads (docs/architecture.md, "Contracts between the pieces")."""
    model = get_model_spec(model_args.model_type).build_model(model_args, labels)
    if class_weights is not None and len(class_weights) != len(labels):
        raise ValueError(f"class_weights has {len(class_weights)} values for {len(labels)} labels.")
    base_model_of(model).config.class_weights = (
        None if class_weights is None else [float(w) for w in class_weights]
    )
    if training_args is not None:
        use_fastest_attention(model, training_args.device, bf16=training_args.bf16)
    return model


def use_fastest_attention(model: torch.nn.Module, device: torch.device | str, bf16: bool) -> None:
    """Eager attention where the model's spec says it beats SDPA (bf16 on CPU); the model's default elsewhere."""
    import torch

    base = base_model_of(model)
    if bf16 and torch.device(device).type == "cpu" and spec_for_model(model).eager_attention_on_cpu_bf16:
        if base.config._attn_implementation != "eager":
            base.set_attn_implementation("eager")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def set_windows(feature_extractor, window_seconds: float, hop_seconds: float) -> None:
    """Record the training windows on the feature extractor: `save_pretrained` writes them to
    preprocessor_config.json, so the model carries them to inference, the Hub, the demo and the card."""
    feature_extractor.window_seconds = float(window_seconds)
    feature_extractor.hop_seconds = float(hop_seconds)


def model_windows(feature_extractor, spec: ModelSpec) -> tuple[float, float]:
    """(window_seconds, hop_seconds) the model was trained on: saved with it, or for folders saved before the
    windows travelled with models, the spec's defaults."""
    # Each is read on its own: the ViT-hybrid's feature extractor has a `window_seconds` of its own (its input
    # length) but no hop, so a fresh one means the spec's default hop, not windows back to back.
    default_window, default_hop = spec.default_windows
    window = getattr(feature_extractor, "window_seconds", None)
    hop = getattr(feature_extractor, "hop_seconds", None)
    return float(window or default_window), float(hop or default_hop)


def song_pipeline_config() -> dict:
    """config.json's `custom_pipelines`: `pipeline("audio-classification", trust_remote_code=True)` then builds the
    whole-song `GenreClassificationPipeline` from the code saved beside the weights instead of transformers'
    `AudioClassificationPipeline` (which hears the first window only)."""
    from ..genre_classification.pipeline_genre_classification import (
        PIPELINE_TASK,
        GenreClassificationPipeline,
    )

    module = GenreClassificationPipeline.__module__.rpartition(".")[2]
    return {
        PIPELINE_TASK: {
            "impl": f"{module}.{GenreClassificationPipeline.__name__}",
            "pt": ["AutoModelForAudioClassification"],
            "type": "audio",
        }
    }


def save_song_pipeline_code(folder: str | os.PathLike) -> None:
    """Copy the pipeline's module and the modules it imports (`song_windows.py`) into `folder`."""
    from ..genre_classification.pipeline_genre_classification import GenreClassificationPipeline

    custom_object_save(GenreClassificationPipeline, folder)


def save_trained_model(model: torch.nn.Module, feature_extractor, output_dir: str | os.PathLike) -> None:
    """Save what `load_trained_model` (and `from_pretrained`) reads back.

    A PEFT model writes the small adapter to `output_dir/adapter` and the merged model to `output_dir`, so
    `output_dir` loads like any transformers model, adapter or not. The model is merged in place. Every folder
    written also holds the whole-song `audio-classification` pipeline (`song_pipeline_config`) and the windows
    (the spec's defaults when none were set), which that pipeline reads from preprocessor_config.json.
    """
    from peft import PeftModel

    output_dir = Path(output_dir)
    is_adapter = isinstance(model, PeftModel)
    if any(getattr(feature_extractor, name, None) is None for name in WINDOW_FIELDS):
        set_windows(feature_extractor, *model_windows(feature_extractor, spec_for_model(model)))
    base_model_of(model).config.custom_pipelines = song_pipeline_config()
    if is_adapter:
        model.save_pretrained(output_dir / ADAPTER_SUBFOLDER)
        feature_extractor.save_pretrained(output_dir / ADAPTER_SUBFOLDER)
        model = model.merge_and_unload()
    model.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    save_song_pipeline_code(output_dir)
    if is_adapter:
        # The adapter folder keeps the fine-tuned config too (labels and head size are not in the base's), written
        # after the merged save so that it names the head's class and ships its code (`auto_map`): the adapter
        # folder then loads without this project installed.
        custom_object_save(model, output_dir / ADAPTER_SUBFOLDER, config=model.config)
        model.config.save_pretrained(output_dir / ADAPTER_SUBFOLDER)
        save_song_pipeline_code(output_dir / ADAPTER_SUBFOLDER)


def load_trained_model(path_or_id: str, **hub_kwargs) -> tuple[PreTrainedModel, SequenceFeatureExtractor]:
    """Load a model this project trained (any registered kind; local folder or Hub id) and its feature extractor.

    An adapter-only folder (`adapter_config.json`) is put on top of the base checkpoint it names and merged.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoFeatureExtractor

    register_auto_classes()
    config = AutoConfig.from_pretrained(path_or_id, **hub_kwargs)
    model_class = spec_for_config(config).model_class
    if _find_file(path_or_id, "adapter_config.json", **hub_kwargs) is not None:
        peft_config = PeftConfig.from_pretrained(path_or_id, **hub_kwargs)
        base = model_class.from_pretrained(
            peft_config.base_model_name_or_path, config=config, ignore_mismatched_sizes=True
        )
        model = PeftModel.from_pretrained(base, path_or_id, **hub_kwargs).merge_and_unload()
    else:
        model = model_class.from_pretrained(path_or_id, **hub_kwargs)
    feature_extractor = AutoFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)
    return model.eval(), feature_extractor


def load_trained_config(path_or_id: str, **hub_kwargs):
    """(config, feature extractor) of a saved model without its weights, as transformers objects (imports torch
    where it is installed: transformers' configuration module does)."""
    from transformers import AutoConfig, AutoFeatureExtractor

    register_auto_classes()
    config = AutoConfig.from_pretrained(path_or_id, **hub_kwargs)
    spec = spec_for_config(config)  # fails clearly for a model this project did not train
    try:
        return config, AutoFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)
    except ImportError:  # a feature extractor class that needs torch, in a process without it
        if spec.torch_free_feature_extractor is None:
            raise
        return config, spec.torch_free_feature_extractor(path_or_id, **hub_kwargs)


class SavedConfig:
    """A saved model's config.json as attributes, read without transformers' configuration module (which imports
    torch wherever it is installed): what a backend running an exported copy needs (labels, model type, the
    AudioSet classes). `id2label` has int keys, as `PretrainedConfig`'s."""

    def __init__(self, values: dict):
        self.__dict__.update(values)
        self.id2label = {int(k): v for k, v in values.get("id2label", {}).items()}
        self.label2id = {k: int(v) for k, v in values.get("label2id", {}).items()}
        self.num_labels = len(self.id2label)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"SavedConfig(model_type={getattr(self, 'model_type', None)!r}, num_labels={self.num_labels})"


def load_saved_config(path_or_id: str, **hub_kwargs):
    """(config, feature extractor) of a saved model for an exported backend, importing no torch: config.json as a
    `SavedConfig`, and the spec's `torch_free_feature_extractor` (AutoFeatureExtractor for a model without one)."""
    import json

    path = _find_file(path_or_id, "config.json", **hub_kwargs)
    if path is None:
        raise FileNotFoundError(
            f"{path_or_id} has no config.json: give a model folder or Hub id saved by this project."
        )
    with open(path) as f:
        config = SavedConfig(json.load(f))
    spec = spec_for_config(config)  # fails clearly for a model this project did not train
    if spec.torch_free_feature_extractor is None:
        from transformers import AutoFeatureExtractor

        register_auto_classes()
        return config, AutoFeatureExtractor.from_pretrained(path_or_id, **hub_kwargs)
    return config, spec.torch_free_feature_extractor(path_or_id, **hub_kwargs)


def find_model_file(path_or_id: str, filename: str, **hub_kwargs) -> str | None:
    """Local path of `filename` (may contain a subfolder, e.g. "onnx/model.onnx") in a model folder or Hub repo
    (downloaded into the Hub cache), or None when the model has no such file."""
    return _find_file(path_or_id, filename, **hub_kwargs)


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


def model_type_of(model: torch.nn.Module) -> str:
    return spec_for_model(model).name


__all__ = [
    "ADAPTER_SUBFOLDER",
    "WINDOW_FIELDS",
    "build_feature_extractor",
    "build_model",
    "count_parameters",
    "find_model_file",
    "load_trained_config",
    "load_trained_model",
    "model_type_of",
    "model_windows",
    "save_song_pipeline_code",
    "save_trained_model",
    "set_windows",
    "song_pipeline_config",
    "use_fastest_attention",
]
