"""The one genre loss every model trains with (`ast_dora/models/genre_loss.py`): against a hand computation over
class weights x hard / soft targets x focal x label smoothing, -100 labels and `num_items_in_batch`; every model
folder's link to it; settings that cannot train together refused when the config is parsed; AST-DoRA training
with mixup and class weights together."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ast_dora.config import ConfigError, ModelArguments, parse_config
from ast_dora.models import get_model_spec, model_types
from ast_dora.models.genre_loss import genre_loss

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = [0.5, 2.0, 1.0, 3.0]


def by_hand(logits, targets, weights, gamma, smoothing, divisor):
    """Plain Python, float64: sum over samples of w_i * sum_c -q_c (1 - p_c)^gamma log p_c, / divisor."""
    total = 0.0
    for row, target in zip(logits.tolist(), targets, strict=True):
        if target is None:  # an ignored (-100) label
            continue
        peak = max(row)
        norm = math.log(sum(math.exp(v - peak) for v in row)) + peak
        log_p = [v - norm for v in row]
        k = len(row)
        q = [(1 - smoothing) * t + smoothing / k for t in target]
        term = sum(-qc * (1 - math.exp(lp)) ** gamma * lp for qc, lp in zip(q, log_p, strict=True))
        w = 1.0 if weights is None else sum(t * wc for t, wc in zip(target, weights, strict=True))
        total += w * term
    return total / divisor


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("gamma", [0.0, 2.0], ids=["ce", "focal"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1], ids=["sharp", "smoothed"])
def test_genre_loss_equals_the_hand_computation(weights, soft, gamma, smoothing):
    torch.manual_seed(0)
    logits = torch.randn(5, 4) * 2
    hard = torch.tensor([0, 3, 1, -100, 2])
    if soft:  # mixup's targets: each row a mix of two one-hots
        lam = torch.tensor([0.3, 0.9, 0.5, 1.0, 0.0]).unsqueeze(1)
        a, b = (
            F.one_hot(torch.tensor([0, 3, 1, 2, 2]), 4).float(),
            F.one_hot(torch.tensor([1, 0, 1, 3, 0]), 4).float(),
        )
        labels = lam * a + (1 - lam) * b
        targets, count = labels.tolist(), 5
    else:
        labels = hard
        targets = [None if y < 0 else F.one_hot(torch.tensor(y), 4).float().tolist() for y in hard.tolist()]
        count = 4
    kwargs = dict(class_weights=weights, label_smoothing=smoothing, focal_gamma=gamma)
    loss = genre_loss(logits, labels, **kwargs)
    # Tolerance: fp32 log-softmax against float64, values of order 1.
    assert loss.item() == pytest.approx(by_hand(logits, targets, weights, gamma, smoothing, count), rel=1e-5)
    accumulated = genre_loss(logits, labels, num_items_in_batch=12, **kwargs)
    assert accumulated.item() == pytest.approx(
        by_hand(logits, targets, weights, gamma, smoothing, 12), rel=1e-5
    )
    # Gradients flow to the logits (the Trainer's backward).
    logits.requires_grad_(True)
    genre_loss(logits, labels, **kwargs).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_one_hot_targets_are_the_hard_labels_and_weights_count_samples():
    torch.manual_seed(1)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 1])
    for gamma, smoothing in [(0.0, 0.0), (2.0, 0.2)]:
        kwargs = dict(class_weights=WEIGHTS, focal_gamma=gamma, label_smoothing=smoothing)
        torch.testing.assert_close(
            genre_loss(logits, F.one_hot(labels, 4).float(), **kwargs), genre_loss(logits, labels, **kwargs)
        )
    # A class weight of 2 counts a sample twice, as repeating it would; the divisor is the count of samples.
    doubled = genre_loss(logits, labels, class_weights=[2.0] * 4)
    torch.testing.assert_close(doubled, 2 * genre_loss(logits, labels))
    with pytest.raises(ValueError, match="target distributions"):
        genre_loss(logits, torch.rand(6, 3))


@pytest.mark.parametrize("model_type", model_types())
def test_every_model_folder_ships_the_one_loss(model_type):
    """Each model's modeling file imports `.genre_loss`, a link to the one file, so its remote code carries it."""
    spec = get_model_spec(model_type)
    folder = Path(spec.model_class.__module__.replace(".", "/") + ".py")
    modeling = REPO_ROOT / folder
    assert "from .genre_loss import genre_loss" in modeling.read_text()
    link = modeling.parent / "genre_loss.py"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "ast_dora/models/genre_loss.py").resolve()


@pytest.mark.parametrize("model_type", ["ast_dora", "musicnn"])
def test_mixup_with_the_prefix_cache_is_refused_at_parse_time(model_type, tmp_path):
    base = [
        "--model_type",
        model_type,
        "--synthetic",
        "true",
        "--output_dir",
        str(tmp_path),
        "--mixup_alpha",
        "0.2",
    ]
    if model_type == "musicnn":
        base += ["--model_name_or_path", str(tmp_path / "tiny_musicnn")]
    with pytest.raises(ConfigError, match="prefix_cache"):
        parse_config(base)
    assert parse_config([*base, "--prefix_cache", "false"]).training.mixup_alpha == 0.2


def test_ast_dora_trains_with_mixup_and_class_weights(tmp_path):
    """AST-DoRA's loss used to index weight[labels] with mixup's float targets and crash: a few Trainer steps now."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from ast_dora.trainer import GenreTrainer

    spec = get_model_spec("ast_dora")
    torch.manual_seed(0)
    model = spec.random_model(
        ModelArguments(model_type="ast_dora", prefix_cache=False), "tiny", ["a", "b", "c"]
    )
    model.get_base_model().config.class_weights = [0.5, 1.0, 2.0]
    frames, bins = model.get_base_model().config.max_length, model.get_base_model().config.num_mel_bins
    rng = np.random.default_rng(0)
    data = Dataset.from_dict(
        {
            "input_values": rng.standard_normal((8, frames, bins)).astype(np.float32).tolist(),
            "labels": [0, 1, 2, 0, 1, 2, 0, 1],
        }
    ).with_format("torch")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        save_strategy="no",
        logging_steps=1,
    )
    args.mixup_alpha = 0.4
    trainer = GenreTrainer(model=model, args=args, train_dataset=data)
    result = trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert result.global_step == 3 and len(losses) == 3 and all(math.isfinite(v) for v in losses)
