"""Music-genre fine-tuning on GTZAN: AST + DoRA adapters and a from-scratch ViT-hybrid, one Trainer pipeline.

Importing the package registers the ViT-hybrid, the MFCC baseline and musicnn with transformers' Auto classes.
"""

from .models.genre_vit_hybrid import (
    TORCH_INSTALLED,
    GenreViTHybridConfig,
    GenreViTHybridFeatureExtractor,
    register_auto_classes,
)
from .models.mfcc_baseline import register_auto_classes as register_mfcc_baseline
from .models.musicnn import register_auto_classes as register_musicnn

if TORCH_INSTALLED:  # without torch (song analysis on an exported model): config and feature extractor only
    from .models.genre_vit_hybrid import GenreViTHybridForAudioClassification, GenreViTHybridModel

register_auto_classes()
register_mfcc_baseline()
register_musicnn()

__version__ = "0.1.0"

__all__ = [
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "__version__",
]
