"""The from-scratch ViT-hybrid genre classifier as a transformers model (config, modeling, feature extractor).

The three modules are self-contained remote code (torch / numpy / transformers and relative imports only);
`register_auto_classes()` wires them into the Auto classes and marks them so `save_pretrained` copies the code
and writes `auto_map`.
"""

import importlib
import importlib.util
import sys

from transformers import AutoConfig, AutoFeatureExtractor

from .configuration_genre_vit_hybrid import GenreViTHybridConfig
from .feature_extraction_genre_vit_hybrid import GenreViTHybridFeatureExtractor

# The modeling module needs torch: imported when one of its classes is first asked for (module `__getattr__`) or a
# model is built or loaded (the spec's `model_class`), never with the package, so song analysis on an exported
# model imports no torch even where torch is installed.
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
_MODELING = "modeling_genre_vit_hybrid"
_MODELING_NAMES = ('GenreViTHybridForAudioClassification', 'GenreViTHybridModel', 'GenreViTHybridPreTrainedModel', 'focal_loss')


def _register_models(modeling) -> None:
    from transformers import AutoModel, AutoModelForAudioClassification

    AutoModel.register(GenreViTHybridConfig, modeling.GenreViTHybridModel, exist_ok=True)
    AutoModelForAudioClassification.register(GenreViTHybridConfig, modeling.GenreViTHybridForAudioClassification,
                                             exist_ok=True)
    modeling.GenreViTHybridModel.register_for_auto_class("AutoModel")
    modeling.GenreViTHybridForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")


def __getattr__(name: str):
    if name in _MODELING_NAMES:
        modeling = importlib.import_module(f".{_MODELING}", __name__)
        _register_models(modeling)
        return getattr(modeling, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent: safe to call any number of times); the model
    classes once their module is imported (`model_class()` of the spec imports it and registers them)."""
    AutoConfig.register(GenreViTHybridConfig.model_type, GenreViTHybridConfig, exist_ok=True)
    AutoFeatureExtractor.register(GenreViTHybridConfig, GenreViTHybridFeatureExtractor, exist_ok=True)
    GenreViTHybridConfig.register_for_auto_class("AutoConfig")
    GenreViTHybridFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    modeling = sys.modules.get(f"{__name__}.{_MODELING}")
    if modeling is not None:
        _register_models(modeling)


__all__ = [
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "GenreViTHybridPreTrainedModel",
    "focal_loss",
    "register_auto_classes",
]
