"""Is it music at all? The AudioSet checkpoint's own answer, beside the genre.

A genre model can only answer with a genre: speech, a whale or a dog get one too. The AST that AST-DoRA fine-tunes
is an AudioSet classifier (527 sound classes: "Music", "Speech", "Whale vocalization", ...), and an AST-DoRA model
built by this project keeps what that classifier needs (`ASTAudioSetBranch` in
`ast_dora/models/ast_mlp/modeling_ast_mlp.py`): the frozen layers it runs anyway feed both the adapted top layers
(the genre) and the pretrained ones (AudioSet's logits, exactly what the checkpoint computes with the adapters off).
The model returns them as `audioset_logits` (the ONNX export as a second graph output of that name).

Here, window by window: AudioSet is multi-label, so each class's probability is the sigmoid of its logit; a song's
probability of a class is the mean over its windows (as the genre's is). "Music" is found by name in the base
checkpoint's classes (`config.audioset_labels`, copied from its `id2label`), never by index. A song is music when
its `music_probability` reaches `min_music_probability` (default `DEFAULT_MIN_MUSIC_PROBABILITY`, see docs/serving.md,
"Music check"). A model without the branch (the ViT-hybrid, or an AST-DoRA model saved before it) reports `None`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MUSIC_LABEL = "Music"
# AudioSet's classes are independent sigmoids: 0.5 is where the classifier says "more likely than not". Set on the
# stand-in only (docs/serving.md, "Music check").
DEFAULT_MIN_MUSIC_PROBABILITY = 0.5
AUDIOSET_TOP_K = 3


def audioset_labels(config) -> list[str] | None:
    """The AudioSet class names a model carries (`config.audioset_labels`), or None without the AudioSet branch."""
    labels = getattr(config, "audioset_labels", None)
    return list(labels) if labels else None


def music_index(labels: list[str]) -> int:
    """Where "Music" is among `labels` (by name; AudioSet's index 137 is never assumed)."""
    try:
        return labels.index(MUSIC_LABEL)
    except ValueError:
        raise ValueError(
            f"The model's AudioSet classes have no {MUSIC_LABEL!r} class (it has {len(labels)} classes, e.g. "
            f"{', '.join(labels[:5])}): it cannot tell music from other sounds."
        ) from None


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (stable for large |logits|)."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def check_min_music_probability(value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"min_music_probability must be between 0 and 1, got {value}")
    return value


@dataclass
class MusicCheck:
    """The AudioSet view of a song (or of the windows of it analysed so far)."""

    labels: list[str]  # AudioSet class names
    window_probabilities: np.ndarray  # (windows, classes): sigmoid of each window's AudioSet logits
    min_music_probability: float = DEFAULT_MIN_MUSIC_PROBABILITY

    @property
    def probabilities(self) -> np.ndarray:
        """(classes,) mean over the windows."""
        return self.window_probabilities.mean(axis=0)

    @property
    def music_probability(self) -> float:
        return float(self.probabilities[music_index(self.labels)])

    @property
    def window_music_probabilities(self) -> np.ndarray:
        return self.window_probabilities[:, music_index(self.labels)]

    @property
    def is_music(self) -> bool:
        return self.music_probability >= self.min_music_probability

    def top(self, k: int = AUDIOSET_TOP_K) -> list[dict[str, Any]]:
        """The song's `k` most probable AudioSet classes, `[{"label", "score"}]`, most probable first."""
        probabilities = self.probabilities
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [{"label": self.labels[i], "score": float(probabilities[i])} for i in order]

    def sounds_like(self) -> dict[str, Any]:
        """The most probable class other than "Music": what a song that is not music sounds like."""
        return next(item for item in self.top(len(self.labels)) if item["label"] != MUSIC_LABEL)

    def describe(self) -> str:
        """ "not music: sounds like Speech 0.93" for a song that is not music, "music 0.97" for one that is."""
        if self.is_music:
            return f"music {self.music_probability:.2f}"
        like = self.sounds_like()
        return (
            f"not music (music {self.music_probability:.2f}); sounds like {like['label']} {like['score']:.2f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "music_probability": self.music_probability,
            "is_music": self.is_music,
            "audioset_top": self.top(),
        }


NO_MUSIC_CHECK = {"music_probability": None, "is_music": None, "audioset_top": None}

__all__ = [
    "AUDIOSET_TOP_K",
    "DEFAULT_MIN_MUSIC_PROBABILITY",
    "MUSIC_LABEL",
    "NO_MUSIC_CHECK",
    "MusicCheck",
    "audioset_labels",
    "check_min_music_probability",
    "music_index",
    "sigmoid",
]
