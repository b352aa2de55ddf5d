"""Optimisers by name, so that a bundle switches between the papers' SGD and AdamW with one override."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from medssl.checks import check_choice, check_positive

__all__ = ["OPTIMIZERS", "make_optimizer"]

OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(
    name: str, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``sgd``: SGD with ``momentum`` (the semi-supervised papers' recipe); ``adamw``: AdamW (``momentum`` unused).

    Raises:
        ValueError: an unknown name or a non-positive learning rate.

    >>> make_optimizer("adamw", [torch.nn.Parameter(torch.zeros(1))], lr=1e-3).__class__.__name__
    'AdamW'
    """
    name = check_choice("optimizer_name", str(name).lower(), OPTIMIZERS)
    check_positive("learning_rate", lr)
    check_positive("weight_decay", weight_decay, strict=False)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
