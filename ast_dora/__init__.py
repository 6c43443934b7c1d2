"""Music-genre fine-tuning on GTZAN: AST + DoRA adapters and a from-scratch ViT-hybrid, one Trainer pipeline.

Importing the package registers the ViT-hybrid and the MFCC baseline with transformers' Auto classes.
"""

from .models.genre_vit_hybrid import (
    GenreViTHybridConfig,
    GenreViTHybridFeatureExtractor,
    register_auto_classes,
)
from .models.mfcc_baseline import register_auto_classes as register_mfcc_baseline


def __getattr__(name: str):
    # The model classes import torch: only when asked for, so that song analysis on an exported model never does.
    if name in ("GenreViTHybridForAudioClassification", "GenreViTHybridModel"):
        from .models import genre_vit_hybrid

        return getattr(genre_vit_hybrid, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

register_auto_classes()
register_mfcc_baseline()

__version__ = "0.1.0"

__all__ = [
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "__version__",
]
