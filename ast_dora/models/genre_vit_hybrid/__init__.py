"""The from-scratch ViT-hybrid genre classifier as a transformers model (config, modeling, feature extractor).

The three modules are self-contained remote code (torch / numpy / transformers and relative imports only);
each marks its classes so `save_pretrained` copies the code and writes
`auto_map`; `register_auto_classes()` wires them into the Auto classes.
"""

import importlib.util

from ..lazy_package import lazy_package

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
_LAZY = {
    "GenreViTHybridConfig": "configuration_genre_vit_hybrid",
    "GenreViTHybridFeatureExtractor": "feature_extraction_genre_vit_hybrid",
    "GenreViTHybridForAudioClassification": "modeling_genre_vit_hybrid",
    "GenreViTHybridModel": "modeling_genre_vit_hybrid",
    "GenreViTHybridPreTrainedModel": "modeling_genre_vit_hybrid",
    "focal_loss": "modeling_genre_vit_hybrid",
}
__getattr__, register_auto_classes = lazy_package(
    __name__,
    _LAZY,
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    {
        "AutoModel": "GenreViTHybridModel",
        "AutoModelForAudioClassification": "GenreViTHybridForAudioClassification",
    },
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
