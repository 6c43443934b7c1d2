"""Gradient accumulation changes nothing: one optimizer step over 8 windows gives the same logged loss and the
same parameter update whether the Trainer sees one batch of 8 or four micro-batches of 2.

The Trainer hands `num_items_in_batch` (the labels of the whole accumulated step) to a model whose forward takes
`**kwargs`, and then no longer divides the loss by `gradient_accumulation_steps`: such a model must sum its
micro-batch loss and divide by `num_items_in_batch`. Checked through the real `Trainer` for the ViT-hybrid and for
AST-DoRA, through all layers and from the frozen-prefix cache (the pipeline's `apply_prefix_cache`).

Dropout, DropPath and SpecAugment are off, so both runs compute the same function of the same 8 windows; SGD, not
Adam, so that the update is proportional to the gradient (Adam's first step is ~lr * sign(gradient) and would hide
a gradient off by a constant factor). What differs is only the order of fp32 sums: RTOL.
"""

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import TrainingArguments, set_seed

from ast_dora.config import ModelArguments
from ast_dora.data import DataArguments
from ast_dora.data.build import GenreData
from ast_dora.models.ast_mlp.dora import build_ast_dora
from ast_dora.models.genre_vit_hybrid import GenreViTHybridConfig, GenreViTHybridForAudioClassification
from ast_dora.prefix_cache import apply_prefix_cache
from ast_dora.trainer import GenreTrainer

LABELS = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
WINDOWS = 8
MIN_LAYER = 2
RTOL = 1e-4
# (per_device_train_batch_size, gradient_accumulation_steps): the same 8 windows per optimizer step.
ONE_BATCH, ACCUMULATED = (WINDOWS, 1), (2, 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def windows(shape, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return Dataset.from_dict(
        {
            "input_values": torch.randn(WINDOWS, *shape, generator=generator).numpy(),
            "labels": torch.randint(0, len(LABELS), (WINDOWS,), generator=generator).tolist(),
            "track_id": [f"{LABELS[i]}.{i:05d}" for i in range(WINDOWS)],
        }
    ).with_format("torch", columns=["input_values", "labels"], output_all_columns=True)


def training_args(output_dir, batch_size, accumulation):
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=WINDOWS,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=0.0,  # no clipping
        seed=0,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
    )


def one_step(model, args, train_dataset, data_collator=None):
    """(train_loss, logged loss, {name: update}) of one optimizer step of `model` through the Trainer."""
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    trainer = GenreTrainer(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator)
    metrics = trainer.train().metrics
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 1 and len(logged) == 1
    updates = {name: p.detach() - before[name] for name, p in model.named_parameters() if p.requires_grad}
    return metrics["train_loss"], logged[0], updates


def assert_same_step(one_batch, accumulated):
    (loss_1, logged_1, updates_1), (loss_4, logged_4, updates_4) = one_batch, accumulated
    assert loss_4 == pytest.approx(loss_1, rel=RTOL), f"train_loss GA 1: {loss_1:.4f}, GA 4: {loss_4:.4f}"
    # The logged `loss` is rounded to 4 decimals by the Trainer.
    assert logged_4 == pytest.approx(logged_1, rel=RTOL, abs=1e-4)
    assert updates_1.keys() == updates_4.keys() and updates_1
    assert any(update.abs().max() > 0 for update in updates_1.values()), "the step must change something"
    for name, update in updates_1.items():
        # atol: the update is read back as (after - before) of fp32 parameters.
        scale = update.abs().max().item()
        torch.testing.assert_close(
            updates_4[name], update, rtol=RTOL, atol=RTOL * scale, msg=lambda m, name=name: f"{name}: {m}"
        )


# ----------------------------------------------------------------------------------------------------------
# ViT-hybrid
# ----------------------------------------------------------------------------------------------------------


def tiny_vit_hybrid(loss):
    config = GenreViTHybridConfig(
        image_size=(48, 32),
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(LABELS)),
        label2id={g: i for i, g in enumerate(LABELS)},
        loss=loss,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        apply_spec_augment=False,
    )
    set_seed(0)
    return GenreViTHybridForAudioClassification(config)


@pytest.mark.parametrize("loss", ["focal", "cross_entropy"])
def test_vit_hybrid_gradient_accumulation_gives_the_same_step(tmp_path, loss):
    dataset = windows((1, 48, 32))
    results = [
        one_step(tiny_vit_hybrid(loss), training_args(tmp_path / f"ga{ga}", batch, ga), dataset)
        for batch, ga in (ONE_BATCH, ACCUMULATED)
    ]
    assert_same_step(*results)


# ----------------------------------------------------------------------------------------------------------
# AST-DoRA, through all layers and from the frozen-prefix cache
# ----------------------------------------------------------------------------------------------------------


def ast_model_args(tiny_ast_dir, prefix_cache):
    return ModelArguments(
        model_type="ast_dora",
        model_name_or_path=str(tiny_ast_dir),
        min_layer=MIN_LAYER,
        classifier_hidden_size=16,
        dora_rank=4,
        dora_alpha=8.0,
        dora_dropout=0.0,
        classifier_dropout=0.0,
        prefix_cache=prefix_cache,
        config_overrides="hidden_dropout_prob=0.0,attention_probs_dropout_prob=0.0",
    )


def ast_step(tiny_ast_dir, output_dir, batch, ga, prefix_cache):
    model_args = ast_model_args(tiny_ast_dir, prefix_cache)
    set_seed(0)
    model = build_ast_dora(model_args, LABELS)
    args = training_args(output_dir, batch, ga)
    data = GenreData(
        datasets=DatasetDict({"train": windows((1024, 128))}),
        labels=LABELS,
        splits={},
        sampling_rate=16000,
        window_seconds=10.24,
        hop_seconds=10.24,
    )
    run = SimpleNamespace(
        model=model_args, data=DataArguments(synthetic=True, data_dir="unused", cache_features=False)
    )
    data, collator = apply_prefix_cache(run, data, model, None, args)
    assert (collator is not None) == prefix_cache
    if prefix_cache:
        assert "prefix_hidden_states" in data.datasets["train"].column_names
    return one_step(model, args, data.datasets["train"], collator)


@pytest.mark.parametrize("prefix_cache", [False, True], ids=["through_layers", "from_cache"])
def test_ast_dora_gradient_accumulation_gives_the_same_step(tiny_ast_dir, tmp_path, prefix_cache):
    results = [
        ast_step(tiny_ast_dir, tmp_path / f"ga{ga}", batch, ga, prefix_cache)
        for batch, ga in (ONE_BATCH, ACCUMULATED)
    ]
    assert_same_step(*results)
