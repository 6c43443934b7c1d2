"""musicnn (Pons & Serra, ISMIR 2019 LBD) as a transformers model (config, modeling, feature extractor): the
pretrained music tagger's network with a genre head beside its 50-tag head; `convert` writes it from the
original TensorFlow checkpoints.

The three modules are self-contained remote code; `register_auto_classes()` wires them into the Auto classes and
marks them so `save_pretrained` copies the code and writes `auto_map`.
"""

import importlib.util

from transformers import AutoConfig, AutoFeatureExtractor

from .configuration_musicnn import MusicnnConfig
from .feature_extraction_musicnn import MusicnnFeatureExtractor

# The modeling module needs torch; without torch installed (song analysis on an exported model) only the config
# and the feature extractor (numpy) are there.
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
if TORCH_INSTALLED:
    from .modeling_musicnn import (
        MusicnnBackbone,
        MusicnnForAudioClassification,
        MusicnnOutput,
        MusicnnPreTrainedModel,
    )


def register_auto_classes() -> None:
    """Register the classes with the Auto factories (idempotent)."""
    AutoConfig.register(MusicnnConfig.model_type, MusicnnConfig, exist_ok=True)
    AutoFeatureExtractor.register(MusicnnConfig, MusicnnFeatureExtractor, exist_ok=True)
    MusicnnConfig.register_for_auto_class("AutoConfig")
    MusicnnFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    if TORCH_INSTALLED:
        from transformers import AutoModelForAudioClassification

        AutoModelForAudioClassification.register(MusicnnConfig, MusicnnForAudioClassification, exist_ok=True)
        MusicnnForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")


__all__ = [
    "MusicnnBackbone",
    "MusicnnConfig",
    "MusicnnFeatureExtractor",
    "MusicnnForAudioClassification",
    "MusicnnOutput",
    "MusicnnPreTrainedModel",
    "register_auto_classes",
]
