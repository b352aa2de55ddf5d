"""SegPL: EM pseudo-labels with a fixed threshold (Xu et al., arXiv 2305.01747)."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_in_range, check_positive
from medssl.engines.keys import SSLKeys
from medssl.transforms.thresholding import hard_pseudo_labels

__all__ = ["SegPLHandler"]


class SegPLHandler:
    """The E-step of SegPL: after the forward pass, cut the detached unlabelled predictions at a fixed threshold.

    Binary networks (one output channel): pseudo-label = ``sigmoid(z / temperature) > threshold``. Multi-class: the
    argmax, where the top softmax probability exceeds ``threshold`` (other voxels are masked out of the loss). The
    M-step is the trainer's unsupervised loss on these pseudo-labels, weighted by the schedule handler.

    Args:
        threshold: the cut, in (0, 1).
        temperature: logits are divided by it before the sigmoid/softmax (1: plain probabilities).

    Raises:
        ValueError: ``threshold`` outside (0, 1) or ``temperature`` not positive.
    """

    def __init__(self, threshold: float = 0.5, temperature: float = 1.0) -> None:
        self.threshold = check_in_range("threshold", threshold, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.temperature = check_positive("temperature", temperature)

    def attach(self, engine: Engine) -> None:
        """Run the E-step on ``engine`` after every forward pass."""
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        logits = out.get(SSLKeys.UNLABELED_PRED)
        if logits is None:
            return
        pseudo, mask = hard_pseudo_labels(logits, self.threshold, self.temperature)
        out[SSLKeys.PSEUDO_LABEL] = pseudo
        if mask is not None:
            out[SSLKeys.PSEUDO_MASK] = mask
        out[SSLKeys.THRESHOLD] = torch.full((logits.shape[0],), self.threshold, device=logits.device)
