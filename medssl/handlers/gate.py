"""Gates: no loss from pseudo-labels (or labelled crops) that hold almost nothing to learn from.

A model that still predicts nothing teaches itself to predict nothing: pseudo-labels with (almost) no foreground are
a vote for the empty segmentation. The authors of paper 000 switch the pseudo-label loss and the threshold's KL off
when the pseudo-labels hold under 0.5% foreground or the threshold leaves its range, and in 3D crops they skip the
supervised loss of a labelled batch under 0.5% foreground. Slices are different: a tumour-free 2D slice teaches the
model where not to segment, so the labelled gate is for 3D crops only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_in_range
from medssl.engines.keys import SSLKeys

__all__ = ["PseudoLabelGate", "LabelledForegroundGate", "foreground_fraction"]


def foreground_fraction(label: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Share of voxels labelled foreground (binary ``> 0.5``; class indices ``> 0``), among the kept ones of
    ``mask`` counted over all voxels (a cut that keeps nothing has no foreground)."""
    fg = (label.detach() > 0.5).float() if label.shape[1] == 1 else 1.0 - label.detach()[:, :1].float()
    if mask is not None:
        fg = fg * mask.detach().float()
    return float(fg.mean())


class PseudoLabelGate:
    """Whether this iteration's pseudo-labels may train: foreground at least ``min_foreground`` and the mean threshold
    inside ``threshold_range``.

    Args:
        min_foreground: smallest foreground share of the pseudo-labels (0 disables).
        threshold_range: ``(low, high)`` allowed for the mean threshold.
    """

    def __init__(self, min_foreground: float = 0.005, threshold_range: Sequence[float] = (0.0, 1.0)) -> None:
        self.min_foreground = check_in_range("min_foreground", min_foreground, 0.0, 1.0)
        low, high = (float(v) for v in threshold_range)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"threshold_range must be (low, high) with 0 <= low < high <= 1, got {tuple(threshold_range)}.")
        self.threshold_range = (low, high)

    def __call__(self, pseudo: torch.Tensor, mask: torch.Tensor | None = None, threshold: torch.Tensor | None = None) -> bool:
        """True when the pseudo-labels pass."""
        if self.min_foreground > 0 and foreground_fraction(pseudo, mask) < self.min_foreground:
            return False
        if threshold is not None:
            t = float(threshold.detach().float().mean())
            if not self.threshold_range[0] <= t <= self.threshold_range[1]:
                return False
        return True


class LabelledForegroundGate:
    """Skip the supervised loss of a labelled batch (3D crops) whose labels hold under ``min_foreground``."""

    def __init__(self, min_foreground: float = 0.005) -> None:
        self.min_foreground = check_in_range("min_foreground", min_foreground, 0.0, 1.0)

    def attach(self, engine: Engine) -> None:
        """Check each labelled batch after the forward pass."""
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        if foreground_fraction(out[SSLKeys.LABEL]) < self.min_foreground:
            out[SSLKeys.SUPERVISED_WEIGHT] = 0.0
