"""The from-scratch ViT-hybrid genre classifier as a transformers model (config, modeling, feature extractor).

The three modules are self-contained remote code (torch / numpy / transformers and relative imports only);
each marks its classes so `save_pretrained` copies the code and writes
`auto_map`; `register_auto_classes()` wires them into the Auto classes.
"""

import importlib
import importlib.util
import sys

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
# Each class is imported when first asked for (`from ast_dora.models.genre_vit_hybrid import GenreViTHybridConfig` works as before), never
# with the package: transformers' configuration module imports torch wherever it is installed, and the modeling
# module needs torch, while song analysis on an exported model imports the spec and the feature extractor only.
_LAZY = {
    "GenreViTHybridConfig": "configuration_genre_vit_hybrid",
    "GenreViTHybridFeatureExtractor": "feature_extraction_genre_vit_hybrid",
    "GenreViTHybridForAudioClassification": "modeling_genre_vit_hybrid",
    "GenreViTHybridModel": "modeling_genre_vit_hybrid",
    "GenreViTHybridPreTrainedModel": "modeling_genre_vit_hybrid",
    "focal_loss": "modeling_genre_vit_hybrid",
}
_MODELING = "modeling_genre_vit_hybrid"


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

    from .configuration_genre_vit_hybrid import GenreViTHybridConfig
    from .feature_extraction_genre_vit_hybrid import GenreViTHybridFeatureExtractor

    AutoConfig.register(GenreViTHybridConfig.model_type, GenreViTHybridConfig, exist_ok=True)
    AutoFeatureExtractor.register(GenreViTHybridConfig, GenreViTHybridFeatureExtractor, exist_ok=True)
    modeling = sys.modules.get(f"{__name__}.{_MODELING}")
    if modeling is not None:
        from transformers import AutoModel, AutoModelForAudioClassification

        AutoModel.register(GenreViTHybridConfig, modeling.GenreViTHybridModel, exist_ok=True)
        AutoModelForAudioClassification.register(
            GenreViTHybridConfig, modeling.GenreViTHybridForAudioClassification, exist_ok=True
        )


__all__ = [
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "GenreViTHybridPreTrainedModel",
    "focal_loss",
    "register_auto_classes",
]
