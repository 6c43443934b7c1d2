"""Small pieces every model's builders share: Hub arguments and label maps from the run's `ModelArguments`."""

from __future__ import annotations

from typing import Any


def hub_kwargs(model_args) -> dict[str, Any]:
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


__all__ = ["hub_kwargs", "label_kwargs"]
