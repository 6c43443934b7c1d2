"""musicnn (Pons & Serra, ISMIR 2019 LBD) as a transformers model (config, modeling, feature extractor): the
pretrained music tagger's network with a genre head beside its 50-tag head; `convert` writes it from the
original TensorFlow checkpoints.

The three modules are self-contained remote code; each marks its classes so `save_pretrained` copies the code and writes
`auto_map`; `register_auto_classes()` wires them into the Auto classes.
"""

import importlib
import importlib.util
import sys

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
# Each class is imported when first asked for (`from ast_dora.models.musicnn import MusicnnConfig` works as before),
# never with the package: transformers' configuration module imports torch wherever it is installed, and the
# modeling module needs torch, while song analysis on an exported model imports the spec and the feature extractor
# only.
_LAZY = {
    "MusicnnConfig": "configuration_musicnn",
    "MusicnnFeatureExtractor": "feature_extraction_musicnn",
    "MusicnnBackbone": "modeling_musicnn",
    "MusicnnForAudioClassification": "modeling_musicnn",
    "MusicnnOutput": "modeling_musicnn",
    "MusicnnPreTrainedModel": "modeling_musicnn",
}
_MODELING = "modeling_musicnn"


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        if _LAZY[name] == _MODELING:
            register_auto_classes()
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent: safe to call any number of times); the model
    classes when their module is imported (a model built or loaded). The factory calls this before it uses an
    Auto class (`ast_dora.models.register_auto_classes`)."""
    from transformers import AutoConfig, AutoFeatureExtractor

    from .configuration_musicnn import MusicnnConfig
    from .feature_extraction_musicnn import MusicnnFeatureExtractor

    AutoConfig.register(MusicnnConfig.model_type, MusicnnConfig, exist_ok=True)
    AutoFeatureExtractor.register(MusicnnConfig, MusicnnFeatureExtractor, exist_ok=True)
    modeling = sys.modules.get(f"{__name__}.{_MODELING}")
    if modeling is not None:
        from transformers import AutoModelForAudioClassification

        AutoModelForAudioClassification.register(
            MusicnnConfig, modeling.MusicnnForAudioClassification, exist_ok=True
        )


__all__ = [
    "MusicnnBackbone",
    "MusicnnConfig",
    "MusicnnFeatureExtractor",
    "MusicnnForAudioClassification",
    "MusicnnOutput",
    "MusicnnPreTrainedModel",
    "register_auto_classes",
]
