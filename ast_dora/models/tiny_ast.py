"""A randomly initialised tiny AST checkpoint, written with `save_pretrained`: the offline stand-in for the AudioSet AST.

The Hub (and so the AudioSet AST) is out of reach offline; the smoke config trains on top of this stand-in
through exactly the `from_pretrained` path the real checkpoint takes. It is shaped like the real one
(128 mel bins, 1024 frames, a classification head that the genre head replaces) but tiny.

Its weights are random: a frozen random encoder carries far less to adapt than AudioSet pretraining
does, so smoke accuracy of AST-DoRA on it says that the pipeline works, not what the method reaches.

    python -m ast_dora.models.tiny_ast data/tiny_ast
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, set_seed

TINY_AST_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=128,
    # 16x16 patches without overlap: 8 x 64 = 512 tokens instead of the real model's 1212.
    frequency_stride=16,
    time_stride=16,
    num_mel_bins=128,
    max_length=1024,
    num_labels=527,
)


def make_tiny_ast(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny AST (model + feature extractor) to `path` unless a checkpoint is already there."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    set_seed(seed)
    model = ASTForAudioClassification(ASTConfig(**TINY_AST_CONFIG))
    # transformers zero-initialises AST's position embeddings and CLS/distillation tokens (a pretrained
    # checkpoint overwrites them). Left at zero in a frozen stand-in, every patch token would be
    # position-blind; ViT-style random init (std 0.02) keeps where a patch sits in frequency and time.
    embeddings = model.audio_spectrogram_transformer.embeddings
    with torch.no_grad():
        for parameter in (embeddings.position_embeddings, embeddings.cls_token, embeddings.distillation_token):
            parameter.normal_(0.0, 0.02)
    model.save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=128, max_length=1024).save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_tiny_ast(args.path, args.seed))


if __name__ == "__main__":
    main()
