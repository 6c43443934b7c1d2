"""AST with a small MLP genre head.

This file travels with saved models as remote code (`register_for_auto_class`), so it imports only torch
and transformers: a process that never installed this project loads a merged AST-DoRA model with
`AutoModelForAudioClassification.from_pretrained(path, trust_remote_code=True)`.
"""

import torch
from torch import nn
from transformers import ASTConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTModel,
    ASTPreTrainedModel,
)


class ASTGenreMLPHead(nn.Module):
    """One hidden layer with GELU and dropout before each linear (the seed report's head)."""

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


class ASTWithMLPHeadForAudioClassification(ASTPreTrainedModel):
    """`ASTForAudioClassification` with the MLP head; same encoder, same weight names, so AudioSet
    checkpoints load into it and only the head starts fresh."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = ASTModel(config)
        self.classifier = ASTGenreMLPHead(config)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs: BaseModelOutputWithPooling = self.audio_spectrogram_transformer(
            input_values, attention_mask=attention_mask, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = ["ASTGenreMLPHead", "ASTWithMLPHeadForAudioClassification"]
