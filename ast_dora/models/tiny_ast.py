"""A tiny AST checkpoint written with `save_pretrained`: the offline stand-in for the AudioSet AST.

The Hub (and so the AudioSet AST) is out of reach offline; the smoke config trains on top of this stand-in
through exactly the `from_pretrained` path the real checkpoint takes. It is shaped like the real one
(128 mel bins, 1024 frames of 10 ms, a classification head that the genre head replaces) but tiny.

What DoRA adapts in the real method is a *pretrained* encoder: AudioSet's ontology holds all ten GTZAN genres,
so the frozen AST already separates them and the adapters and head only refine. A random frozen encoder has
nothing to refine (smoke accuracy stalled at 0.55-0.65 on one). So `make_tiny_ast(..., pretrain=True)` - what
`make_tiny_checkpoint: true` runs - first trains the whole tiny AST for a few epochs on synthetic tracks drawn
with another seed (`PRETRAIN_SEED`), i.e. other tracks than any smoke run trains or is evaluated on, once (docs/results.md, "Smoke
runs", says how long); then the checkpoint is reused.

Like the AudioSet AST, the pretrained stand-in's head is a multi-label classifier of sounds, with AudioSet's names
(`STAND_IN_AUDIOSET_LABELS`): "Music" plus the AudioSet class of each genre for the synthetic music, "Speech" for
generated speech-like voices and "Noise" for white, pink and brown noise (`ast_dora.data.sounds`), trained with a
per-class sigmoid (binary cross-entropy) as AudioSet's head is. The music check (`ast_dora.music_detection`)
finds "Music" in it by name, as it does in the real checkpoint's 527 classes. Smoke accuracy of AST-DoRA on it shows that the pipeline transfers
what a pretrained encoder knows; it says nothing about what the method reaches on GTZAN.

Tests that only need the shapes call `make_tiny_ast(path)`: random weights, written in a second.

    python -m ast_dora.models.tiny_ast data/tiny_ast [--pretrain]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, set_seed

logger = logging.getLogger(__name__)

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
# Pretraining of the stand-in. Seed 1000 keeps its tracks apart from the smoke data (`synthetic_seed` 0): track i
# of genre g is drawn from default_rng([seed, g, i]). initializer_range 0.1 instead of 0.02: at hidden size 64
# the default leaves position embeddings too faint next to the patch projections, and training crawls.
PRETRAIN_SEED = 1000
PRETRAIN = dict(
    tracks_per_genre=30,
    speech_tracks=60,
    noise_tracks=60,
    epochs=8,
    learning_rate=2e-3,
    batch_size=16,
    initializer_range=0.1,
)
# AudioSet's names for the genres (its ontology holds all ten) and for the sounds the stand-in also learns.
AUDIOSET_GENRE_NAMES = {
    "blues": "Blues",
    "classical": "Classical music",
    "country": "Country",
    "disco": "Disco",
    "hiphop": "Hip hop music",
    "jazz": "Jazz",
    "metal": "Heavy metal",
    "pop": "Pop music",
    "reggae": "Reggae",
    "rock": "Rock music",
}
STAND_IN_AUDIOSET_LABELS = ("Speech", "Music", "Noise", *AUDIOSET_GENRE_NAMES.values())
STAND_IN_FILE = "stand_in.json"  # how the checkpoint was made; a checkpoint made otherwise is rebuilt


def _stand_in_recipe(seed: int, pretrain: bool, settings: dict | None = None) -> dict:
    return {
        "version": 3,
        "seed": seed,
        "labels": list(STAND_IN_AUDIOSET_LABELS),
        "config": TINY_AST_CONFIG,
        "pretrain": {**PRETRAIN, **(settings or {}), "seed": PRETRAIN_SEED} if pretrain else None,
    }


def _is_first_version_stand_in(path: Path) -> bool:
    """This project's first stand-in (random weights, no `stand_in.json`): its exact config and files."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    shape = dict(TINY_AST_CONFIG)
    num_labels = shape.pop("num_labels")  # stored as id2label
    files = {p.name for p in path.iterdir()}
    return (
        {key: config.get(key) for key in shape} == shape
        and len(config.get("id2label", {})) == num_labels
        and files <= {"config.json", "model.safetensors", "preprocessor_config.json"}
    )


def make_tiny_ast(
    path: str | os.PathLike, seed: int = 0, pretrain: bool = False, pretrain_settings: dict | None = None
) -> Path:
    """Write the tiny AST (model + feature extractor) to `path` unless the same stand-in is already there.

    `pretrain=False`: random weights (for tests of shapes and plumbing). `pretrain=True`: trained on synthetic
    genres, speech-like voices and noise first (see the module docstring); its head then has the AudioSet-like
    classes `STAND_IN_AUDIOSET_LABELS` instead of 527 unnamed ones. `pretrain_settings` overrides entries of
    `PRETRAIN` (tests pretrain a smaller stand-in: fewer clips and epochs).
    A folder holding a checkpoint this function did not write (no `stand_in.json`) is left alone and used as is.
    """
    path = Path(path)
    recipe = _stand_in_recipe(seed, pretrain, pretrain_settings)
    marker = path / STAND_IN_FILE
    if (path / "config.json").is_file():
        if not marker.is_file() and not _is_first_version_stand_in(path):
            return path  # someone else's checkpoint: never overwrite it
        if marker.is_file() and json.loads(marker.read_text()) == recipe:
            return path
        logger.info("Rebuilding the tiny AST stand-in in %s: it was made with another recipe.", path)
    # The caller's random state is left as it was: a run that builds the stand-in first must initialise its
    # adapters and head exactly like the same run with the stand-in already on disk.
    with _isolated_random_state():
        _write_stand_in(path, seed, recipe["pretrain"])
    marker.write_text(json.dumps(recipe, indent=2) + "\n")
    return path


@contextlib.contextmanager
def _isolated_random_state():
    """Python's, numpy's and torch's (CPU and CUDA) global random state restored on exit, whatever ran inside."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _write_stand_in(path: Path, seed: int, pretrain: dict | None) -> None:
    set_seed(seed)
    config = dict(TINY_AST_CONFIG)
    feature_extractor = ASTFeatureExtractor(
        num_mel_bins=config["num_mel_bins"], max_length=config["max_length"]
    )
    if pretrain:
        labels = STAND_IN_AUDIOSET_LABELS
        config.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type="multi_label_classification",
            initializer_range=pretrain["initializer_range"],
        )
    model = ASTForAudioClassification(ASTConfig(**config))
    # transformers zero-initialises AST's position embeddings and CLS/distillation tokens (a pretrained
    # checkpoint overwrites them). Left at zero in a frozen stand-in, every patch token would be
    # position-blind; ViT-style random init keeps where a patch sits in frequency and time.
    embeddings = model.audio_spectrogram_transformer.embeddings
    with torch.no_grad():
        for parameter in (
            embeddings.position_embeddings,
            embeddings.cls_token,
            embeddings.distillation_token,
        ):
            parameter.normal_(0.0, model.config.initializer_range)
    if pretrain:
        pretrain_on_synthetic_sounds(model, feature_extractor, pretrain)
    model.save_pretrained(path)
    feature_extractor.save_pretrained(path)


def pretraining_sounds(
    sampling_rate: int, seconds: float, settings: dict = PRETRAIN
) -> tuple[list[np.ndarray], np.ndarray]:
    """The stand-in's pretraining clips and their multi-hot targets over `STAND_IN_AUDIOSET_LABELS`: one
    `seconds`-long clip of `PRETRAIN["tracks_per_genre"]` synthetic tracks per genre (Music + the genre),
    `speech_tracks` speech-like voices (Speech) and `noise_tracks` white / pink / brown noises (Noise)."""
    from ..data.gtzan import GTZAN_GENRES
    from ..data.sounds import NOISE_COLOURS, coloured_noise, speech_like
    from ..data.synthetic import synthesize_track

    index = {name: i for i, name in enumerate(STAND_IN_AUDIOSET_LABELS)}
    waveforms, targets = [], []

    def add(waveform, *names):
        waveforms.append(waveform)
        targets.append(np.isin(np.arange(len(index)), [index[name] for name in names]).astype(np.float32))

    for g, genre in enumerate(GTZAN_GENRES):
        for i in range(settings["tracks_per_genre"]):
            rng = np.random.default_rng([PRETRAIN_SEED, g, i])
            add(synthesize_track(genre, seconds, sampling_rate, rng), "Music", AUDIOSET_GENRE_NAMES[genre])
    for i in range(settings["speech_tracks"]):
        add(speech_like(seconds, sampling_rate, np.random.default_rng([PRETRAIN_SEED, 100, i])), "Speech")
    for i in range(settings["noise_tracks"]):
        colour = NOISE_COLOURS[i % len(NOISE_COLOURS)]
        add(
            coloured_noise(colour, seconds, sampling_rate, np.random.default_rng([PRETRAIN_SEED, 101, i])),
            "Noise",
        )
    return waveforms, np.stack(targets)


def pretrain_on_synthetic_sounds(
    model: ASTForAudioClassification, feature_extractor: ASTFeatureExtractor, settings: dict = PRETRAIN
) -> None:
    """Train every weight of `model` on `pretraining_sounds` (one 10.24-s window each, seed `PRETRAIN_SEED`) with
    binary cross-entropy per class (`problem_type="multi_label_classification"`), AdamW and a one-cycle schedule,
    in fp32 on the CPU."""
    start = time.perf_counter()
    sampling_rate = feature_extractor.sampling_rate
    seconds = feature_extractor.max_length / 100  # 10-ms frames
    waveforms, targets = pretraining_sounds(sampling_rate, seconds, settings)
    inputs = torch.from_numpy(
        np.asarray(
            feature_extractor(waveforms, sampling_rate=sampling_rate, return_tensors="np")["input_values"]
        )
    ).float()
    labels = torch.from_numpy(targets)

    batch_size, epochs = settings["batch_size"], settings["epochs"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings["learning_rate"],
        total_steps=epochs * math.ceil(len(labels) / batch_size),
        pct_start=0.1,
    )
    generator = torch.Generator().manual_seed(PRETRAIN_SEED)
    model.train()
    for epoch in range(epochs):
        losses = []
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            loss = model(input_values=inputs[batch], labels=labels[batch]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            losses.append(loss.detach())
        logger.info(
            "tiny AST stand-in, pretraining epoch %d/%d: loss %.3f",
            epoch + 1,
            epochs,
            torch.stack(losses).mean().item(),
        )
    model.eval()
    logger.info(
        "Pretrained the tiny AST stand-in on %d synthetic clips (seed %d) in %.0f s.",
        len(labels),
        PRETRAIN_SEED,
        time.perf_counter() - start,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ast_dora.models.tiny_ast",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="Pretrain on synthetic genres, speech and noise (as the smoke run does).",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(make_tiny_ast(args.path, args.seed, pretrain=args.pretrain))


if __name__ == "__main__":
    main()
