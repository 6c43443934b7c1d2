"""Loading the model(s) of a tagging run and what identifies them in the results (`ModelInfo`): the weights'
hashes, the ensemble weights and the window settings make the `model_key` a rerun compares."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..backends import weights_fingerprint
from .engine import ModelInfo


def weights_hash(path_or_id: str, **hub_kwargs) -> str:
    """sha256 of a model's weights (all its safetensors files), the first 16 hex digits."""
    if os.path.isdir(path_or_id):
        fingerprint = weights_fingerprint(path_or_id)
    else:
        from ..models.factory import find_model_file

        local = find_model_file(path_or_id, "model.safetensors", **hub_kwargs)
        fingerprint = (
            weights_fingerprint(Path(local).parent) if local else {"hub": f"{path_or_id}@{hub_kwargs}"}
        )
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def model_info(specs: list[str], classifiers, weights, backend: str):
    """The `ModelInfo` of a run: the key is the weights' hashes, the ensemble weights and the window settings, so
    the same model under another path is the same, and any change of what is computed is not."""
    hashes = [weights_hash(spec) for spec in specs]
    settings = [
        {
            "weights": hash_,
            "window": c.window_seconds,
            "hop": c.hop_seconds,
            "max_windows": c.max_windows,
            "music": c.music_check and c.min_music_probability,
        }
        for hash_, c in zip(hashes, classifiers, strict=True)
    ]
    key = json.dumps({"models": settings, "ensemble_weights": weights}, sort_keys=True)
    ids = [str(Path(s).resolve()) if os.path.isdir(s) else s for s in specs]
    return ModelInfo(
        model_key=hashlib.sha256(key.encode()).hexdigest()[:16],
        model_id=" + ".join(ids),
        weights_hash="+".join(hashes),
        backend=backend,
    )


def load_models(args):
    """(classifiers, ensemble or None, ModelInfo) for the --model's."""
    from ..inference import GenreClassifier

    classifiers = []
    for spec in args.model:
        classifiers.append(
            GenreClassifier.from_pretrained(
                spec,
                backend=args.backend,
                threads=args.threads,
                batch_size=args.batch_size,
                bf16=False if args.no_bf16 else None,
                max_windows=args.max_windows,
                min_music_probability=args.min_music_probability,
            )
        )
    ensemble = (
        GenreClassifier.ensemble(classifiers, weights=args.weights, names=args.model)
        if args.ensemble
        else None
    )
    weights = None if ensemble is None else [float(w) for w in ensemble.weights]
    backend = " + ".join(c.runner.describe() for c in classifiers)
    return classifiers, ensemble, model_info(args.model, classifiers, weights, backend)


def default_chart(output: str) -> Path:
    path = Path(output)
    return path.with_name(f"{path.stem}_genres.png")


__all__ = ["default_chart", "load_models", "model_info", "weights_hash"]
