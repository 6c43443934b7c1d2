"""The classical genre baseline as a transformers model (config, modeling, feature extractor): MFCC and log-mel
statistics per window (numpy) and logistic regression on them.

The three modules are self-contained remote code; each marks its classes so `save_pretrained` copies the code and writes
`auto_map`; `register_auto_classes()` wires them into the Auto classes.
"""

import importlib
import importlib.util
import sys

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
# Each class is imported when first asked for (`from ast_dora.models.mfcc_baseline import MfccBaselineConfig` works as before), never
# with the package: transformers' configuration module imports torch wherever it is installed, and the modeling
# module needs torch, while song analysis on an exported model imports the spec and the feature extractor only.
_LAZY = {
    "MfccBaselineConfig": "configuration_mfcc_baseline",
    "MfccBaselineFeatureExtractor": "feature_extraction_mfcc_baseline",
    "MfccBaselineForAudioClassification": "modeling_mfcc_baseline",
    "MfccBaselinePreTrainedModel": "modeling_mfcc_baseline",
    "MfccBaselineStandardizer": "modeling_mfcc_baseline",
    "weighted_cross_entropy": "modeling_mfcc_baseline",
}
_MODELING = "modeling_mfcc_baseline"


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

    from .configuration_mfcc_baseline import MfccBaselineConfig
    from .feature_extraction_mfcc_baseline import MfccBaselineFeatureExtractor

    AutoConfig.register(MfccBaselineConfig.model_type, MfccBaselineConfig, exist_ok=True)
    AutoFeatureExtractor.register(MfccBaselineConfig, MfccBaselineFeatureExtractor, exist_ok=True)
    modeling = sys.modules.get(f"{__name__}.{_MODELING}")
    if modeling is not None:
        from transformers import AutoModelForAudioClassification

        AutoModelForAudioClassification.register(
            MfccBaselineConfig, modeling.MfccBaselineForAudioClassification, exist_ok=True
        )


__all__ = [
    "MfccBaselineConfig",
    "MfccBaselineFeatureExtractor",
    "MfccBaselineForAudioClassification",
    "MfccBaselinePreTrainedModel",
    "MfccBaselineStandardizer",
    "register_auto_classes",
    "weighted_cross_entropy",
]
