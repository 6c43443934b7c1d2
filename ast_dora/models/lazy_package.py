"""One model package's lazy imports and Auto-class registration, shared by every model folder.

A model package imports none of its modules with itself: transformers' configuration module imports torch wherever
it is installed, and the modeling module needs torch, while song analysis on an exported model imports the spec and
the feature extractor only. Each class is imported when first asked for (`from ast_dora.models.musicnn import
MusicnnConfig` works as usual), and the Auto classes learn the package's classes through `register_auto_classes()`
(the model classes once their module is loaded: a model built or loaded).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_package(
    package: str,
    classes: Mapping[str, str],
    config: str,
    feature_extractor: str,
    models: Mapping[str, str],
) -> tuple[Callable[[str], object], Callable[[], None]]:
    """`(__getattr__, register_auto_classes)` for the package `package`.

    `classes`: attribute name -> module (in the package) that defines it; `config` / `feature_extractor`: the
    names of its config and feature-extractor classes; `models`: transformers Auto class name (e.g.
    "AutoModelForAudioClassification") -> the model class registered with it.
    """
    modeling = {classes[name] for name in models.values()}

    def register_auto_classes() -> None:
        """Register the classes with the Auto factories (idempotent); the model classes only once their module
        is imported. The factory calls this before it uses an Auto class
        (`ast_dora.models.register_auto_classes`)."""
        import transformers

        config_class = getattr(importlib.import_module(f"{package}.{classes[config]}"), config)
        extractor_class = getattr(
            importlib.import_module(f"{package}.{classes[feature_extractor]}"), feature_extractor
        )
        transformers.AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        transformers.AutoFeatureExtractor.register(config_class, extractor_class, exist_ok=True)
        for auto_name, model_name in models.items():
            module = sys.modules.get(f"{package}.{classes[model_name]}")
            if module is not None:
                getattr(transformers, auto_name).register(
                    config_class, getattr(module, model_name), exist_ok=True
                )

    def __getattr__(name: str):
        if name in classes:
            module = importlib.import_module(f".{classes[name]}", package)
            if classes[name] in modeling:
                register_auto_classes()
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, register_auto_classes
