"""Per-iteration statistics of pseudo-labels, and a warning when they collapse."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_in_range, check_positive
from medssl.engines.keys import SSLKeys

__all__ = ["PseudoLabelStatsHandler", "ssl_scalars"]


def ssl_scalars(output: Any) -> dict[str, float]:
    """Flatten a semi-supervised trainer's output into named floats for logging handlers.

    Use it as ``output_transform`` of MONAI's ``StatsHandler``, ``TensorBoardStatsHandler`` or ``MLFlowHandler``:
    the total loss, each loss term and each pseudo-label statistic become one scalar each.
    """
    if isinstance(output, list):  # a decollated output: every item carries the same scalars
        output = output[0] if output else {}
    scalars: dict[str, float] = {}
    if output.get(SSLKeys.LOSS) is not None:
        scalars["loss"] = float(output[SSLKeys.LOSS])
    for key in (SSLKeys.LOSS_TERMS, SSLKeys.PSEUDO_STATS):
        for name, value in (output.get(key) or {}).items():
            scalars[name] = float(value)
    return scalars


class PseudoLabelStatsHandler:
    """After each iteration, record threshold mean and std, kept fraction and foreground fraction of pseudo-labels.

    The numbers go to ``engine.state.output[PSEUDO_STATS]`` (so ``StatsHandler``, ``TensorBoardStatsHandler`` and
    ``MLFlowHandler`` log them with ``output_transform=ssl_scalars``) and to ``engine.state.pseudo_label_stats``.
    When the foreground fraction stays within ``collapse_eps`` of 0 or 1 for ``patience`` iterations in a row,
    pseudo-labels have collapsed (all background or all foreground): the handler warns once, logs it, and sets
    ``engine.state.pseudo_label_collapsed`` to the iteration at which it was detected.

    Args:
        collapse_eps: distance from 0 or 1 that counts as collapsed.
        patience: consecutive collapsed iterations before the warning.
        logger_name: logger to report collapse on.

    Raises:
        ValueError: ``collapse_eps`` outside [0, 0.5) or ``patience`` below 1.
    """

    def __init__(self, collapse_eps: float = 1e-3, patience: int = 50, logger_name: str = "medssl.pseudo_label") -> None:
        self.collapse_eps = check_in_range("collapse_eps", collapse_eps, 0.0, 0.5, high_inclusive=False)
        self.patience = int(check_positive("patience", patience))
        self.logger = logging.getLogger(logger_name)
        self._run = 0

    def attach(self, engine: Engine) -> None:
        """Record statistics at the end of every iteration model update of ``engine``."""
        engine.state.pseudo_label_collapsed = None
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self)

    @staticmethod
    def compute(output: dict) -> dict[str, torch.Tensor]:
        """The statistics of one iteration's output (empty when it holds no pseudo-label)."""
        pseudo = output.get(SSLKeys.PSEUDO_LABEL)
        if pseudo is None:
            return {}
        pseudo = pseudo.detach().float()
        mask = output.get(SSLKeys.PSEUDO_MASK)
        mask = torch.ones_like(pseudo[:, :1]) if mask is None else mask.detach().float()
        kept = mask.sum().clamp_min(1e-8)
        if pseudo.shape[1] == 1:  # binary (possibly soft) or index labels: foreground is "above background"
            fg = (pseudo > 0.5).float()
        else:  # one-hot
            fg = 1.0 - pseudo[:, :1]
        stats = {
            "pl_kept_fraction": mask.mean(),
            "pl_foreground_fraction": (fg * mask).sum() / kept,
        }
        threshold = output.get(SSLKeys.THRESHOLD)
        if threshold is not None:
            t = threshold.detach().float().flatten()
            stats["threshold_mean"] = t.mean()
            stats["threshold_std"] = t.std(unbiased=False) if t.numel() > 1 else torch.zeros((), device=t.device)
        return stats

    def __call__(self, engine: Engine) -> None:
        stats = self.compute(engine.state.output)
        if not stats:
            return
        engine.state.output[SSLKeys.PSEUDO_STATS] = stats
        # One device-to-host copy for all numbers: a float() each would wait for the GPU once per statistic.
        values = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
        engine.state.pseudo_label_stats = dict(zip(stats, values))
        fg = engine.state.pseudo_label_stats["pl_foreground_fraction"]
        collapsed = fg <= self.collapse_eps or fg >= 1.0 - self.collapse_eps
        self._run = self._run + 1 if collapsed else 0
        if self._run == self.patience and engine.state.pseudo_label_collapsed is None:
            engine.state.pseudo_label_collapsed = engine.state.iteration
            msg = (
                f"pseudo-labels have collapsed: foreground fraction {fg:.4f} for {self.patience} iterations in a row "
                f"(iteration {engine.state.iteration}); check the threshold, the warm-up and the supervised loss"
            )
            self.logger.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
