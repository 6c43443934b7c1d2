"""PyTorch classical genre baseline: logistic regression (or one hidden layer) on per-window MFCC / log-mel
statistics, as a transformers model trained by the same `Trainer` as the others.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only torch, numpy, transformers and its siblings (relatively).
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import can_return_tuple

from .configuration_mfcc_baseline import MfccBaselineConfig
from .genre_loss import genre_loss


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Cross-entropy, optionally class-weighted and label-smoothed: the project's one genre loss
    (`genre_loss.py`: class ids or mixup's target distributions, -100 skipped, each sample's term times its class
    weight, the sum divided by the count of samples or by `num_items_in_batch`)."""
    return genre_loss(
        logits,
        labels,
        num_items_in_batch,
        class_weights=class_weights,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    )


class MfccBaselineStandardizer(nn.Module):
    """Standardises features by the mean and variance of every training sample seen so far.

    In training mode each batch first updates the running statistics (exact pooled mean and variance, merged in
    float64), then is standardised with them; in eval mode the stored statistics are used as they are. The
    training features are the same every epoch, so after each full epoch the statistics are exactly those of the
    training set: the `StandardScaler` of a scikit-learn pipeline, learned by the `Trainer` and saved with the
    weights (buffers `running_mean`, `running_var`, `num_samples_tracked`).
    """

    def __init__(self, num_features: int, eps: float = 1.0):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_samples_tracked", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        batch = features.detach().double()
        seen, new = self.num_samples_tracked.item(), batch.shape[0]
        if new == 0:
            return
        total = seen + new
        batch_mean, batch_var = batch.mean(dim=0), batch.var(dim=0, unbiased=False)
        mean, var = self.running_mean.double(), self.running_var.double()
        if seen == 0:
            mean, var = batch_mean, batch_var
        else:
            delta = batch_mean - mean
            mean = mean + delta * (new / total)
            var = (var * seen + batch_var * new + delta.square() * (seen * new / total)) / total
        self.running_mean.copy_(mean)
        self.running_var.copy_(var)
        self.num_samples_tracked.fill_(total)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(features)
        mean = self.running_mean.to(features.dtype)
        scale = torch.rsqrt(self.running_var.float() + self.eps).to(features.dtype)
        return (features - mean) * scale


class MfccBaselinePreTrainedModel(PreTrainedModel):
    config: MfccBaselineConfig
    config_class = MfccBaselineConfig
    base_model_prefix = "mfcc_baseline"
    main_input_name = "input_values"
    input_modalities = ("audio",)

    @torch.no_grad()
    def _init_weights(self, module):
        """Normal(0, initializer_range) weights, zero biases; standardisation starts as the identity."""
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MfccBaselineStandardizer):
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_samples_tracked)


class MfccBaselineForAudioClassification(MfccBaselinePreTrainedModel):
    def __init__(self, config: MfccBaselineConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.standardizer = MfccBaselineStandardizer(config.num_features, config.standardize_eps)
        self.dropout = nn.Dropout(config.dropout_prob)
        if config.hidden_size > 0:
            self.hidden = nn.Linear(config.num_features, config.hidden_size)
            self.act = ACT2FN[config.hidden_act]
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        else:
            self.hidden = None
            self.classifier = nn.Linear(config.num_features, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_features)`):
            Per-window statistics from [`MfccBaselineFeatureExtractor`].
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids in `[0, num_labels)` (`-100` is ignored), or float `(batch_size, num_labels)` target
            distributions (mixup); the loss is cross-entropy (`label_smoothing`, `class_weights`).
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        if input_values is None:
            raise ValueError("MfccBaselineForAudioClassification needs `input_values`.")
        if input_values.dim() != 2 or input_values.shape[1] != self.config.num_features:
            raise ValueError(
                f"input_values must have shape (batch, {self.config.num_features}), got {tuple(input_values.shape)}."
            )
        input_values = input_values.to(self.classifier.weight.dtype)
        hidden = self.dropout(self.standardizer(input_values))
        if self.hidden is not None:
            hidden = self.dropout(self.act(self.hidden(hidden)))
        logits = self.classifier(hidden)

        loss = None
        if labels is not None:
            # Read at every call: the training pipeline may set `config.class_weights` after building the model.
            weights = self.config.class_weights
            loss = weighted_cross_entropy(
                logits,
                labels.to(logits.device),
                num_items_in_batch=num_items_in_batch,
                class_weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
                label_smoothing=self.config.label_smoothing,
            )
        return SequenceClassifierOutput(loss=loss, logits=logits)


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
MfccBaselineForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = [
    "MfccBaselineForAudioClassification",
    "MfccBaselinePreTrainedModel",
    "MfccBaselineStandardizer",
    "weighted_cross_entropy",
]
