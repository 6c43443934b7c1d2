"""The classical genre baseline as a transformers model (config, modeling, feature extractor): MFCC and log-mel
statistics per window (numpy) and logistic regression on them.

The three modules are self-contained remote code; each marks its classes so `save_pretrained` copies the code and writes
`auto_map`; `register_auto_classes()` wires them into the Auto classes.
"""

import importlib.util

from ..lazy_package import lazy_package

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
_LAZY = {
    "MfccBaselineConfig": "configuration_mfcc_baseline",
    "MfccBaselineFeatureExtractor": "feature_extraction_mfcc_baseline",
    "MfccBaselineForAudioClassification": "modeling_mfcc_baseline",
    "MfccBaselinePreTrainedModel": "modeling_mfcc_baseline",
    "MfccBaselineStandardizer": "modeling_mfcc_baseline",
    "weighted_cross_entropy": "modeling_mfcc_baseline",
}
__getattr__, register_auto_classes = lazy_package(
    __name__,
    _LAZY,
    "MfccBaselineConfig",
    "MfccBaselineFeatureExtractor",
    {"AutoModelForAudioClassification": "MfccBaselineForAudioClassification"},
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
