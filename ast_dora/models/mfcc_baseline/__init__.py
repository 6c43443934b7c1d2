"""The classical genre baseline as a transformers model (config, modeling, feature extractor): MFCC and log-mel
statistics per window (numpy) and logistic regression on them.

The three modules are self-contained remote code; `register_auto_classes()` wires them into the Auto classes and
marks them so `save_pretrained` copies the code and writes `auto_map`.
"""

import importlib
import importlib.util
import sys

from transformers import AutoConfig, AutoFeatureExtractor

from .configuration_mfcc_baseline import MfccBaselineConfig
from .feature_extraction_mfcc_baseline import MfccBaselineFeatureExtractor

# The modeling module needs torch: imported when one of its classes is first asked for (module `__getattr__`) or a
# model is built or loaded (the spec's `model_class`), never with the package, so song analysis on an exported
# model imports no torch even where torch is installed.
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
_MODELING = "modeling_mfcc_baseline"
_MODELING_NAMES = ('MfccBaselineForAudioClassification', 'MfccBaselinePreTrainedModel', 'MfccBaselineStandardizer', 'weighted_cross_entropy')


def _register_models(modeling) -> None:
    from transformers import AutoModelForAudioClassification

    AutoModelForAudioClassification.register(MfccBaselineConfig, modeling.MfccBaselineForAudioClassification,
                                             exist_ok=True)
    modeling.MfccBaselineForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")


def __getattr__(name: str):
    if name in _MODELING_NAMES:
        modeling = importlib.import_module(f".{_MODELING}", __name__)
        _register_models(modeling)
        return getattr(modeling, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent: safe to call any number of times); the model
    classes once their module is imported (`model_class()` of the spec imports it and registers them)."""
    AutoConfig.register(MfccBaselineConfig.model_type, MfccBaselineConfig, exist_ok=True)
    AutoFeatureExtractor.register(MfccBaselineConfig, MfccBaselineFeatureExtractor, exist_ok=True)
    MfccBaselineConfig.register_for_auto_class("AutoConfig")
    MfccBaselineFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    modeling = sys.modules.get(f"{__name__}.{_MODELING}")
    if modeling is not None:
        _register_models(modeling)


__all__ = [
    "MfccBaselineConfig",
    "MfccBaselineFeatureExtractor",
    "MfccBaselineForAudioClassification",
    "MfccBaselinePreTrainedModel",
    "MfccBaselineStandardizer",
    "register_auto_classes",
    "weighted_cross_entropy",
]
