"""musicnn (Pons & Serra, ISMIR 2019 LBD) as a transformers model (config, modeling, feature extractor): the
pretrained music tagger"s network with a genre head beside its 50-tag head; `convert` writes it from the
original TensorFlow checkpoints.

The three modules are self-contained remote code; each marks its classes so `save_pretrained` copies the code and writes
`auto_map`; `register_auto_classes()` wires them into the Auto classes.
"""

import importlib.util

from ..lazy_package import lazy_package

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
_LAZY = {
    "MusicnnConfig": "configuration_musicnn",
    "MusicnnFeatureExtractor": "feature_extraction_musicnn",
    "MusicnnBackbone": "modeling_musicnn",
    "MusicnnForAudioClassification": "modeling_musicnn",
    "MusicnnOutput": "modeling_musicnn",
    "MusicnnPreTrainedModel": "modeling_musicnn",
}
__getattr__, register_auto_classes = lazy_package(
    __name__,
    _LAZY,
    "MusicnnConfig",
    "MusicnnFeatureExtractor",
    {"AutoModelForAudioClassification": "MusicnnForAudioClassification"},
)

__all__ = [
    "MusicnnBackbone",
    "MusicnnConfig",
    "MusicnnFeatureExtractor",
    "MusicnnForAudioClassification",
    "MusicnnOutput",
    "MusicnnPreTrainedModel",
    "register_auto_classes",
]
