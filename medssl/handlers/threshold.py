"""The threshold contract: what a pseudo-label cut is to the handlers that cut with it, and the simplest cut.

A cut (:class:`Threshold`) is a piece a pseudo-label handler (:class:`~medssl.handlers.pseudo_label.PseudoLabelHandler`,
:class:`~medssl.handlers.weak_strong.WeakToStrongHandler`) takes and calls after every forward pass. It

- attaches to the trainer when its handler does (``attach``: hooks, optimiser parameter groups; nothing by default);
- returns, for the unlabelled predictions of the iteration, the threshold ``T`` and the loss terms it adds
  (``__call__(engine, logits_u) -> (T, terms)``): ``T`` per image ``(B, 1)`` or per voxel ``(B, 1, *spatial)``
  (either broadcasts over the logits' spatial shape through :meth:`Threshold.as_map`), ``terms`` a dict of scalar
  losses (the learned threshold's KL and fit; empty for the others);
- says whether the pseudo-label gate range-checks ``T`` (``range_gated``);
- keeps its state between iterations for a checkpoint (``state_dict`` / ``load_state_dict``; empty by default),
  under its ``name`` in the method's checkpoint entry.

The cuts: :class:`FixedThreshold` (a number), :class:`~medssl.handlers.learned_threshold.LearnedThreshold` (the
Bayesian threshold of paper 000) and :class:`~medssl.handlers.adaptive_threshold.SelfAdaptiveThreshold` (FreeMatch's).
A new cut is a subclass and an entry of :data:`medssl.methods.CUTS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from ignite.engine import Engine

from medssl.checks import check_in_range

__all__ = ["Threshold", "FixedThreshold"]


class Threshold(ABC):
    """A pseudo-label cut: see the module docstring. Subclasses implement ``__call__`` and set ``name``."""

    #: the key of the cut's state in a method's checkpoint (unique among the method's stateful pieces)
    name: ClassVar[str]
    #: whether the pseudo-label gate closes when ``T`` leaves its range (a learned threshold that ran off)
    range_gated: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"the cut {cls.__name__} must set a class attribute `name` (its checkpoint key).")

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` (the trainer) when the handler that cuts with it does: nothing by default."""

    @abstractmethod
    def __call__(self, engine: Engine, logits_u: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(T, terms)`` for the unlabelled logits ``(B, C, *spatial)`` of this iteration: ``T`` ``(B, 1)`` or
        ``(B, 1, *spatial)``, detached; ``terms`` the loss terms the cut adds (may be empty)."""

    def state_dict(self) -> dict[str, Any]:
        """What the cut keeps between iterations, for a checkpoint: nothing by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: a non-empty state for a cut that keeps none.
        """
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}.")

    @staticmethod
    def as_map(threshold: torch.Tensor, ndim: int) -> torch.Tensor:
        """A per-image ``(B, 1)`` threshold shaped to broadcast over ``(B, 1, *spatial)``; maps pass unchanged."""
        return threshold.view(threshold.shape[0], 1, *([1] * (ndim - 2))) if threshold.ndim == 2 else threshold


class FixedThreshold(Threshold):
    """A fixed cut ``value`` (SegPL's 0.5, FixMatch's 0.95)."""

    name = "fixed_threshold"

    def __init__(self, value: float) -> None:
        self.value = check_in_range("threshold", value, 0.0, 1.0, low_inclusive=False, high_inclusive=False)

    def __call__(self, engine: Engine, logits_u: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(T per unlabelled image, no loss terms)``."""
        return torch.full((logits_u.shape[0], 1), self.value, device=logits_u.device), {}
