"""Configuration of musicnn (Pons & Serra, ISMIR 2019 LBD) with a genre head beside its 50-tag head.

Remote code: this file is copied next to saved weights and imported by processes that do not have this
project installed, so it may import only torch, numpy, transformers and its siblings (relatively).
"""

from transformers import PretrainedConfig


class MusicnnConfig(PretrainedConfig):
    r"""
    Configuration of [`MusicnnForAudioClassification`]: the musicnn network of `musicnn/models.py`
    (`build_musicnn`) and a genre classifier on its penultimate layer.

    The network, on a `(batch, frames, num_mel_bins)` log-mel patch: batch norm of the input; front end of
    timbral convolutions (`timbral_filters` filters of 7 frames by each fraction of `timbral_heights` of the mel
    axis, max-pooled over frequency) and temporal ones (`temporal_filters` filters of each of `temporal_lengths`
    frames by one mel band, "same" padded, max-pooled over frequency); mid end of three 7-frame 1-D convolutions
    of `midend_filters` filters, the last two residual; back end: max and mean over time of everything
    concatenated, batch norm, dropout, a dense layer of `backend_units` (ReLU, then batch norm: the
    "penultimate" features) and, after dropout, the 50-tag logits. Every batch norm has `batch_norm_eps`
    (TensorFlow's default 1e-3, not torch's).

    Args:
        num_mel_bins (`int`, defaults to 96)
        timbral_filters (`int`, defaults to 204) / timbral_heights (`list[float]`, defaults to `[0.4, 0.7]`)
        temporal_filters (`int`, defaults to 51) / temporal_lengths (`list[int]`, defaults to `[128, 64, 32]`)
        midend_filters (`int`, defaults to 64) / backend_units (`int`, defaults to 200)
        tag_labels (`list[str]`): the pretrained network's tags (50 for the published models).
        backend_dropout_prob (`float`, defaults to 0.5): the back end's dropouts (used only if it is trained).
        freeze_backbone (`bool`, defaults to True): the pretrained network is not trained: its parameters do
            not require gradients and its batch norms and dropouts stay in eval mode when the model trains, so
            the tags stay exactly those of the pretrained network.
        classifier_hidden_size (`int`, defaults to 0): 0: the genre head is a linear map of the penultimate
            features; > 0: one ReLU hidden layer of that width.
        classifier_dropout_prob (`float`, defaults to 0.0): dropout before each genre-head linear.
        label_smoothing (`float`, defaults to 0.0) / class_weights (`list[float]`, *optional*) / loss
            (`"cross_entropy"` or `"focal"`) / focal_gamma (`float`, defaults to 2.0): the genre loss.
        initializer_range (`float`, defaults to 0.02): normal initialisation of the genre head.
    """

    model_type = "genre_musicnn"

    num_mel_bins: int = 96
    timbral_filters: int = 204
    timbral_heights: list[float] | None = None
    temporal_filters: int = 51
    temporal_lengths: list[int] | None = None
    midend_filters: int = 64
    backend_units: int = 200
    tag_labels: list[str] | None = None
    backend_dropout_prob: float = 0.5
    batch_norm_eps: float = 1e-3
    freeze_backbone: bool = True
    classifier_hidden_size: int = 0
    classifier_dropout_prob: float = 0.0
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None
    loss: str = "cross_entropy"
    focal_gamma: float = 2.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.timbral_heights is None:
            self.timbral_heights = [0.4, 0.7]
        if self.temporal_lengths is None:
            self.temporal_lengths = [128, 64, 32]
        if self.tag_labels is None:
            self.tag_labels = [f"tag_{i}" for i in range(50)]
        self.tag_labels = [str(t) for t in self.tag_labels]
        for height in self.timbral_heights:
            if int(height * self.num_mel_bins) < 1 or height > 1:
                raise ValueError(
                    f"MusicnnConfig: timbral_heights must be in (0, 1], got {self.timbral_heights}."
                )
        if self.loss not in ("cross_entropy", "focal"):
            raise ValueError(f"MusicnnConfig: loss must be 'cross_entropy' or 'focal', got {self.loss!r}.")
        for name in ("backend_dropout_prob", "classifier_dropout_prob", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"MusicnnConfig: {name} must be in [0, 1), got {getattr(self, name)}.")
        if self.id2label is None:
            kwargs.setdefault("num_labels", 10)
        super().__post_init__(**kwargs)
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
            if len(self.class_weights) != self.num_labels or min(self.class_weights) < 0:
                raise ValueError(
                    f"MusicnnConfig: class_weights must be {self.num_labels} non-negative numbers (one per label), "
                    f"got {self.class_weights}."
                )

    @property
    def timbral_kernel_heights(self) -> list[int]:
        """Mel bands each timbral filter spans (`int(fraction * num_mel_bins)`, as upstream)."""
        return [int(height * self.num_mel_bins) for height in self.timbral_heights]

    @property
    def frontend_channels(self) -> int:
        return (
            len(self.timbral_heights) * self.timbral_filters
            + len(self.temporal_lengths) * self.temporal_filters
        )

    @property
    def num_tags(self) -> int:
        return len(self.tag_labels)


MusicnnConfig.register_for_auto_class("AutoConfig")

__all__ = ["MusicnnConfig"]
