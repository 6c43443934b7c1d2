"""AST with a small MLP genre head.

This file travels with saved models as remote code (`register_for_auto_class`), so it imports only torch
and transformers: a process that never installed this project loads a merged AST-DoRA model with
`AutoModelForAudioClassification.from_pretrained(path, trust_remote_code=True)`.

The model has two inputs: `input_values` (spectrograms) run the whole encoder; `prefix_hidden_states` (the hidden
states entering encoder layer `config.min_layer`, as `ast_dora/prefix_cache.py` caches them) run only the layers
from there on. Both go through the same layers, final layernorm, pooling, head and loss (`_encode_from`,
`genre_cross_entropy`).

Music detection: a model built from an AudioSet checkpoint keeps what that checkpoint's own AudioSet output
needs beside the genre head (`ASTAudioSetBranch`): the pretrained FFNs of the layers DoRA adapts
(`config.audioset_from_layer` on; DoRA changes nothing else of the encoder) and the AudioSet classifier (layernorm +
dense), with the class names in `config.audioset_labels`. With `output_audioset=True` the shared frozen layers below
`audioset_from_layer` run once and feed both the adapted top layers (genre logits) and the pretrained ones
(`audioset_logits`, what the checkpoint computes with the adapters off; AudioSet is multi-label: sigmoid per class).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import ASTConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTMLP,
    ASTForAudioClassification,
    ASTModel,
    ASTPreTrainedModel,
)

from .genre_loss import genre_loss

try:  # how ASTModel itself records `output_hidden_states` / `output_attentions` in recent transformers
    from transformers.utils.output_capturing import capture_outputs
except ImportError:  # older transformers 5: the forward still works, without those two optional outputs

    def capture_outputs(**_):
        return lambda forward: forward


def genre_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    class_weights: list[float] | None = None,
) -> torch.Tensor:
    """Cross-entropy of the genre head: the project's one genre loss (`genre_loss.py`: class ids or target
    distributions such as mixup's, -100 skipped, each sample's term times its class weight, the sum divided by the
    count of samples or by `num_items_in_batch`, which the Trainer passes under gradient accumulation)."""
    return genre_loss(logits, labels, num_items_in_batch, class_weights=class_weights)


class ASTGenreMLPHead(nn.Module):
    """One hidden layer with GELU and dropout before each linear: the head of the AST + DoRA report (GitHub project
    sbajamy/Music-Genre-Classification-Using-Audio-Spectrogram-Transformer)."""

    def __init__(self, config: ASTConfig):
        super().__init__()
        hidden_size = getattr(config, "classifier_hidden_size", 200)
        dropout = getattr(config, "classifier_dropout", 0.1)
        self.dropout1 = nn.Dropout(dropout)
        self.fc1 = nn.Linear(config.hidden_size, hidden_size)
        self.act = nn.GELU()
        self.dropout2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_size, config.num_labels)

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        hidden_states = self.act(self.fc1(self.dropout1(pooled_output)))
        return self.fc2(self.dropout2(hidden_states))


@dataclass
class ASTGenreClassifierOutput(SequenceClassifierOutput):
    r"""
    audioset_logits (`torch.FloatTensor` of shape `(batch_size, len(config.audioset_labels))`):
        The pretrained AudioSet classifier's logits (sigmoid gives each class's probability), computed by the encoder
        as pretrained; only with `output_audioset=True` on a model that has the AudioSet branch.
    """

    audioset_logits: torch.FloatTensor | None = None


class ASTAudioSetBranch(nn.Module):
    """The pretrained checkpoint's own AudioSet output beside the genre head: the FFNs of layers
    `config.audioset_from_layer:` as pretrained (`mlps`) and its classifier (`layernorm` + `dense`, as
    `ASTMLPHead`)."""

    def __init__(self, config: ASTConfig):
        super().__init__()
        self.start_layer = int(config.audioset_from_layer)
        self.mlps = nn.ModuleList(ASTMLP(config) for _ in range(config.num_hidden_layers - self.start_layer))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, len(config.audioset_labels))

    @torch.no_grad()
    def copy_from(self, pretrained: ASTForAudioClassification) -> None:
        """Take the weights from the AudioSet checkpoint itself (its top layers' FFNs and its classifier)."""
        layers = pretrained.audio_spectrogram_transformer.layers[self.start_layer :]
        for mlp, layer in zip(self.mlps, layers, strict=True):
            mlp.load_state_dict(layer.mlp.state_dict())
        self.layernorm.load_state_dict(pretrained.classifier.layernorm.state_dict())
        self.dense.load_state_dict(pretrained.classifier.dense.state_dict())

    def forward(
        self, encoder: ASTModel, hidden_states: torch.Tensor, attention_mask, **kwargs
    ) -> torch.Tensor:
        """Hidden states entering layer `start_layer` -> AudioSet logits: each layer as `ASTLayer.forward`
        computes it, with the pretrained FFN; the encoder's final layernorm and pooling; the classifier.

        Only the CLS and distillation tokens of the last layer's output are pooled, so the last layer computes only
        their rows (their queries against every token's keys and values): the same numbers as the whole layer for
        those two tokens, at about a fifth of a layer's cost."""
        layers = list(zip(encoder.layers[self.start_layer :], self.mlps, strict=True))
        for layer, mlp in layers[:-1]:
            residual = hidden_states
            hidden_states, _ = layer.attention(
                layer.layernorm_before(hidden_states), attention_mask, **kwargs
            )
            hidden_states = layer.dropout(hidden_states) + residual
            hidden_states = layer.dropout(mlp(layer.layernorm_after(hidden_states))) + hidden_states
        layer, mlp = layers[-1]
        pooled_tokens = self._pooled_tokens_of_layer(layer, mlp, hidden_states, attention_mask)
        sequence_output = encoder.layernorm(pooled_tokens)
        pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2
        return self.dense(self.layernorm(pooled_output))

    @staticmethod
    def _pooled_tokens_of_layer(
        layer, mlp: ASTMLP, hidden_states: torch.Tensor, attention_mask
    ) -> torch.Tensor:
        """`ASTLayer.forward` (with `mlp` as its FFN) for the first two tokens only: (batch, 2, hidden)."""
        attention = layer.attention
        batch, tokens, _ = hidden_states.shape
        normed = layer.layernorm_before(hidden_states)

        def heads(states: torch.Tensor) -> torch.Tensor:
            return states.view(batch, states.shape[1], -1, attention.head_dim).transpose(1, 2)

        query = heads(attention.q_proj(normed[:, :2]))
        key, value = heads(attention.k_proj(normed)), heads(attention.v_proj(normed))
        scores = torch.matmul(query, key.transpose(2, 3)) * attention.scaling
        if attention_mask is not None:  # (None for unpadded spectrograms, what AST always gets)
            mask = attention_mask if attention_mask.shape[-2] == 1 else attention_mask[..., :2, :]
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        attended = torch.matmul(weights, value).transpose(1, 2).reshape(batch, 2, -1)
        hidden = layer.dropout(attention.o_proj(attended)) + hidden_states[:, :2]
        return layer.dropout(mlp(layer.layernorm_after(hidden))) + hidden


def has_audioset_branch(config) -> bool:
    return (
        bool(getattr(config, "audioset_labels", None))
        and getattr(config, "audioset_from_layer", None) is not None
    )


class ASTWithMLPHeadForAudioClassification(ASTPreTrainedModel):
    """`ASTForAudioClassification` with the MLP head; same encoder, same weight names, so AudioSet
    checkpoints load into it and only the head starts fresh."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = ASTModel(config)
        self.classifier = ASTGenreMLPHead(config)
        self.audioset = ASTAudioSetBranch(config) if has_audioset_branch(config) else None
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; loaded from an AudioSet checkpoint (no `audioset.*` weights: the base
        that training starts from, or that an adapter is put on), the AudioSet branch is copied from that
        checkpoint's own classifier and top-layer FFNs, so it is the pretrained model's output wherever it loads."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        if model.audioset is not None and any(key.startswith("audioset.") for key in info["missing_keys"]):
            hub = {
                key: kwargs[key]
                for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
                if key in kwargs
            }
            pretrained = ASTForAudioClassification.from_pretrained(pretrained_model_name_or_path, **hub)
            labels = [pretrained.config.id2label[i] for i in range(pretrained.config.num_labels)]
            if labels != list(model.config.audioset_labels):
                raise ValueError(
                    f"{pretrained_model_name_or_path}'s classes are not this model's audioset_labels: it "
                    "is not the checkpoint the model was built on."
                )
            model.audioset.copy_from(pretrained)
            info["missing_keys"] = type(info["missing_keys"])(
                key for key in info["missing_keys"] if not key.startswith("audioset.")
            )
        return (model, info) if output_loading_info else model

    def _encode_from(
        self,
        hidden_states: torch.Tensor,
        start_layer: int,
        attention_mask: torch.Tensor | None = None,
        output_audioset: bool = False,
        **kwargs,
    ) -> tuple[BaseModelOutputWithPooling, torch.Tensor | None]:
        """Encoder layers `start_layer:`, final layernorm and pooling (mean of the CLS and distillation tokens),
        as `ASTModel.forward` computes them after its embeddings; with `output_audioset`, also the AudioSet logits
        of the pretrained top layers fed by the same hidden states."""
        encoder = self.audio_spectrogram_transformer
        attention_mask = create_bidirectional_mask(
            config=encoder.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        audioset_logits = None
        if output_audioset:
            if self.audioset is None:
                raise ValueError(
                    "This model has no AudioSet branch (config.audioset_labels): it was not built from "
                    "an AudioSet checkpoint by this project's build_ast_dora."
                )
            if start_layer > self.audioset.start_layer:
                raise ValueError(
                    f"output_audioset needs the hidden states entering layer "
                    f"{self.audioset.start_layer}; these enter layer {start_layer}."
                )
        for index, layer in enumerate(encoder.layers[start_layer:], start=start_layer):
            if output_audioset and index == self.audioset.start_layer:
                audioset_logits = self.audioset(encoder, hidden_states, attention_mask, **kwargs)
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        sequence_output = encoder.layernorm(hidden_states)
        pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2
        outputs = BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)
        return outputs, audioset_logits

    def _prefix_start_layer(self) -> int:
        min_layer = getattr(self.config, "min_layer", None)
        num_layers = self.config.num_hidden_layers
        if min_layer is None:
            raise ValueError(
                "prefix_hidden_states are the hidden states entering encoder layer `config.min_layer`, and this "
                "model's config has no `min_layer`: set `model.config.min_layer` (build_ast_dora and "
                "apply_prefix_cache do), or pass `input_values`."
            )
        if not 0 <= min_layer <= num_layers:
            raise ValueError(
                f"config.min_layer={min_layer} is not a layer of this {num_layers}-layer encoder."
            )
        return min_layer

    def _residual_stream(self, prefix_hidden_states: torch.Tensor) -> torch.Tensor:
        """Cached hidden states (float, or the int16 bit pattern of bf16 as the cache stores them) in the
        residual stream's dtype."""
        if not prefix_hidden_states.is_floating_point():
            if prefix_hidden_states.dtype != torch.int16:
                raise TypeError(
                    f"prefix_hidden_states must be float or the int16 bit pattern of bf16 (as cached), got "
                    f"{prefix_hidden_states.dtype}: read the cached column with `cache_prefix_hidden_states`' format."
                )
            prefix_hidden_states = prefix_hidden_states.view(torch.bfloat16)
        # Without the cache the residual stream is fp32 (fp32 weights; autocast only lowers the matmuls).
        return prefix_hidden_states.to(self.audio_spectrogram_transformer.layernorm.weight.dtype)

    # Records `hidden_states` / `attentions` of the layers that run, as `ASTModel.forward` does (from the cache:
    # the cached states, then the outputs of layers >= min_layer).
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prefix_hidden_states: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        output_audioset: bool = False,
        **kwargs,
    ) -> ASTGenreClassifierOutput:
        r"""
        input_values (`torch.Tensor` of shape `(batch_size, max_length, num_mel_bins)`):
            Log-mel spectrograms from `ASTFeatureExtractor`: run the whole encoder.
        prefix_hidden_states (`torch.Tensor` of shape `(batch_size, tokens, hidden_size)`):
            Instead of `input_values`: the hidden states entering encoder layer `config.min_layer` (float, or the
            int16 bit pattern of bf16 as the frozen-prefix cache stores them); only layers `>= min_layer`,
            the final layernorm, pooling and the head run.
        labels (`torch.LongTensor` of shape `(batch_size,)`):
            Class ids for the cross-entropy loss.
        num_items_in_batch (`int` or `torch.Tensor`):
            Labels in the whole accumulated optimizer step (the Trainer passes it): the loss is then the sum over
            this batch divided by it, so that micro-batches add up to the step's mean.
        output_audioset (`bool`, default `False`):
            Also return `audioset_logits`, the pretrained AudioSet classifier's output (see `ASTAudioSetBranch`).
        """
        if (input_values is None) == (prefix_hidden_states is None):
            raise ValueError("Pass either input_values or prefix_hidden_states.")
        if prefix_hidden_states is not None:
            start_layer = self._prefix_start_layer()
            hidden_states = self._residual_stream(prefix_hidden_states)
        else:
            start_layer = 0
            hidden_states = self.audio_spectrogram_transformer.embeddings(input_values)
        outputs, audioset_logits = self._encode_from(
            hidden_states, start_layer, attention_mask, output_audioset, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)
        loss = (
            None
            if labels is None
            else genre_cross_entropy(
                logits, labels, num_items_in_batch, getattr(self.config, "class_weights", None)
            )
        )
        return ASTGenreClassifierOutput(loss=loss, logits=logits, audioset_logits=audioset_logits)


__all__ = [
    "ASTAudioSetBranch",
    "ASTGenreClassifierOutput",
    "ASTGenreMLPHead",
    "ASTWithMLPHeadForAudioClassification",
    "genre_cross_entropy",
    "has_audioset_branch",
]

# `save_pretrained` then copies this file next to the weights and writes `auto_map` into config.json, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
ASTWithMLPHeadForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
