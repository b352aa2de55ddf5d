"""The handler lists every medssl bundle trains and validates with, built from a few arguments.

A bundle's ``train.json`` holds what is its own (data, network, sizes, method block); the standard handlers come from
here, in two named lists so that a multi-GPU config never slices them by position:

- ``all_ranks``: what every process must run (the non-finite guard, the learning-rate schedule, validation);
- ``rank0``: what only one process does (the validation curve, logs, TensorBoard, the last checkpoint, the
  progress bar).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine
from monai.handlers import LrScheduleHandler, StatsHandler, TensorBoardStatsHandler, ValidationHandler

from medssl.handlers.checkpoint import AtomicCheckpointSaver
from medssl.handlers.metric_curve import MetricCurveWriter
from medssl.handlers.nonfinite import NonFiniteGuard
from medssl.handlers.pseudo_label_stats import ssl_scalars

__all__ = ["TrainHandlers", "train_handlers", "validation_handlers"]


@dataclass
class TrainHandlers:
    """The trainer's standard handlers: ``all_ranks`` then ``rank0`` (see the module docstring)."""

    all_ranks: list[Any] = field(default_factory=list)
    rank0: list[Any] = field(default_factory=list)

    def for_rank(self, rank: int = 0) -> list[Any]:
        """The handlers of process ``rank``."""
        return self.all_ranks + (self.rank0 if rank == 0 else [])


def _every(n: int) -> Callable[[Engine, Any], bool]:
    return lambda engine, event: engine.state.iteration % n == 0


def train_handlers(
    evaluator: Engine,
    lr_scheduler: Any,
    ckpt_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    checkpoint_dict: Mapping[str, Any],
    val_interval: int = 1,
    lr_epoch_level: bool = True,
    log_every: int = 1,
) -> TrainHandlers:
    """The standard train handlers of a medssl bundle.

    Args:
        evaluator: the validation engine, run every ``val_interval`` epochs.
        lr_scheduler: stepped every epoch (``lr_epoch_level``) or every iteration.
        ckpt_dir: folder of ``model_last.pt``, written atomically after every epoch with ``checkpoint_dict``.
        output_dir: folder of ``val_curve.csv`` and the TensorBoard logs.
        checkpoint_dict: what the last checkpoint holds (the trainer's own state is added).
        val_interval: validation interval, in epochs.
        lr_epoch_level: step the scheduler per epoch (True) or per iteration (poly decay over iterations).
        log_every: log the losses every this many iterations.
    """
    return TrainHandlers(
        all_ranks=[
            NonFiniteGuard(),
            LrScheduleHandler(lr_scheduler, print_lr=False, epoch_level=lr_epoch_level),
            ValidationHandler(interval=val_interval, validator=evaluator, epoch_level=True),
        ],
        rank0=[
            MetricCurveWriter(os.path.join(str(output_dir), "val_curve.csv"), evaluator, interval=val_interval),
            StatsHandler(tag_name="train_loss", output_transform=ssl_scalars,
                         iteration_log=True if log_every == 1 else _every(log_every)),  # fmt: skip
            TensorBoardStatsHandler(log_dir=str(output_dir), tag_name="train", output_transform=ssl_scalars),
            AtomicCheckpointSaver(ckpt_dir, checkpoint_dict, mode="last"),
            ProgressBar(persist=True),
        ],
    )


def validation_handlers(best_saver: AtomicCheckpointSaver | None, output_dir: str | os.PathLike) -> list[Any]:
    """The validation engine's handlers: the best checkpoint, the metrics on the console and in TensorBoard."""
    handlers: list[Any] = [best_saver] if best_saver is not None else []
    return handlers + [StatsHandler(iteration_log=False), TensorBoardStatsHandler(log_dir=str(output_dir), iteration_log=False)]
