"""The classical genre baseline as a transformers model (config, modeling, feature extractor): MFCC and log-mel
statistics per window (numpy) and logistic regression on them.

The three modules are self-contained remote code; `register_auto_classes()` wires them into the Auto classes and
marks them so `save_pretrained` copies the code and writes `auto_map`.
"""

import importlib.util

from transformers import AutoConfig, AutoFeatureExtractor

from .configuration_mfcc_baseline import MfccBaselineConfig
from .feature_extraction_mfcc_baseline import MfccBaselineFeatureExtractor

# The modeling module needs torch; without torch installed (song analysis on an exported model) only the config
# and the feature extractor (numpy) are there.
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
if TORCH_INSTALLED:
    from .modeling_mfcc_baseline import (
        MfccBaselineForAudioClassification,
        MfccBaselinePreTrainedModel,
        MfccBaselineStandardizer,
        weighted_cross_entropy,
    )


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent)."""
    AutoConfig.register(MfccBaselineConfig.model_type, MfccBaselineConfig, exist_ok=True)
    AutoFeatureExtractor.register(MfccBaselineConfig, MfccBaselineFeatureExtractor, exist_ok=True)
    MfccBaselineConfig.register_for_auto_class("AutoConfig")
    MfccBaselineFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    if TORCH_INSTALLED:
        from transformers import AutoModelForAudioClassification

        AutoModelForAudioClassification.register(MfccBaselineConfig, MfccBaselineForAudioClassification,
                                                 exist_ok=True)
        MfccBaselineForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")


__all__ = [
    "MfccBaselineConfig",
    "MfccBaselineFeatureExtractor",
    "MfccBaselineForAudioClassification",
    "MfccBaselinePreTrainedModel",
    "MfccBaselineStandardizer",
    "register_auto_classes",
    "weighted_cross_entropy",
]
