"""The E-step of pseudo-labelling: turning predictions on unlabelled images into pseudo-labels with a threshold.

These are the deterministic pieces that the pseudo-label handlers share. A threshold may be a number, or a tensor
broadcastable to ``(B, 1, *spatial)`` (one per image or one per voxel).
"""

from __future__ import annotations

import torch

__all__ = ["probabilities", "class_distribution", "distribution_logits", "hard_pseudo_labels", "soft_pseudo_labels", "confident_pseudo_labels", "selection_scores"]


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sigmoid (one channel) or softmax over channels of ``logits / temperature``."""
    z = logits / temperature
    return torch.sigmoid(z) if logits.shape[1] == 1 else torch.softmax(z, dim=1)


def class_distribution(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, K, *spatial)``: the softmax, or ``[1 - p, p]`` for one sigmoid channel (K = 2)."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def distribution_logits(distribution: torch.Tensor, channels: int, eps: float = 1e-6) -> torch.Tensor:
    """The inverse of :func:`class_distribution`: logits of ``channels`` channels whose softmax (sigmoid for one
    channel) is ``distribution`` (probabilities clamped at ``eps``)."""
    log = distribution.clamp_min(eps).log()
    return log[:, 1:2] - log[:, 0:1] if channels == 1 else log


def hard_pseudo_labels(
    logits: torch.Tensor, threshold: float | torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cut predictions at ``threshold``.

    Binary (one channel): pseudo-label ``p > T`` as float, every voxel kept (mask None).
    Multi-class: pseudo-label ``argmax`` as ``(B, 1, *spatial)``, mask ``max_k p_k > T`` as float.

    Returns:
        ``(pseudo_label, mask)``, both detached.
    """
    with torch.no_grad():
        p = probabilities(logits.detach(), temperature)
        if p.shape[1] == 1:
            return (p > threshold).to(p.dtype), None
        conf, label = p.max(dim=1, keepdim=True)
        return label.to(p.dtype), (conf > threshold).to(p.dtype)


def soft_pseudo_labels(
    logits: torch.Tensor, threshold: torch.Tensor, tau: float, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A differentiable cut ``sigmoid((p - T) / tau)``: gradients reach ``threshold``, never the predictions.

    Binary: the soft cut is the (soft) pseudo-label itself, mask None. Multi-class: the pseudo-label is the argmax
    and the soft cut of the top probability is the voxel weight (mask). As ``tau -> 0`` this becomes
    :func:`hard_pseudo_labels`.
    """
    p = probabilities(logits.detach(), temperature)
    if p.shape[1] == 1:
        return torch.sigmoid((p - threshold) / tau), None
    conf, label = p.max(dim=1, keepdim=True)
    return label.to(p.dtype), torch.sigmoid((conf - threshold) / tau)


def confident_pseudo_labels(
    logits: torch.Tensor, threshold: float | torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weak-to-strong cut (FixMatch, UniMatch): the most likely class, kept where its probability exceeds
    ``threshold``.

    Multi-class: pseudo-label ``argmax`` as ``(B, 1, *spatial)``, mask ``max_k p_k > T``. Binary (one channel):
    pseudo-label ``p > 0.5``, mask ``max(p, 1 - p) > T`` (a confident background voxel is kept as background).

    Returns:
        ``(pseudo_label, mask)``, both detached floats.
    """
    with torch.no_grad():
        p = probabilities(logits.detach(), temperature)
        if p.shape[1] == 1:
            return (p > 0.5).to(p.dtype), (torch.maximum(p, 1.0 - p) > threshold).to(p.dtype)
        conf, label = p.max(dim=1, keepdim=True)
        return label.to(p.dtype), (conf > threshold).to(p.dtype)


def selection_scores(logits: torch.Tensor, label: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, ...]:
    """What a threshold selects, and whether the selection is right, on labelled images.

    Binary: the score is ``p`` and the target is the label (a cut ``p > T`` should reproduce the foreground).
    Multi-class: the score is the top probability and the target is whether the argmax equals the label (a cut
    ``max_k p_k > T`` should keep the correct voxels and drop the wrong ones).

    Returns:
        ``(score, target)``, both ``(B, 1, *spatial)`` detached floats.
    """
    with torch.no_grad():
        p = probabilities(logits.detach(), temperature)
        label = label.to(p.device)
        if p.shape[1] == 1:
            return p, (label > 0.5).to(p.dtype)
        conf, pred = p.max(dim=1, keepdim=True)
        index = label if label.shape[1] == 1 else label.argmax(dim=1, keepdim=True)
        return conf, (pred == index.long()).to(p.dtype)
