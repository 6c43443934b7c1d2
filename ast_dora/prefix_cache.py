"""Frozen-prefix cache: run a model's frozen layers once per window instead of once per epoch.

Two kinds of model use it (specs with `prefix_cache`). A model with `frozen_features` (musicnn, whose whole
pretrained network is frozen and whose genre head reads its penultimate features) gets the content-addressed
cache of `cache_frozen_features`, below; AST-DoRA gets the hidden states entering its first adapted layer:

DoRA adapts only the FFN of encoder layers >= `min_layer`; the patch embedding and layers `< min_layer` are
frozen and (without waveform augmentation) see the same input every epoch, so their output - the hidden
states entering layer `min_layer` - cannot change. This module

- computes those hidden states once per window with a batched `Dataset.map` and stores them as a column
  `prefix_hidden_states` (bf16, kept as its int16 bit pattern since Arrow has no bfloat16), cached as an
  Arrow file named by a fingerprint of the window dataset (which already covers the audio, the windows and
  the feature extractor), the feature extractor config, the base checkpoint (name, revision, commit, encoder
  config and a hash of the prefix weights), `min_layer` and the compute dtype;
- feeds them to the model's own second input: `ASTWithMLPHeadForAudioClassification.forward(prefix_hidden_states=...)`
  runs only `layers[config.min_layer:]` + final layernorm + pooling + head, through the same code and modules as
  `input_values`, so saving, merging, exporting and `input_values` inference are unchanged, and the Trainer, DDP
  and checkpoints see the usual PeftModel.

Dropout: the frozen prefix runs in eval mode in both paths - through the cache (computed under
`inference_mode` in eval mode) and through the frozen layers (`keep_in_eval_mode`, applied by
`build_ast_dora`) - so both paths compute the same function; the adapted layers and the head keep their
train/eval switching.

Numerics: the cached path differs from running the frozen layers in the same step only by rounding the
cached hidden states to bf16 (relative error <= 2^-9 per element); `tests/test_prefix_cache.py` states the
resulting loss tolerance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import types
from pathlib import Path

import datasets
import numpy as np
import torch
import xxhash
from datasets import Dataset, DatasetDict
from datasets.fingerprint import Hasher
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

logger = logging.getLogger(__name__)

PREFIX_COLUMN = "prefix_hidden_states"
# Bump when what is stored for the same inputs changes: old cache files are then ignored.
CACHE_VERSION = 1
# Config fields that do not change what the frozen prefix computes (labels, the genre head), and `min_layer`,
# which the fingerprint hashes on its own.
_IRRELEVANT_CONFIG_FIELDS = {
    "id2label",
    "label2id",
    "num_labels",
    "classifier_hidden_size",
    "classifier_dropout",
    "architectures",
    "auto_map",
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "problem_type",
    "dtype",
    "torch_dtype",
    "min_layer",
}


# ----------------------------------------------------------------------------------------------------------
# The split of the model into a frozen prefix and the trained rest
# ----------------------------------------------------------------------------------------------------------


def base_ast_model(model: nn.Module) -> nn.Module:
    """The `ASTWithMLPHeadForAudioClassification` inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def frozen_prefix_modules(model: nn.Module, min_layer: int) -> list[nn.Module]:
    """The patch embedding and encoder layers `< min_layer`: what the cache replaces."""
    encoder = base_ast_model(model).audio_spectrogram_transformer
    return [encoder.embeddings, *encoder.layers[:min_layer]]


def _train_stays_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def keep_in_eval_mode(modules) -> None:
    """`module.train()` becomes a no-op for these modules (and their children): they stay in eval mode when the
    Trainer switches the model to training. Per instance, so nothing is saved differently."""
    for module in modules:
        module.train = types.MethodType(_train_stays_eval, module)
        module.eval()


@torch.no_grad()
def run_frozen_prefix(model: nn.Module, input_values: torch.Tensor, min_layer: int) -> torch.Tensor:
    """Hidden states entering layer `min_layer` (exactly what `ASTModel.forward` computes up to there)."""
    encoder = base_ast_model(model).audio_spectrogram_transformer
    hidden_states = encoder.embeddings(input_values)
    attention_mask = create_bidirectional_mask(
        config=encoder.config, inputs_embeds=hidden_states, attention_mask=None
    )
    for layer in encoder.layers[:min_layer]:
        hidden_states = layer(hidden_states, attention_mask)
    return hidden_states


# ----------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------


def prefix_weights_hash(model: nn.Module, min_layer: int) -> str:
    """xxh3 of the frozen prefix's parameters and buffers (names and bytes): the checkpoint's actual content."""
    digest = xxhash.xxh3_64()
    for module in frozen_prefix_modules(model, min_layer):
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def prefix_fingerprint(
    model: nn.Module,
    min_layer: int,
    dataset_fingerprint: str,
    feature_extractor=None,
    compute_dtype: str = "bf16",
) -> str:
    """Fingerprint of one split's cached hidden states: changes with anything that changes them."""
    from .data.features import feature_extractor_id

    base = base_ast_model(model)
    config = {k: v for k, v in base.config.to_dict().items() if k not in _IRRELEVANT_CONFIG_FIELDS}
    config["attn_implementation"] = base.config._attn_implementation
    checkpoint = {
        "name_or_path": getattr(base.config, "_name_or_path", None),
        "commit": getattr(base.config, "_commit_hash", None),
        "weights": prefix_weights_hash(model, min_layer),
    }
    extractor = feature_extractor_id(feature_extractor) if feature_extractor is not None else None
    return Hasher.hash(
        [
            "ast_dora.prefix",
            CACHE_VERSION,
            dataset_fingerprint,
            extractor,
            checkpoint,
            config,
            int(min_layer),
            compute_dtype,
        ]
    )


def _prefix_batch(batch, *, model, min_layer: int, device: torch.device, bf16: bool):
    input_values = torch.as_tensor(batch["input_values"]).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        hidden_states = run_frozen_prefix(model, input_values, min_layer)
    bits = hidden_states.to(torch.bfloat16).view(torch.int16).cpu().numpy()
    return {PREFIX_COLUMN: bits}


def cache_prefix_hidden_states(
    model: nn.Module,
    dataset: Dataset,
    min_layer: int,
    *,
    feature_extractor=None,
    bf16: bool = True,
    batch_size: int = 8,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> tuple[Dataset, bool]:
    """`dataset` (windows with `input_values`) -> the same rows with `prefix_hidden_states` instead of
    `input_values`, formatted for the Trainer. Returns (dataset, cache_hit).

    Runs on the model's device. `bf16` computes the prefix under bf16 autocast (what training with `bf16: true`
    would compute through the frozen layers); the stored states are bf16 either way. The model is put in eval
    mode for the map and given back in the mode it had.
    """
    from .data.features import default_cache_dir

    device = next(model.parameters()).device
    fingerprint = prefix_fingerprint(
        model, min_layer, dataset._fingerprint, feature_extractor, "bf16" if bf16 else "fp32"
    )
    encoder = base_ast_model(model).audio_spectrogram_transformer
    shape = (encoder.embeddings.position_embeddings.shape[1], encoder.config.hidden_size)
    features = dataset.features.copy()
    del features["input_values"]
    features[PREFIX_COLUMN] = datasets.Array2D(shape=shape, dtype="int16")
    cache_file, hit = None, False
    if use_cache:
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        cache_file = str(folder / f"prefix-{fingerprint}.arrow")
        hit = Path(cache_file).exists()
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        cached = dataset.map(
            _prefix_batch,
            batched=True,
            batch_size=batch_size,
            writer_batch_size=batch_size,
            remove_columns=["input_values"],
            features=features,
            fn_kwargs={"model": model, "min_layer": min_layer, "device": device, "bf16": bf16},
            load_from_cache_file=use_cache,
            cache_file_name=cache_file,
            keep_in_memory=not use_cache,
            new_fingerprint=fingerprint,
            desc=f"Frozen-prefix cache (layers < {min_layer})",
        )
    finally:
        model.train(was_training)
    logger.info(
        "Frozen-prefix cache: %d windows, hidden states entering layer %d (%s x %s bf16, %.0f MB) - %s in %.1f s",
        len(cached),
        min_layer,
        *shape,
        len(cached) * shape[0] * shape[1] * 2 / 2**20,
        "cache hit"
        if hit
        else ("computed, cached at " + cache_file if cache_file else "computed, not cached"),
        time.perf_counter() - start,
    )
    # numpy, not torch: datasets' formatters widen integer arrays to int64 unless told the dtype (labels too,
    # which the collator widens back); int16 reads the stored bits without a copy.
    formatted = cached.with_format(
        "numpy", columns=[PREFIX_COLUMN, "labels"], output_all_columns=True, dtype=np.int16
    )
    return formatted, hit


# ----------------------------------------------------------------------------------------------------------
# Content-addressed cache of a frozen network's output (models with `frozen_features`, e.g. musicnn)
# ----------------------------------------------------------------------------------------------------------


def frozen_fingerprint(model: nn.Module) -> str:
    """Fingerprint of what `frozen_features` computes: the model class and its frozen modules' weights."""
    base = base_ast_model(model)
    digest = xxhash.xxh3_64()
    for module in base.frozen_modules():
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return Hasher.hash(["ast_dora.frozen", CACHE_VERSION, type(base).__name__, digest.hexdigest()])


def _row_key(values: np.ndarray) -> bytes:
    return xxhash.xxh3_128(np.ascontiguousarray(values, dtype=np.float32).data).digest()


def cache_frozen_features(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> tuple[Dataset, bool]:
    """`dataset` (windows with `input_values`) -> the same rows with `prefix_hidden_states` (the model's
    `frozen_features`, float32) instead of `input_values`. Returns (dataset, cache_hit).

    The store is keyed by a hash of each window's `input_values` (and the frozen weights, in the file name), not
    by the split: the folds and split seeds of a cross-validation cut the same windows into other splits, and each
    window's features are computed once for all of them.
    """
    from .data.features import default_cache_dir

    base = base_ast_model(model)
    store_file = None
    keys: list[bytes] = []
    rows: list[np.ndarray] = []
    if use_cache:
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        store_file = folder / f"frozen-{frozen_fingerprint(model)}.npz"
        if store_file.exists():
            with np.load(store_file) as stored:
                keys, rows = [k.tobytes() for k in stored["keys"]], list(stored["values"])
            if len(keys) and any(len(k) != 16 for k in keys):  # a store of fixed-width bytes: unreadable keys
                keys, rows = [], []
    index = {key: i for i, key in enumerate(keys)}
    values = dataset.with_format("numpy", columns=["input_values"])
    wanted = [_row_key(values[i]["input_values"]) for i in range(len(dataset))]
    missing = [i for i, key in enumerate(wanted) if key not in index]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        for first in range(0, len(missing), batch_size):
            chunk = missing[first : first + batch_size]
            batch = torch.as_tensor(np.stack([values[i]["input_values"] for i in chunk])).to(device)
            features = base.frozen_features(batch).float().cpu().numpy()
            for i, row in zip(chunk, features, strict=True):
                if wanted[i] not in index:
                    index[wanted[i]] = len(rows)
                    keys.append(wanted[i])
                    rows.append(row)
    finally:
        model.train(was_training)
    if store_file is not None and missing:
        # (N, 16) uint8, not numpy's fixed-width bytes, which drop a key's trailing zero bytes.
        np.savez(
            store_file,
            keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 16),
            values=np.stack(rows),
        )
    logger.info(
        "Frozen-feature cache: %d windows, %d computed in %.1f s%s",
        len(dataset),
        len(missing),
        time.perf_counter() - start,
        f", stored in {store_file}" if store_file else "",
    )
    column = np.stack([rows[index[key]] for key in wanted]) if wanted else np.zeros((0, 1), np.float32)
    cached = dataset.remove_columns(["input_values"])
    cached = cached.add_column(PREFIX_COLUMN, list(column)) if len(cached) else cached
    formatted = cached.with_format("numpy", columns=[PREFIX_COLUMN, "labels"], output_all_columns=True)
    return formatted, not missing


def collate_prefix_batch(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Data collator for cached splits: `prefix_hidden_states` (int16 bits of bf16) and `labels`."""
    return {
        PREFIX_COLUMN: torch.from_numpy(np.stack([row[PREFIX_COLUMN] for row in rows])),
        "labels": torch.as_tensor(np.array([row["labels"] for row in rows], dtype=np.int64)),
    }


def set_prefix_layer(model: nn.Module, min_layer: int) -> None:
    """Record on the model's config where its forward takes `prefix_hidden_states` in; refuse a model whose adapters
    were built for another `min_layer`."""
    config = base_ast_model(model).config
    if getattr(config, "min_layer", min_layer) != min_layer:
        raise ValueError(
            f"The model was built with min_layer={config.min_layer} but the run asks for min_layer={min_layer}: "
            "build it from the same ModelArguments."
        )
    config.min_layer = min_layer


def apply_prefix_cache(run, data, model, feature_extractor, training_args):
    """Training pipeline hook (for models whose spec has `prefix_cache`): with the `prefix_cache` field on and no
    waveform augmentation, replace every split of `data` by its cached hidden states (the model's
    `prefix_hidden_states` input, entering layer `config.min_layer`).

    Returns `(data, data_collator)`: the (new) `GenreData`, and the collator the Trainer needs for it (None when
    the cache is not used). Rank 0 (per node) computes the cache first; the other processes then load it.
    """
    if not run.model.prefix_cache:
        return data, None
    if run.data.augmentation_enabled:
        logger.warning(
            "Frozen-prefix cache off: waveform augmentation is on, so the frozen layers see new inputs every "
            "epoch; training runs through all layers (set the augment_*_prob fields to 0 to use the cache)."
        )
        return data, None
    if hasattr(base_ast_model(model), "frozen_features"):
        return _apply_frozen_feature_cache(run, data, model, training_args)
    min_layer = run.model.min_layer
    set_prefix_layer(model, min_layer)
    model.to(training_args.device)  # where the Trainer would put it: the prefix runs there
    cached, hits = {}, {}
    with training_args.main_process_first(desc="frozen-prefix cache"):
        for split, dataset in data.datasets.items():
            cached[split], hits[split] = cache_prefix_hidden_states(
                model,
                dataset,
                min_layer,
                feature_extractor=feature_extractor,
                bf16=training_args.bf16,
                batch_size=training_args.per_device_eval_batch_size,
                cache_dir=run.data.features_cache_dir,
                use_cache=run.data.cache_features,
            )
    logger.info(
        "Training AST-DoRA from the frozen-prefix cache: layers >= %d and the head run each step.", min_layer
    )
    data = dataclasses.replace(
        data, datasets=DatasetDict(cached), cache_hits={**data.cache_hits, "prefix": all(hits.values())}
    )
    return data, collate_prefix_batch


def _apply_frozen_feature_cache(run, data, model, training_args):
    """`apply_prefix_cache` for a model with `frozen_features`: only while its config keeps it frozen."""
    if not getattr(base_ast_model(model).config, "freeze_backbone", True):
        return data, None
    model.to(training_args.device)
    cached, hits = {}, {}
    with training_args.main_process_first(desc="frozen-feature cache"):
        for split, dataset in data.datasets.items():
            cached[split], hits[split] = cache_frozen_features(
                model,
                dataset,
                batch_size=training_args.per_device_eval_batch_size,
                cache_dir=run.data.features_cache_dir,
                use_cache=run.data.cache_features,
            )
    logger.info("Training the genre head from the frozen-feature cache: only the head runs each step.")
    data = dataclasses.replace(
        data, datasets=DatasetDict(cached), cache_hits={**data.cache_hits, "prefix": all(hits.values())}
    )
    return data, collate_prefix_batch


__all__ = [
    "PREFIX_COLUMN",
    "cache_frozen_features",
    "apply_prefix_cache",
    "cache_prefix_hidden_states",
    "collate_prefix_batch",
    "frozen_prefix_modules",
    "keep_in_eval_mode",
    "prefix_fingerprint",
    "run_frozen_prefix",
    "set_prefix_layer",
]
