"""Configuration of the from-scratch ViT-hybrid genre classifier.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only torch, numpy, transformers and its siblings (relatively).
"""

from transformers import PretrainedConfig

ALLOWED_LOSSES = ("focal", "cross_entropy")
ALLOWED_POOLINGS = ("cls", "mean", "time_mean_std")


class GenreViTHybridConfig(PretrainedConfig):
    r"""
    Configuration of [`GenreViTHybridModel`] / [`GenreViTHybridForAudioClassification`]. The defaults are the
    published GTZAN model (25.4 M parameters): a 216 x 144 mel image cut into 16 x 16 patches (13 x 9 = 117 tokens
    plus CLS), 8 pre-norm blocks of width 512 with 8 heads.

    Args:
        image_size (`tuple[int, int]`, defaults to `(216, 144)`):
            Input size as (mel axis, time axis); the positional embedding is sized from it.
        num_channels (`int`, defaults to 1):
            Channels of `input_values`.
        patch_size (`int`, defaults to 16):
            Side of the square, non-overlapping patches (kernel and stride of the patch projection).
        conv_stem_channels (`list[int]`, *optional*):
            A convolutional stem before the patch projection (Xiao et al. 2021, "Early convolutions help transformers
            see better"): one 3 x 3 stride-2 convolution + BatchNorm + GELU per entry, with that many output
            channels; the patch projection then has kernel and stride `patch_size / 2 ** len(conv_stem_channels)`,
            so the tokens still cover `patch_size` input cells. `None` (default): the single patch projection.
        hidden_size (`int`, defaults to 512):
            Token width.
        num_hidden_layers (`int`, defaults to 8):
            Number of transformer blocks.
        num_attention_heads (`int`, defaults to 8):
            Attention heads per block.
        intermediate_size (`int`, defaults to 2048):
            Hidden width of the MLP.
        hidden_act (`str`, defaults to `"gelu"`):
            MLP activation (a key of `transformers.activations.ACT2FN`).
        hidden_dropout_prob (`float`, defaults to 0.3):
            Dropout on the embeddings, the MLP and the attention output projection.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on the attention probabilities.
        drop_path_rate (`float`, defaults to 0.2):
            Stochastic-depth rate of the last block; it rises linearly from 0 at the first block.
        qkv_bias (`bool`, defaults to `True`):
            Whether the query/key/value projection has a bias.
        layer_norm_eps (`float`, defaults to 1e-6):
            LayerNorm epsilon.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated-normal weight initialisation.
        pooling (`str`, defaults to `"cls"`):
            `"cls"` pools the CLS token, `"mean"` averages the patch tokens, `"time_mean_std"` takes the mean and the
            standard deviation over time of the patch tokens of each frequency row and concatenates them over the
            rows (`2 x grid_size[0] x hidden_size` numbers: where in frequency, not only what, reaches the head).
        classifier_dropout_prob (`float`, defaults to 0.0):
            Dropout on the pooled output, before the classification head.
        label_smoothing (`float`, defaults to 0.0):
            Label smoothing of the cross-entropy loss (`loss="cross_entropy"` only).
        loss (`str`, defaults to `"focal"`):
            Training loss: `"focal"` or `"cross_entropy"`.
        focal_gamma (`float`, defaults to 2.5):
            Focusing parameter of the focal loss (0 gives cross-entropy).
        apply_spec_augment (`bool`, defaults to `True`):
            Whether to apply SpecAugment time/frequency masking to `input_values` in training mode.
        num_freq_masks (`int`, defaults to 2):
            Frequency (mel-axis) masks per sample.
        freq_mask_max_width (`int`, defaults to 27):
            Maximum width of a frequency mask, in input rows (of `image_size[0]`).
        num_time_masks (`int`, defaults to 2):
            Time masks per sample.
        time_mask_max_width (`int`, defaults to 18):
            Maximum width of a time mask, in input columns (of `image_size[1]`).
        spec_augment_mask_value (`float`, defaults to 0.0):
            Value written into masked cells; 0 is silence for the [0, 1]-normalised features.

    Labels are set with the usual `num_labels` (default 10) or `id2label` / `label2id` keyword arguments.
    """

    model_type = "genre_vit_hybrid"

    image_size: tuple[int, int] | list[int] = (216, 144)
    num_channels: int = 1
    patch_size: int = 16
    conv_stem_channels: list[int] | None = None
    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.3
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.2
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    pooling: str = "cls"
    classifier_dropout_prob: float = 0.0
    label_smoothing: float = 0.0
    loss: str = "focal"
    focal_gamma: float = 2.5
    apply_spec_augment: bool = True
    num_freq_masks: int = 2
    freq_mask_max_width: int = 27
    num_time_masks: int = 2
    time_mask_max_width: int = 18
    spec_augment_mask_value: float = 0.0

    def __post_init__(self, **kwargs):
        # transformers 5 configs are dataclasses: the generated `__init__` stores the fields and hands every
        # other keyword (num_labels, id2label, attn_implementation, ...) to this hook, so validation lives here.
        if self.loss not in ALLOWED_LOSSES:
            raise ValueError(
                f"GenreViTHybridConfig: loss={self.loss!r} is not supported; use one of {list(ALLOWED_LOSSES)}."
            )
        if self.pooling not in ALLOWED_POOLINGS:
            raise ValueError(
                f"GenreViTHybridConfig: pooling={self.pooling!r} is not supported; "
                f"use one of {list(ALLOWED_POOLINGS)}."
            )
        if not 0.0 <= self.label_smoothing < 1.0 or (
            self.label_smoothing > 0 and self.loss != "cross_entropy"
        ):
            raise ValueError(
                "GenreViTHybridConfig: label_smoothing must be in [0, 1) and applies to loss='cross_entropy' only; "
                f"got {self.label_smoothing} with loss={self.loss!r}."
            )
        if not 0.0 <= self.classifier_dropout_prob < 1.0:
            raise ValueError(
                f"GenreViTHybridConfig: classifier_dropout_prob must be in [0, 1), got {self.classifier_dropout_prob}."
            )
        if self.focal_gamma < 0:
            raise ValueError(f"GenreViTHybridConfig: focal_gamma must be >= 0, got {self.focal_gamma}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"GenreViTHybridConfig: hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})."
            )
        # JSON turns the tuple into a list; keep one type so configs compare equal after a round trip.
        self.image_size = tuple(int(s) for s in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < self.patch_size:
            raise ValueError(
                f"GenreViTHybridConfig: image_size must be (mel, time), both >= patch_size ({self.patch_size}); "
                f"got {self.image_size}."
            )
        if self.conv_stem_channels is not None:
            self.conv_stem_channels = [int(c) for c in self.conv_stem_channels]
            stride = 2 ** len(self.conv_stem_channels)
            if not self.conv_stem_channels or min(self.conv_stem_channels) < 1 or self.patch_size % stride:
                raise ValueError(
                    "GenreViTHybridConfig: conv_stem_channels must be positive channel counts, at most "
                    f"log2(patch_size) of them with patch_size a multiple of 2 ** their number; got "
                    f"{self.conv_stem_channels} with patch_size {self.patch_size}."
                )
        # The base class defaults to 2 labels; GTZAN has 10.
        if self.id2label is None:
            kwargs.setdefault("num_labels", 10)
        super().__post_init__(**kwargs)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (mel, time) produced by the stride-`patch_size` projection (after the conv stem, if any)."""
        if not self.conv_stem_channels:
            return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        size, stride = list(self.image_size), self.patch_size
        for _ in self.conv_stem_channels:  # 3 x 3, stride 2, padding 1: ceil(n / 2)
            size, stride = [-(-n // 2) for n in size], stride // 2
        return (size[0] // stride, size[1] // stride)

    @property
    def pooled_size(self) -> int:
        """Width of the pooled output the classification head reads."""
        if self.pooling == "time_mean_std":
            return 2 * self.grid_size[0] * self.hidden_size
        return self.hidden_size

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]


# Marked for `save_pretrained`, which then copies this file beside the weights and writes `auto_map`, so a saved
# model loads without this project (transformers marks a class it loads as remote code the same way).
GenreViTHybridConfig.register_for_auto_class("AutoConfig")

__all__ = ["GenreViTHybridConfig"]
