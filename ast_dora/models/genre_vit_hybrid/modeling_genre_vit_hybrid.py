"""PyTorch ViT-hybrid genre classifier: a small ViT trained from scratch on normalised log-mel images.

Class roles mirror transformers' Audio Spectrogram Transformer (PatchEmbeddings, Embeddings, Attention, MLP, Layer,
PreTrainedModel, Model, head, ForAudioClassification); the block internals follow timm's ViT (pre-norm, fused qkv,
DropPath on both residual branches).

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only torch, numpy, transformers and its siblings (relatively).
"""

import contextlib
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_genre_vit_hybrid import GenreViTHybridConfig
from .genre_loss import genre_loss

# ---------------------------------------------------------------------------------------------------------------
# Small reusable layers, as timm writes them
# ---------------------------------------------------------------------------------------------------------------


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero a sample's whole residual branch with probability `drop_prob`, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    # One draw per sample, broadcast over tokens and channels; stays on device (no host sync).
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


# Same-width integer type of each float type, to build the scaled dropout mask with integer bit operations.
_INT_OF_FLOAT = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


@functools.lru_cache(maxsize=64)
def _float_bits(value: float, dtype: torch.dtype) -> int:
    return torch.tensor(value, dtype=dtype).view(_INT_OF_FLOAT[dtype]).item()


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = False) -> torch.Tensor:
    """`F.dropout`, with a faster CPU path (same distribution up to a 2^-15 / 2^-31 grid on `p`).

    On CPU, `F.dropout` draws a 32-bit number per element from the single-threaded generator and builds its mask
    with bool/float conversions; at dropout 0.3 on every MLP that was about as slow as the block's matmuls. Here
    one 64-bit draw feeds four bf16 (two fp32) elements, and the mask `keep ? 1/(1-p) : 0` is assembled directly
    as float bits by in-place integer ops, so only one float multiply touches `x`.
    """
    if not training or p == 0.0:
        return x
    int_dtype = _INT_OF_FLOAT.get(x.dtype)
    # Under torch.compile, F.dropout: inductor fuses its own mask, and cannot trace the dtype-reinterpreting views.
    if x.device.type != "cpu" or int_dtype is None or not 0.0 < p < 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    bits = torch.iinfo(int_dtype).bits
    n = x.numel()
    # random_() fills [0, 2^63): every lane is uniform once its sign bit is cleared.
    words = torch.empty(-(-n // (64 // bits)), dtype=torch.int64, device=x.device).random_()
    lanes = words.view(int_dtype)[:n].view(x.shape)
    threshold = min(round(p * 2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    # (u - threshold) >> (bits - 1) is all ones where u < threshold (drop) and zero elsewhere (keep).
    drop_bits = lanes.bitwise_and_(2 ** (bits - 1) - 1).sub_(threshold).bitwise_right_shift_(bits - 1)
    scale_bits = _float_bits(1.0 / (1.0 - p), x.dtype)
    mask = drop_bits.bitwise_not_().bitwise_and_(scale_bits).view(x.dtype)
    return x * mask


class Dropout(nn.Dropout):
    """`nn.Dropout` with the fast CPU path of `dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout."""

    def __init__(
        self, in_features: int, hidden_features: int, act: str = "gelu", drop: float = 0.0, bias=True
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = ACT2FN[act]
        self.drop1 = Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop2 = Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def _random_band_mask(
    batch: int, size: int, num_masks: int, max_width: int, device: torch.device
) -> torch.Tensor | None:
    """(batch, size) bool, True inside `num_masks` random bands per row of width in [0, max_width]."""
    max_width = min(max_width, size)
    if num_masks <= 0 or max_width <= 0:
        return None
    width = torch.randint(0, max_width + 1, (batch, num_masks, 1), device=device)
    # Start uniform over the positions where the band fits, drawn per sample and per mask at once.
    start = (torch.rand(batch, num_masks, 1, device=device) * (size - width + 1)).long()
    position = torch.arange(size, device=device)
    return ((position >= start) & (position < start + width)).any(dim=1)


def class_weight_of(config, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """`config.class_weights` (None, or one float per label) as a tensor on `labels`' device."""
    weights = getattr(config, "class_weights", None)
    if weights is None:
        return None
    return torch.tensor(weights, dtype=dtype, device=labels.device)


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.5,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): -(1 - p_t)^gamma * log p_t per sample; gamma = 0 is cross-entropy. The
    project's one genre loss (`genre_loss.py`: class ids or target distributions, `ignore_index`, `weight` per
    class multiplying each sample's term, `num_items_in_batch` as the divisor)."""
    return genre_loss(
        logits, labels, num_items_in_batch, class_weights=weight, focal_gamma=gamma, ignore_index=ignore_index
    )


def cross_entropy_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy, label-smoothed: the project's one genre loss (`genre_loss.py`) with focal_gamma 0."""
    return genre_loss(
        logits,
        labels,
        num_items_in_batch,
        class_weights=weight,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    )


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


class GenreViTHybridSpecAugment(nn.Module):
    """SpecAugment frequency and time masking of `(B, C, mel, time)` inputs, training mode only."""

    def __init__(self, config: GenreViTHybridConfig):
        super().__init__()
        self.enabled = config.apply_spec_augment
        self.num_freq_masks = config.num_freq_masks
        self.freq_mask_max_width = config.freq_mask_max_width
        self.num_time_masks = config.num_time_masks
        self.time_mask_max_width = config.time_mask_max_width
        self.mask_value = config.spec_augment_mask_value

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.enabled):
            return input_values
        batch, _, height, width = input_values.shape
        device = input_values.device
        freq = _random_band_mask(batch, height, self.num_freq_masks, self.freq_mask_max_width, device)
        time = _random_band_mask(batch, width, self.num_time_masks, self.time_mask_max_width, device)
        if freq is None and time is None:
            return input_values
        mask = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
        if freq is not None:
            mask = mask | freq[:, None, :, None]
        if time is not None:
            mask = mask | time[:, None, None, :]
        return input_values.masked_fill(mask, self.mask_value)


class GenreViTHybridPatchEmbeddings(nn.Module):
    """`(B, C, mel, time)` images -> `(B, num_patches, hidden_size)` tokens via a stride-`patch_size` convolution."""

    def __init__(self, config: GenreViTHybridConfig):
        super().__init__()
        self.image_size = tuple(config.image_size)
        self.num_channels = config.num_channels
        self.grid_size = config.grid_size
        self.num_patches = config.num_patches
        channels, patch = config.num_channels, config.patch_size
        self.stem = None
        if config.conv_stem_channels:
            layers = []
            for out_channels in config.conv_stem_channels:
                layers += [
                    nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.GELU(),
                ]
                channels, patch = out_channels, patch // 2
            self.stem = nn.Sequential(*layers)
        self.projection = nn.Conv2d(channels, config.hidden_size, kernel_size=patch, stride=patch)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        # Matches weights stored in bf16/fp16; a no-op for fp32 weights (autocast then picks the compute dtype).
        input_values = input_values.to(self.projection.weight.dtype)
        if self.stem is not None:
            input_values = self.stem(input_values)
        return self.projection(input_values).flatten(2).transpose(1, 2)


class GenreViTHybridEmbeddings(nn.Module):
    """Patch tokens with a prepended CLS token, plus a learned positional embedding, then dropout."""

    def __init__(self, config: GenreViTHybridConfig):
        super().__init__()
        self.patch_embeddings = GenreViTHybridPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, self.patch_embeddings.num_patches + 1, config.hidden_size)
        )
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        embeddings = self.patch_embeddings(input_values)
        cls_tokens = self.cls_token.expand(embeddings.shape[0], -1, -1).to(embeddings.dtype)
        embeddings = torch.cat((cls_tokens, embeddings), dim=1) + self.position_embeddings
        return self.dropout(embeddings)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    # Softmax in fp32 keeps bf16 autocast numerically close to the fp32 model.
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


class GenreViTHybridAttention(nn.Module):
    """Multi-head self-attention over the shared attention interface (`config._attn_implementation`)."""

    def __init__(self, config: GenreViTHybridConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        # One fused projection: a single large GEMM is faster than three, especially in bf16.
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, channels = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, tokens, head_dim)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        # CPU bf16 kernels for these small batched matmuls and softmaxes are slower than fp32 ones (the big
        # projections around them are where bf16 pays), so under CPU autocast the attention core runs in fp32.
        device_type = query.device.type
        fp32_core = device_type == "cpu" and torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type, enabled=False) if fp32_core else contextlib.nullcontext():
            if fp32_core:
                query, key, value = query.float(), key.float(), value.float()
            attn_output, attn_weights = attention_interface(
                self,
                query,
                key,
                value,
                None,  # every token is real: no padding, no causality
                dropout=self.attention_dropout if self.training else 0.0,
                scaling=self.scaling,
                **kwargs,
            )
        attn_output = attn_output.reshape(batch, tokens, channels)
        return self.proj(attn_output), attn_weights


class GenreViTHybridMLP(Mlp):
    def __init__(self, config: GenreViTHybridConfig):
        super().__init__(
            config.hidden_size,
            config.intermediate_size,
            act=config.hidden_act,
            drop=config.hidden_dropout_prob,
        )


class GenreViTHybridLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config: GenreViTHybridConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = GenreViTHybridAttention(config)
        self.drop_path1 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GenreViTHybridMLP(config)
        self.drop_path2 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), **kwargs)
        hidden_states = hidden_states + self.drop_path1(attention_output)
        hidden_states = hidden_states + self.drop_path2(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states


class GenreViTHybridPreTrainedModel(PreTrainedModel):
    config: GenreViTHybridConfig
    config_class = GenreViTHybridConfig
    base_model_prefix = "genre_vit_hybrid"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["GenreViTHybridEmbeddings", "GenreViTHybridLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": GenreViTHybridLayer,
        "attentions": GenreViTHybridAttention,
    }

    @torch.no_grad()
    def _init_weights(self, module):
        """timm ViT initialisation: truncated-normal weights, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        else:
            super()._init_weights(module)
        if isinstance(module, GenreViTHybridEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=std)
            init.normal_(module.cls_token, std=1e-6)


class GenreViTHybridModel(GenreViTHybridPreTrainedModel):
    def __init__(self, config: GenreViTHybridConfig):
        super().__init__(config)
        self.config = config
        self.spec_augment = GenreViTHybridSpecAugment(config)
        self.embeddings = GenreViTHybridEmbeddings(config)
        # Stochastic depth grows linearly with depth: 0 for the first block, drop_path_rate for the last.
        n = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.layers = nn.ModuleList([GenreViTHybridLayer(config, rate) for rate in rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> GenreViTHybridPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, input_values: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_channels, mel, time)`):
            Normalised log-mel images from [`GenreViTHybridFeatureExtractor`]; `(batch_size, mel, time)` is read as
            one channel.
        """
        if input_values is None:
            raise ValueError("GenreViTHybridModel needs `input_values`.")
        if input_values.dim() == 3:
            input_values = input_values.unsqueeze(1)
        expected = (self.config.num_channels, *self.config.image_size)
        if tuple(input_values.shape[1:]) != expected:
            raise ValueError(
                f"input_values must have shape (batch, {', '.join(map(str, expected))}) to match the positional "
                f"embedding, got {tuple(input_values.shape)}."
            )
        hidden_states = self.embeddings(self.spec_augment(input_values))
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        sequence_output = self.layernorm(hidden_states)
        if self.config.pooling == "cls":
            pooled_output = sequence_output[:, 0]
        elif self.config.pooling == "mean":
            pooled_output = sequence_output[:, 1:].mean(dim=1)
        else:  # time_mean_std: patch tokens are in (frequency row, time column) order
            rows, columns = self.config.grid_size
            grid = sequence_output[:, 1:].reshape(sequence_output.shape[0], rows, columns, -1)
            pooled_output = torch.cat([grid.mean(dim=2), grid.std(dim=2, unbiased=False)], dim=-1).flatten(1)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


class GenreViTHybridClassificationHead(nn.Module):
    """Linear map of the pooled, already layer-normed tokens to class logits (after `classifier_dropout_prob`)."""

    def __init__(self, config: GenreViTHybridConfig):
        super().__init__()
        self.dropout = Dropout(config.classifier_dropout_prob)
        self.dense = (
            nn.Linear(config.pooled_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.dense(self.dropout(pooled_output))


class GenreViTHybridForAudioClassification(GenreViTHybridPreTrainedModel):
    def __init__(self, config: GenreViTHybridConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.genre_vit_hybrid = GenreViTHybridModel(config)
        self.classifier = GenreViTHybridClassificationHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_channels, mel, time)`):
            Normalised log-mel images from [`GenreViTHybridFeatureExtractor`].
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids in `[0, num_labels)` (`-100` is ignored), or float `(batch_size, num_labels)` target
            distributions (mixup). The loss is `config.loss`: focal (`focal_gamma`) or cross-entropy, each sample's
            term multiplied by `config.class_weights[label]` when set.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs: BaseModelOutputWithPooling = self.genre_vit_hybrid(input_values, **kwargs)
        logits = self.classifier(outputs.pooler_output)

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            weight = class_weight_of(self.config, labels)
            if self.config.loss == "focal":
                loss = focal_loss(
                    logits,
                    labels,
                    self.config.focal_gamma,
                    num_items_in_batch=num_items_in_batch,
                    weight=weight,
                )
            else:
                loss = cross_entropy_loss(
                    logits,
                    labels,
                    num_items_in_batch=num_items_in_batch,
                    weight=weight,
                    label_smoothing=self.config.label_smoothing,
                )

        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
GenreViTHybridModel.register_for_auto_class("AutoModel")
GenreViTHybridForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = [
    "DropPath",
    "Dropout",
    "GenreViTHybridForAudioClassification",
    "GenreViTHybridModel",
    "GenreViTHybridPreTrainedModel",
    "Mlp",
    "class_weight_of",
    "cross_entropy_loss",
    "focal_loss",
]
