"""The options of the small-data recipe (configs/small_data_vit_hybrid.yaml): the ViT-hybrid's `time_mean_std`
pooling, `classifier_dropout_prob` and `label_smoothing`, and mixup in the Trainer (`mixup_alpha`) with the soft
targets every registered model's loss takes. All default off: the published configs are unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from ast_dora.config import ConfigError, parse_config
from ast_dora.models.ast_mlp.modeling_ast_mlp import genre_cross_entropy
from ast_dora.models.genre_vit_hybrid import GenreViTHybridConfig, GenreViTHybridForAudioClassification
from ast_dora.models.genre_vit_hybrid.modeling_genre_vit_hybrid import cross_entropy_loss, focal_loss
from ast_dora.models.mfcc_baseline import weighted_cross_entropy
from ast_dora.trainer import GenreTrainer, mixup_batch

TINY = dict(
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=(64, 48)
)


def test_defaults_keep_the_published_model():
    config = GenreViTHybridConfig()
    assert (config.pooling, config.classifier_dropout_prob, config.label_smoothing) == ("cls", 0.0, 0.0)
    assert config.pooled_size == config.hidden_size
    model = GenreViTHybridForAudioClassification(GenreViTHybridConfig(**TINY))
    assert model.classifier.dense.in_features == 16


def test_time_mean_std_pooling_by_hand():
    torch.manual_seed(0)
    config = GenreViTHybridConfig(**TINY, pooling="time_mean_std")
    model = GenreViTHybridForAudioClassification(config).eval()
    rows, columns = config.grid_size
    assert (rows, columns) == (4, 3) and config.pooled_size == 2 * 4 * 16
    out = model.genre_vit_hybrid(torch.rand(2, 1, 64, 48))
    tokens = out.last_hidden_state[
        :, 1:
    ]  # (2, rows * columns, 16), row-major: frequency row, then time column
    expected = []
    for r in range(rows):
        row = tokens[:, r * columns : (r + 1) * columns]
        expected.append(torch.cat([row.mean(dim=1), row.std(dim=1, unbiased=False)], dim=-1))
    torch.testing.assert_close(out.pooler_output, torch.cat(expected, dim=-1))
    assert model.classifier.dense.in_features == 128


def test_label_smoothing_and_classifier_dropout():
    torch.manual_seed(0)
    config = GenreViTHybridConfig(
        **TINY, loss="cross_entropy", label_smoothing=0.2, classifier_dropout_prob=0.5
    )
    model = GenreViTHybridForAudioClassification(config).eval()
    x, labels = torch.rand(3, 1, 64, 48), torch.tensor([0, 4, 9])
    out = model(input_values=x, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels, label_smoothing=0.2))
    torch.testing.assert_close(model(input_values=x).logits, out.logits)  # eval: no dropout
    model.train()
    assert not torch.allclose(model.classifier(torch.ones(1, 16)), model.classifier(torch.ones(1, 16)))
    with pytest.raises(ValueError, match="label_smoothing"):
        GenreViTHybridConfig(**TINY, loss="focal", label_smoothing=0.1)


@pytest.mark.parametrize("loss", ["focal_vit", "ce_vit", "ast", "mfcc"])
def test_every_loss_takes_soft_targets(loss):
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    one_hot = F.one_hot(labels, 4).float()
    fn = {
        "focal_vit": lambda y, **k: focal_loss(logits, y, 2.0, **k),
        "ce_vit": lambda y, **k: cross_entropy_loss(logits, y, **k),
        "ast": lambda y, **k: genre_cross_entropy(logits, y, **k),
        "mfcc": lambda y, **k: weighted_cross_entropy(logits, y, **k),
    }[loss]
    # One-hot targets are the hard labels; a mixed target is the same mix of the two losses (linear in the target).
    torch.testing.assert_close(fn(one_hot), fn(labels))
    torch.testing.assert_close(fn(one_hot, num_items_in_batch=10), fn(labels, num_items_in_batch=10))
    other = F.one_hot(labels.roll(1), 4).float()
    torch.testing.assert_close(fn(0.3 * one_hot + 0.7 * other), 0.3 * fn(labels) + 0.7 * fn(labels.roll(1)))


def test_mixup_batch_mixes_inputs_and_labels_alike():
    inputs = {
        "input_values": torch.randn(6, 2, 3),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "track_id": "kept",
    }
    torch.manual_seed(3)
    mixed = mixup_batch(inputs, alpha=0.4, num_labels=3)
    torch.manual_seed(3)  # the same draws: one weight for the batch, then the partner of each row
    lam = torch.distributions.Beta(torch.tensor(0.4), torch.tensor(0.4)).sample().item()
    perm = torch.randperm(6)
    assert 0.0 < lam < 1.0 and mixed["track_id"] == "kept"
    x, y = inputs["input_values"], F.one_hot(inputs["labels"], 3).float()
    torch.testing.assert_close(mixed["input_values"], lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(mixed["labels"], lam * y + (1 - lam) * y[perm])
    torch.testing.assert_close(mixed["labels"].sum(dim=1), torch.ones(6))


def test_trainer_mixes_training_batches_only(tmp_path):
    torch.manual_seed(0)
    config = GenreViTHybridConfig(
        **TINY,
        num_labels=3,
        loss="cross_entropy",
        hidden_dropout_prob=0.0,
        drop_path_rate=0.0,
        apply_spec_augment=False,
    )
    model = GenreViTHybridForAudioClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    args.mixup_alpha = 1.0
    trainer = GenreTrainer(model=model, args=args)
    inputs = {"input_values": torch.rand(4, 1, 64, 48), "labels": torch.tensor([0, 1, 2, 0])}
    model.eval()
    plain = model(**inputs).loss
    torch.testing.assert_close(trainer.compute_loss(model, inputs), plain)  # eval: not mixed
    model.train()
    torch.manual_seed(7)
    mixed_loss = trainer.compute_loss(model, inputs)
    torch.manual_seed(7)
    expected = model(**mixup_batch(inputs, 1.0, 3)).loss
    torch.testing.assert_close(mixed_loss, expected)
    assert not torch.allclose(mixed_loss, plain)


def test_mixup_alpha_is_validated():
    with pytest.raises(ConfigError, match="mixup_alpha"):
        parse_config(["--synthetic", "true", "--output_dir", "/tmp/x", "--mixup_alpha", "-1"])
    assert parse_config(["--synthetic", "true", "--output_dir", "/tmp/x"]).training.mixup_alpha == 0.0


def test_conv_stem_keeps_the_token_grid_and_trains_its_batchnorm():
    torch.manual_seed(0)
    assert GenreViTHybridConfig().conv_stem_channels is None
    plain = GenreViTHybridConfig(**TINY)
    config = GenreViTHybridConfig(**TINY, conv_stem_channels=[4, 8])
    # Two stride-2 convolutions, then a 4 x 4 patch projection: 16 x 16 input cells per token, as without the stem.
    assert config.grid_size == plain.grid_size == (4, 3)
    model = GenreViTHybridForAudioClassification(config)
    embeddings = model.genre_vit_hybrid.embeddings.patch_embeddings
    assert embeddings.projection.kernel_size == (4, 4) and embeddings.projection.in_channels == 8
    x = torch.rand(3, 1, 64, 48)
    assert embeddings(x).shape == (3, 12, 16)
    # An image size the stem does not divide evenly: convolutions round up (ceil(n / 2)), the projection down.
    odd = GenreViTHybridConfig(**{**TINY, "image_size": (216, 144)}, conv_stem_channels=[4, 8, 8])
    assert odd.grid_size == (27 // 2, 18 // 2)
    assert GenreViTHybridForAudioClassification(odd).genre_vit_hybrid.embeddings.patch_embeddings(
        torch.rand(1, 1, 216, 144)
    ).shape == (1, 13 * 9, 16)
    batchnorm = embeddings.stem[1]
    before = batchnorm.num_batches_tracked.item()
    model.train()(input_values=x, labels=torch.tensor([0, 1, 2])).loss.backward()
    assert batchnorm.num_batches_tracked.item() == before + 1 and batchnorm.weight.grad is not None
    with pytest.raises(ValueError, match="conv_stem_channels"):
        GenreViTHybridConfig(
            **TINY, conv_stem_channels=[4, 4, 4, 4, 4]
        )  # 2 ** 5 does not divide patch_size 16


def test_config_overrides_take_lists():
    from ast_dora.config import ModelArguments

    args = ModelArguments(config_overrides="hidden_size=64,conv_stem_channels=[16, 32],pooling=time_mean_std")
    assert args.parsed_config_overrides() == {
        "hidden_size": 64,
        "conv_stem_channels": [16, 32],
        "pooling": "time_mean_std",
    }
