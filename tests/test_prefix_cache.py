"""Frozen-prefix cache for AST-DoRA: training from the cached hidden states gives the same losses as training
through the frozen layers; the cache is fingerprinted; saving and `input_values` inference are unchanged.

Tolerance: the only difference between the two paths is that the cache stores the hidden states entering
`min_layer` in bf16 (relative rounding <= 2^-9). Over 6 optimizer steps with a high learning rate, each
step's loss agrees within LOSS_RTOL (relative); with bf16 autocast, whose matmuls round at the same level
anyway, within LOSS_RTOL_BF16.
"""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import TrainingArguments, set_seed

from ast_dora.config import ModelArguments
from ast_dora.data import DataArguments
from ast_dora.models.ast_mlp.dora import build_ast_dora
from ast_dora.prefix_cache import (
    PREFIX_COLUMN,
    apply_prefix_cache,
    cache_prefix_hidden_states,
    collate_prefix_batch,
    frozen_prefix_modules,
    prefix_fingerprint,
    run_frozen_prefix,
)

LABELS = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
MIN_LAYER = 2
BATCH = 4
EPOCHS = 3  # over the same two batches, so the loss visibly falls
LOSS_RTOL = 2e-3
LOSS_RTOL_BF16 = 1e-2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(tiny_ast_dir, seed=0, **kwargs):
    # Dropout everywhere (frozen layers included), so that the eval-mode prefix and the order of random draws
    # in the trained layers matter: both paths must draw the same dropout masks in layers >= MIN_LAYER.
    defaults = dict(
        model_type="ast_dora",
        model_name_or_path=str(tiny_ast_dir),
        min_layer=MIN_LAYER,
        classifier_hidden_size=16,
        dora_rank=4,
        dora_alpha=8.0,
        config_overrides="hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1",
    )
    set_seed(seed)
    return build_ast_dora(ModelArguments(**{**defaults, **kwargs}), LABELS)


def windows_dataset(n=2 * BATCH, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return Dataset.from_dict(
        {
            "input_values": torch.randn(n, 1024, 128, generator=generator).numpy(),
            "labels": torch.randint(0, len(LABELS), (n,), generator=generator).tolist(),
            "track_id": [f"blues.{i:05d}" for i in range(n)],
        }
    ).with_format("torch", columns=["input_values", "labels"], output_all_columns=True)


def train_losses(model, batches, bf16=False):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    torch.manual_seed(123)  # the same dropout masks in both paths
    losses = []
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_training_from_cache_gives_the_same_losses(tiny_ast_dir, tmp_path, bf16):
    dataset = windows_dataset()
    through_layers = build(tiny_ast_dir)
    from_cache = build(tiny_ast_dir)
    assert from_cache.get_base_model().config.min_layer == MIN_LAYER  # where its prefix_hidden_states enter
    cached, hit = cache_prefix_hidden_states(
        from_cache, dataset, MIN_LAYER, bf16=bf16, cache_dir=str(tmp_path)
    )
    assert not hit
    assert cached.column_names == ["labels", "track_id", PREFIX_COLUMN]
    assert cached[0][PREFIX_COLUMN].shape == (514, 64)  # 512 patches + CLS + distillation token, hidden 64

    plain_batches = [dataset[i : i + BATCH] for i in range(0, len(dataset), BATCH)]
    plain_batches = [{"input_values": b["input_values"], "labels": b["labels"]} for b in plain_batches]
    cached_batches = [
        collate_prefix_batch([cached[j] for j in range(i, i + BATCH)]) for i in range(0, len(cached), BATCH)
    ]
    assert all(
        torch.equal(p["labels"], c["labels"]) for p, c in zip(plain_batches, cached_batches, strict=True)
    )

    expected = train_losses(through_layers, plain_batches * EPOCHS, bf16)
    got = train_losses(from_cache, cached_batches * EPOCHS, bf16)
    first_epoch, last_epoch = sum(expected[:2]) / 2, sum(expected[-2:]) / 2
    assert last_epoch < first_epoch - 0.03, f"the test must train something: {expected}"
    assert got == pytest.approx(expected, rel=LOSS_RTOL_BF16 if bf16 else LOSS_RTOL)


def test_frozen_prefix_stays_in_eval_mode_and_both_inputs_agree(tiny_ast_dir):
    model = build(tiny_ast_dir)
    model.train()
    prefix = frozen_prefix_modules(model, MIN_LAYER)
    assert not any(m.training for module in prefix for m in module.modules())
    top_layers = model.get_base_model().audio_spectrogram_transformer.layers[MIN_LAYER:]
    assert all(layer.training for layer in top_layers)
    # `input_values` runs the whole model; the (unrounded) hidden states entering MIN_LAYER run the same layers
    # from there, through the PeftModel's forward.
    model.eval()
    inputs = torch.randn(2, 1024, 128, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        full = model(input_values=inputs, labels=labels)
        from_prefix = model(prefix_hidden_states=run_frozen_prefix(model, inputs, MIN_LAYER), labels=labels)
    torch.testing.assert_close(from_prefix.logits, full.logits, rtol=0, atol=0)
    torch.testing.assert_close(from_prefix.loss, full.loss, rtol=0, atol=0)


def test_prefix_input_errors(tiny_ast_dir):
    model = build(tiny_ast_dir).eval()
    base = model.get_base_model()
    hidden = torch.zeros(1, 514, 64)
    with pytest.raises(TypeError, match="int16 bit pattern of bf16"):
        model(prefix_hidden_states=hidden.long())
    with pytest.raises(ValueError, match="either input_values or prefix_hidden_states"):
        model(input_values=torch.zeros(1, 1024, 128), prefix_hidden_states=hidden)
    del base.config.min_layer
    with pytest.raises(ValueError, match="config has no `min_layer`"):
        model(prefix_hidden_states=hidden)
    # The pipeline's hook sets it (and refuses a model built for another min_layer).
    data = SimpleNamespace(datasets=DatasetDict({"train": windows_dataset(n=2)}), cache_hits={})
    args = TrainingArguments(output_dir="unused", use_cpu=True, bf16=False, report_to="none")
    run = SimpleNamespace(
        model=ModelArguments(
            model_type="ast_dora", model_name_or_path=str(tiny_ast_dir), min_layer=MIN_LAYER
        ),
        data=DataArguments(synthetic=True, data_dir="unused", cache_features=False),
    )
    base.config.min_layer = MIN_LAYER + 1
    with pytest.raises(ValueError, match="built with min_layer=3 but the run asks for min_layer=2"):
        apply_prefix_cache(run, data, model, None, args)


def test_cache_is_reused_and_fingerprinted(tiny_ast_dir, tmp_path):
    dataset = windows_dataset(n=4)
    model = build(tiny_ast_dir)
    first, hit = cache_prefix_hidden_states(model, dataset, MIN_LAYER, cache_dir=str(tmp_path))
    assert not hit
    second, hit = cache_prefix_hidden_states(model, dataset, MIN_LAYER, cache_dir=str(tmp_path))
    assert hit
    assert np.array_equal(np.stack(first[PREFIX_COLUMN]), np.stack(second[PREFIX_COLUMN]))

    fingerprint = prefix_fingerprint(model, MIN_LAYER, dataset._fingerprint)
    assert prefix_fingerprint(build(tiny_ast_dir, seed=7), MIN_LAYER, dataset._fingerprint) == fingerprint, (
        "the head and adapters are not part of the prefix"
    )
    assert prefix_fingerprint(model, MIN_LAYER - 1, dataset._fingerprint) != fingerprint
    assert prefix_fingerprint(model, MIN_LAYER, windows_dataset(n=4, seed=2)._fingerprint) != fingerprint
    assert prefix_fingerprint(model, MIN_LAYER, dataset._fingerprint, compute_dtype="fp32") != fingerprint
    with torch.no_grad():
        model.get_base_model().audio_spectrogram_transformer.layers[0].mlp.fc1.weight.add_(1e-3)
    assert prefix_fingerprint(model, MIN_LAYER, dataset._fingerprint) != fingerprint


def test_cache_is_off_with_waveform_augmentation(tiny_ast_dir, caplog):
    model = build(tiny_ast_dir)
    data = SimpleNamespace(datasets=DatasetDict({"train": windows_dataset(n=2)}), cache_hits={})
    run = SimpleNamespace(
        model=ModelArguments(
            model_type="ast_dora", model_name_or_path=str(tiny_ast_dir), min_layer=MIN_LAYER
        ),
        data=DataArguments(synthetic=True, data_dir="unused", augment_gain_prob=0.5),
    )
    with caplog.at_level(logging.WARNING, logger="ast_dora"):
        same, collator = apply_prefix_cache(run, data, model, None, training_args=None)
    assert same is data and collator is None
    assert "Frozen-prefix cache off: waveform augmentation is on" in caplog.text
