"""PyTorch musicnn (Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio tagging",
ISMIR 2019 LBD; github.com/jordipons/musicnn, `musicnn/models.py`), with a genre head beside its 50-tag head.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only torch, numpy, transformers and its siblings (relatively).

Layout: TensorFlow's `(batch, time, mel, channels)` tensors are `(batch, channels, time, mel)` here; the
original's zero padding of 3 frames before each 7-frame convolution is the convolution's `padding`, and its
"same" padding of the temporal filters is TensorFlow's (for an even length L: (L - 1) // 2 frames before, L // 2
after), written out with `F.pad` so the exported graph has plain convolutions.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_musicnn import MusicnnConfig
from .genre_loss import genre_loss


@dataclass
class MusicnnOutput(ModelOutput):
    """`logits`: genre logits `(batch, num_labels)`; `tag_logits` (with `output_tags=True`): the pretrained
    network's tag logits `(batch, num_tags)` (sigmoid: tag probabilities)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    tag_logits: torch.Tensor | None = None


class MusicnnBackbone(nn.Module):
    """musicnn's front end, mid end and back end up to the tag logits (`build_musicnn`)."""

    def __init__(self, config: MusicnnConfig):
        super().__init__()
        eps = config.batch_norm_eps
        self.input_norm = nn.BatchNorm2d(1, eps=eps)
        self.timbral = nn.ModuleList(
            nn.Conv2d(1, config.timbral_filters, (7, height), padding=(3, 0))
            for height in config.timbral_kernel_heights
        )
        self.timbral_norms = nn.ModuleList(
            nn.BatchNorm2d(config.timbral_filters, eps=eps) for _ in config.timbral_heights
        )
        self.temporal_lengths = list(config.temporal_lengths)
        self.temporal = nn.ModuleList(
            nn.Conv2d(1, config.temporal_filters, (length, 1)) for length in self.temporal_lengths
        )
        self.temporal_norms = nn.ModuleList(
            nn.BatchNorm2d(config.temporal_filters, eps=eps) for _ in config.temporal_lengths
        )
        channels, width = config.frontend_channels, config.midend_filters
        self.midend = nn.ModuleList(
            nn.Conv1d(channels if i == 0 else width, width, 7, padding=3) for i in range(3)
        )
        self.midend_norms = nn.ModuleList(nn.BatchNorm1d(width, eps=eps) for _ in range(3))
        pooled = 2 * (channels + 3 * width)
        self.pool_norm = nn.BatchNorm1d(pooled, eps=eps)
        self.dropout = nn.Dropout(config.backend_dropout_prob)
        self.dense = nn.Linear(pooled, config.backend_units)
        self.dense_norm = nn.BatchNorm1d(config.backend_units, eps=eps)
        self.tag_classifier = nn.Linear(config.backend_units, config.num_tags)

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(batch, frames, mels)` log-mel patches -> (penultimate `(batch, backend_units)`, tag logits)."""
        x = self.input_norm(log_mel.unsqueeze(1))
        features = []
        for conv, norm in zip(self.timbral, self.timbral_norms, strict=True):
            # ReLU, batch norm, then max over every remaining mel position (the order of models.py).
            features.append(norm(F.relu(conv(x))).amax(dim=3))
        for length, conv, norm in zip(self.temporal_lengths, self.temporal, self.temporal_norms, strict=True):
            padded = F.pad(x, (0, 0, (length - 1) // 2, length // 2))
            features.append(norm(F.relu(conv(padded))).amax(dim=3))
        frontend = torch.cat(features, dim=1)  # (batch, channels, frames)
        layers = [frontend]
        hidden = frontend
        for i, (conv, norm) in enumerate(zip(self.midend, self.midend_norms, strict=True)):
            out = norm(F.relu(conv(hidden)))
            hidden = out if i == 0 else out + hidden  # the second and third are residual
            layers.append(hidden)
        stacked = torch.cat(layers, dim=1)
        # tf.concat([max, mean], 2) on (batch, channels, 1) then flatten: each channel's max, then its mean.
        pooled = torch.stack([stacked.amax(dim=2), stacked.mean(dim=2)], dim=2).flatten(1)
        pooled = self.dropout(self.pool_norm(pooled))
        penultimate = self.dense_norm(F.relu(self.dense(pooled)))
        return penultimate, self.tag_classifier(self.dropout(penultimate))


class MusicnnPreTrainedModel(PreTrainedModel):
    config: MusicnnConfig
    config_class = MusicnnConfig
    base_model_prefix = "musicnn"
    main_input_name = "input_values"
    input_modalities = ("audio",)

    @torch.no_grad()
    def _init_weights(self, module):
        """Normal(0, initializer_range) weights and zero biases; batch norms the identity."""
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)


class MusicnnForAudioClassification(MusicnnPreTrainedModel):
    def __init__(self, config: MusicnnConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.musicnn = MusicnnBackbone(config)
        layers = []
        width = config.backend_units
        if config.classifier_hidden_size > 0:
            layers += [
                nn.Dropout(config.classifier_dropout_prob),
                nn.Linear(width, config.classifier_hidden_size),
                nn.ReLU(),
            ]
            width = config.classifier_hidden_size
        layers += [nn.Dropout(config.classifier_dropout_prob), nn.Linear(width, config.num_labels)]
        self.classifier = nn.Sequential(*layers)
        self.post_init()
        self.set_backbone_frozen(config.freeze_backbone)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading weights gives every parameter requires_grad again: freeze what the config says is frozen.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.set_backbone_frozen(model.config.freeze_backbone)
        return loaded

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the pretrained network: no gradients, and eval mode kept in `train()`."""
        self.config.freeze_backbone = bool(frozen)
        for parameter in self.musicnn.parameters():
            parameter.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self.config, "freeze_backbone", False):
            # A frozen network's batch norms keep their pretrained statistics and its dropouts stay off: its tags
            # and penultimate features are then those of the pretrained network, in training too.
            self.musicnn.eval()
        return self

    def frozen_modules(self) -> list[nn.Module]:
        """What a frozen-feature cache replaces (`ast_dora.prefix_cache`): the whole pretrained network."""
        return [self.musicnn]

    @torch.no_grad()
    def frozen_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """The penultimate features the genre head reads (what `prefix_hidden_states` takes), in eval mode."""
        return self.musicnn(input_values.to(self.musicnn.dense.weight.dtype))[0]

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prefix_hidden_states: torch.Tensor | None = None,
        output_tags: bool = False,
        **kwargs,
    ) -> MusicnnOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, frames, num_mel_bins)`):
            Log-mel patches from [`MusicnnFeatureExtractor`] (187 frames for the published 3-s input).
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Genre ids (`-100` ignored) or float `(batch_size, num_labels)` target distributions (mixup).
        prefix_hidden_states (`torch.FloatTensor` of shape `(batch_size, backend_units)`, *optional*):
            Instead of `input_values`: the frozen network's penultimate features (`frozen_features`), computed
            once per window by the training pipeline's cache; only the genre head runs (no `tag_logits`).
        output_tags (`bool`, defaults to False):
            Also return `tag_logits`, the pretrained tag head's (the Trainer's predictions are then `logits` only).
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        dtype = self.musicnn.dense.weight.dtype
        tag_logits = None
        if prefix_hidden_states is not None:
            penultimate = prefix_hidden_states.to(dtype)
        elif input_values is None:
            raise ValueError(
                "MusicnnForAudioClassification needs `input_values` (or `prefix_hidden_states`)."
            )
        elif input_values.dim() != 3 or input_values.shape[2] != self.config.num_mel_bins:
            raise ValueError(
                f"input_values must have shape (batch, frames, {self.config.num_mel_bins}), got "
                f"{tuple(input_values.shape)}."
            )
        else:
            penultimate, tag_logits = self.musicnn(input_values.to(dtype))
        logits = self.classifier(penultimate)
        loss = None
        if labels is not None:
            config = self.config
            loss = genre_loss(
                logits,
                labels,
                num_items_in_batch=num_items_in_batch,
                class_weights=config.class_weights,
                label_smoothing=config.label_smoothing,
                focal_gamma=config.focal_gamma if config.loss == "focal" else 0.0,
            )
        return MusicnnOutput(loss=loss, logits=logits, tag_logits=tag_logits if output_tags else None)


MusicnnForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["MusicnnBackbone", "MusicnnForAudioClassification", "MusicnnOutput", "MusicnnPreTrainedModel"]
