"""The one genre loss of every model: class-weighted, label-smoothed, focal-capable cross-entropy on hard labels or
target distributions (mixup).

Remote code: each model folder holds this file as a symbolic link (`<folder>/genre_loss.py -> ../genre_loss.py`)
and its modeling file imports it relatively (`from .genre_loss import genre_loss`), so transformers'
`custom_object_save` copies it (the link's content) next to the saved weights with the modeling file. It may import
only torch.
"""

import torch
import torch.nn.functional as F


def genre_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    class_weights: torch.Tensor | list[float] | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
    ignore_index: int = -100,
) -> torch.Tensor:
    r"""Loss of a batch of genre logits `(batch, classes)`.

    Targets: int64 class ids (`ignore_index` skipped) or float `(batch, classes)` target distributions (mixup's
    mixed one-hots; every row counts). For each counted sample with target distribution `t` (one-hot for a class
    id), smoothed `q = (1 - label_smoothing) t + label_smoothing / classes`, and `p = softmax(logits)` (fp32):

        loss_i = w_i * sum_c -q_c (1 - p_c)^focal_gamma log p_c,    w_i = sum_c t_c class_weights[c]

    (`focal_gamma` 0 is cross-entropy; a class id's weight is `class_weights[label]`, a mixed target's the mix
    of its classes' weights; smoothing does not move the weight). The batch loss is the sum of `loss_i` divided
    by the number of counted samples, or by `num_items_in_batch` when given (the Trainer passes it under
    gradient accumulation, so accumulated micro-batches give the loss of one large batch). Weights never change
    the divisor: a class weight of 2 counts a sample twice, as repeating it would.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    classes = log_probs.shape[-1]
    if labels.is_floating_point():
        if labels.shape != log_probs.shape:
            raise ValueError(
                f"Float labels are target distributions of shape {tuple(log_probs.shape)}, got {tuple(labels.shape)}."
            )
        targets = labels.float().to(log_probs.device)
        valid = torch.ones(labels.shape[0], dtype=torch.bool, device=log_probs.device)
    else:
        labels = labels.to(log_probs.device)
        valid = labels != ignore_index
        targets = F.one_hot(labels.clamp_min(0), classes).float()
    smoothed = targets * (1.0 - label_smoothing) + label_smoothing / classes
    terms = -smoothed * log_probs
    if focal_gamma:
        # 1 - p as -expm1(log p): confident classes keep their precision.
        terms = terms * (-torch.expm1(log_probs)).pow(focal_gamma)
    losses = terms.sum(dim=-1)
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32, device=log_probs.device)
        losses = losses * (targets * weight).sum(dim=-1)
    total = torch.where(valid, losses, torch.zeros_like(losses)).sum()
    if num_items_in_batch is None:
        return total / valid.sum().clamp_min(1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


__all__ = ["genre_loss"]
