"""Music-genre fine-tuning on GTZAN: AST + DoRA adapters and a from-scratch ViT-hybrid, one Trainer pipeline.

Importing the package imports no transformers configuration module and no torch (transformers' configuration
module imports torch wherever it is installed): song analysis on an exported model runs without either. The
models' classes register with transformers' Auto classes when the factory first uses one
(`ast_dora.models.register_auto_classes()`; call it before using an Auto class on a saved model yourself).
"""

__version__ = "0.1.0"

_LAZY = (
    "GenreViTHybridConfig",
    "GenreViTHybridFeatureExtractor",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
)


def __getattr__(name: str):
    if name in _LAZY:
        from .models import genre_vit_hybrid

        return getattr(genre_vit_hybrid, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_LAZY, "__version__"]
