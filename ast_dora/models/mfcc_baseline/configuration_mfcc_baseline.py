"""Configuration of the classical genre baseline: a linear (or one-hidden-layer) classifier on MFCC / log-mel
statistics.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only torch, numpy, transformers and its siblings (relatively).
"""

from transformers import PretrainedConfig


class MfccBaselineConfig(PretrainedConfig):
    r"""
    Configuration of [`MfccBaselineForAudioClassification`]: standardisation of the feature vector by the training
    data's running mean and variance, dropout, then a linear map to the classes (multinomial logistic regression)
    or, with `hidden_size > 0`, one hidden layer.

    Args:
        num_features (`int`, defaults to 296):
            Length of `input_values` (the feature extractor's `feature_size`: 2 x (20 MFCCs + 128 log-mels)).
        hidden_size (`int`, defaults to 0):
            0: logistic regression; > 0: width of one hidden layer (`hidden_act`).
        hidden_act (`str`, defaults to `"relu"`):
            Activation of the hidden layer (a key of `transformers.activations.ACT2FN`).
        dropout_prob (`float`, defaults to 0.0):
            Dropout on the standardised features (and on the hidden layer).
        label_smoothing (`float`, defaults to 0.0):
            Label smoothing of the cross-entropy loss.
        class_weights (`list[float]`, *optional*):
            Per-class weights of the cross-entropy loss (one per label); `None` weighs all classes equally.
        standardize_eps (`float`, defaults to 1.0):
            Added to the variance (in the features' squared units, dB^2) before dividing by its square root: a
            feature nearly constant over the training windows (a band below the dB floor in every window) is then not
            blown up into noise, while the typical features (standard deviations of several dB) barely change.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal weight initialisation.

    Labels are set with the usual `num_labels` (default 10) or `id2label` / `label2id` keyword arguments.
    """

    model_type = "genre_mfcc_baseline"

    num_features: int = 296
    hidden_size: int = 0
    hidden_act: str = "relu"
    dropout_prob: float = 0.0
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None
    standardize_eps: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.num_features < 1 or self.hidden_size < 0:
            raise ValueError(
                f"MfccBaselineConfig: num_features must be >= 1 and hidden_size >= 0, got {self.num_features} and "
                f"{self.hidden_size}."
            )
        for name in ("dropout_prob", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"MfccBaselineConfig: {name} must be in [0, 1), got {getattr(self, name)}.")
        if self.id2label is None:
            kwargs.setdefault("num_labels", 10)
        super().__post_init__(**kwargs)
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
            if len(self.class_weights) != self.num_labels or min(self.class_weights) < 0:
                raise ValueError(
                    f"MfccBaselineConfig: class_weights must be {self.num_labels} non-negative numbers (one per "
                    f"label), got {self.class_weights}."
                )


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
MfccBaselineConfig.register_for_auto_class("AutoConfig")

__all__ = ["MfccBaselineConfig"]
