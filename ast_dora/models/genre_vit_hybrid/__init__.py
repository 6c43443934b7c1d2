"""The from-scratch ViT-hybrid genre classifier as a transformers model (config, modeling, feature extractor).

The three modules are self-contained remote code (torch / numpy / transformers and relative imports only);
`register_auto_classes()` wires them into the Auto classes and marks them so `save_pretrained` copies the code
and writes `auto_map`.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

from .configuration_genre_vit_hybrid import GenreViTHybridConfig
from .feature_extraction_genre_vit_hybrid import GenreViTHybridFeatureExtractor
from .modeling_genre_vit_hybrid import (
    GenreViTHybridForAudioClassification,
    GenreViTHybridModel,
    GenreViTHybridPreTrainedModel,
    focal_loss,
)


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent: safe to call any number of times)."""
    AutoConfig.register(GenreViTHybridConfig.model_type, GenreViTHybridConfig, exist_ok=True)
    AutoModel.register(GenreViTHybridConfig, GenreViTHybridModel, exist_ok=True)
    AutoModelForAudioClassification.register(
        GenreViTHybridConfig, GenreViTHybridForAudioClassification, exist_ok=True
    )
    AutoFeatureExtractor.register(GenreViTHybridConfig, GenreViTHybridFeatureExtractor, exist_ok=True)

    GenreViTHybridConfig.register_for_auto_class("AutoConfig")
    GenreViTHybridModel.register_for_auto_class("AutoModel")
    GenreViTHybridForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
    GenreViTHybridFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")


__all__ = [
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "GenreViTHybridPreTrainedModel",
    "focal_loss",
    "register_auto_classes",
]
