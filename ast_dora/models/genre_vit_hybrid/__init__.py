"""The from-scratch ViT-hybrid genre classifier as a transformers model (config, modeling, feature extractor).

The three modules are self-contained remote code (torch / numpy / transformers and relative imports only);
`register_auto_classes()` wires them into the Auto classes and marks them so `save_pretrained` copies the code
and writes `auto_map`.
"""

import importlib.util

from transformers import AutoConfig, AutoFeatureExtractor

from .configuration_genre_vit_hybrid import GenreViTHybridConfig
from .feature_extraction_genre_vit_hybrid import GenreViTHybridFeatureExtractor

# The modeling module needs torch; without torch installed (song analysis on an exported model) only the config
# and the feature extractor (numpy) are there.
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
if TORCH_INSTALLED:
    from .modeling_genre_vit_hybrid import (
        GenreViTHybridForAudioClassification,
        GenreViTHybridModel,
        GenreViTHybridPreTrainedModel,
        focal_loss,
    )


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent: safe to call any number of times)."""
    AutoConfig.register(GenreViTHybridConfig.model_type, GenreViTHybridConfig, exist_ok=True)
    AutoFeatureExtractor.register(GenreViTHybridConfig, GenreViTHybridFeatureExtractor, exist_ok=True)
    GenreViTHybridConfig.register_for_auto_class("AutoConfig")
    GenreViTHybridFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    if TORCH_INSTALLED:
        from transformers import AutoModel, AutoModelForAudioClassification

        AutoModel.register(GenreViTHybridConfig, GenreViTHybridModel, exist_ok=True)
        AutoModelForAudioClassification.register(
            GenreViTHybridConfig, GenreViTHybridForAudioClassification, exist_ok=True
        )
        GenreViTHybridModel.register_for_auto_class("AutoModel")
        GenreViTHybridForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")


__all__ = [
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "GenreViTHybridPreTrainedModel",
    "focal_loss",
    "register_auto_classes",
]
