"""`class_weighting: balanced`: the weights (inverse class frequency of the training windows) and the losses that
use them. Contract (docs/architecture.md): every registered model's loss multiplies each sample's term by
`config.class_weights[label]` and divides by the same count as without weights. Compared with a weighted loss
computed by hand from the model's own logits, to 1e-6 (float32 rounding)."""

import numpy as np
import pytest
import torch

from ast_dora.config import ModelArguments
from ast_dora.data.build import balanced_class_weights
from ast_dora.data.features import probe_feature_type
from ast_dora.data.windows import seconds_to_samples
from ast_dora.models import get_model_spec, model_types
from ast_dora.models.genre_vit_hybrid import GenreViTHybridConfig, GenreViTHybridForAudioClassification
from ast_dora.models.registry import base_model_of

LABELS = ["ambient", "chiptune", "zydeco"]
WEIGHTS = [0.5, 2.0, 1.25]
BATCH_LABELS = torch.tensor([0, 1, 1, 2, 0, 2])


def hand_weighted(
    logits: torch.Tensor, labels: torch.Tensor, weights, gamma: float = 0.0, divisor=None
) -> float:
    """sum_i w[y_i] * (1 - p_i)^gamma * (-log p_i) / n, in float64 from the logits."""
    p = torch.softmax(logits.double(), dim=-1)[torch.arange(len(labels)), labels]
    terms = torch.tensor(weights, dtype=torch.float64)[labels] * (1 - p) ** gamma * -torch.log(p)
    return float(terms.sum() / (len(labels) if divisor is None else divisor))


def test_balanced_weights_are_inverse_frequency_with_mean_one():
    counts = {"ambient": 30, "chiptune": 10, "zydeco": 20}
    weights = balanced_class_weights(counts, LABELS)
    assert weights == pytest.approx([60 / (3 * 30), 60 / (3 * 10), 60 / (3 * 20)], abs=1e-12)
    assert sum(w * counts[name] for w, name in zip(weights, LABELS, strict=True)) == pytest.approx(60)
    # A class without training windows weighs nothing; the others are balanced among themselves.
    assert balanced_class_weights({"ambient": 30, "chiptune": 0, "zydeco": 10}, LABELS) == pytest.approx(
        [40 / 60, 0.0, 40 / 20]
    )


@pytest.mark.parametrize("loss,gamma", [("cross_entropy", 0.0), ("focal", 2.5), ("focal", 1.0)])
def test_vit_hybrid_loss_equals_a_hand_computed_weighted_loss(loss, gamma):
    torch.manual_seed(0)
    config = GenreViTHybridConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        loss=loss,
        focal_gamma=gamma,
        num_labels=3,
    )
    model = GenreViTHybridForAudioClassification(config).eval()
    inputs = torch.randn(len(BATCH_LABELS), config.num_channels, *config.image_size)
    unweighted = model(inputs, labels=BATCH_LABELS)
    assert float(unweighted.loss) == pytest.approx(
        hand_weighted(unweighted.logits, BATCH_LABELS, [1.0] * 3, gamma), abs=1e-6
    )
    model.config.class_weights = WEIGHTS
    weighted = model(inputs, labels=BATCH_LABELS)
    expected = hand_weighted(weighted.logits, BATCH_LABELS, WEIGHTS, gamma)
    assert float(weighted.loss) == pytest.approx(expected, abs=1e-6)
    assert abs(float(weighted.loss) - float(unweighted.loss)) > 1e-3  # the weights do change the loss
    # Under gradient accumulation (num_items_in_batch: the labels of the whole optimizer step) the divisor is it.
    accumulated = model(inputs, labels=BATCH_LABELS, num_items_in_batch=torch.tensor(10))
    assert float(accumulated.loss) == pytest.approx(
        hand_weighted(weighted.logits, BATCH_LABELS, WEIGHTS, gamma, 10), abs=1e-6
    )
    # Ignored labels (-100) add nothing and do not count.
    labels = BATCH_LABELS.clone()
    labels[1] = -100
    masked = model(inputs, labels=labels)
    keep = labels != -100
    assert float(masked.loss) == pytest.approx(
        hand_weighted(masked.logits[keep], labels[keep], WEIGHTS, gamma), abs=1e-6
    )


def test_ast_mlp_loss_equals_a_hand_computed_weighted_cross_entropy():
    spec = get_model_spec("ast_dora")
    torch.manual_seed(0)
    model = base_model_of(spec.random_model(ModelArguments(model_type="ast_dora"), "tiny", LABELS)).eval()
    model.config.class_weights = WEIGHTS
    shape = (len(BATCH_LABELS), model.config.max_length, model.config.num_mel_bins)
    with torch.no_grad():
        output = model(torch.randn(shape), labels=BATCH_LABELS)
    assert float(output.loss) == pytest.approx(hand_weighted(output.logits, BATCH_LABELS, WEIGHTS), abs=1e-6)


def window_shape(spec) -> tuple[int, ...]:
    extractor = spec.default_feature_extractor()
    rate = int(extractor.sampling_rate)
    return tuple(probe_feature_type(extractor, seconds_to_samples(spec.window_seconds, rate), rate)[1])


@pytest.mark.parametrize("model_type", model_types())
def test_every_registered_model_weights_its_loss_per_sample(model_type):
    """Model-agnostic: the weighted batch loss is the mean of w[y_i] times each sample's own unweighted loss, so a
    model added to the registry whose loss ignores `config.class_weights` fails here."""
    spec = get_model_spec(model_type)
    torch.manual_seed(0)
    model = spec.random_model(ModelArguments(model_type=model_type), "tiny", LABELS).eval()
    config = base_model_of(model).config
    inputs = torch.randn(len(BATCH_LABELS), *window_shape(spec)) * 3
    with torch.no_grad():
        config.class_weights = None
        per_sample = np.array(
            [
                float(model(input_values=inputs[i : i + 1], labels=BATCH_LABELS[i : i + 1]).loss)
                for i in range(len(BATCH_LABELS))
            ]
        )
        config.class_weights = WEIGHTS
        weighted = float(model(input_values=inputs, labels=BATCH_LABELS).loss)
    expected = float(np.mean(np.array(WEIGHTS)[BATCH_LABELS.numpy()] * per_sample))
    assert weighted == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert weighted != pytest.approx(float(per_sample.mean()), rel=1e-3)
