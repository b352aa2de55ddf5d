"""The validation curve of a run as a CSV file that survives a resume: one row per evaluation."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from ignite.engine import Engine, Events

from medssl.checks import check_positive
from medssl.data.io import atomic_path

__all__ = ["MetricCurveWriter"]


class MetricCurveWriter:
    """Append the evaluator's metrics after each evaluation to ``path`` (columns ``epoch``, ``iteration``, metrics).

    Attach it to the evaluator that a ``ValidationHandler`` runs: the evaluator's epoch is then the trainer's epoch,
    and ``iteration = epoch * epoch_length``. Rows at or after the current epoch are replaced, so a run resumed
    from an earlier checkpoint does not leave duplicate or stale points. Written atomically.

    Args:
        path: the CSV file.
        epoch_length: training iterations per epoch (the validation interval of iteration-based bundles).
    """

    def __init__(self, path: str | os.PathLike, epoch_length: int = 1) -> None:
        self.path = Path(path)
        self.epoch_length = int(check_positive("epoch_length", epoch_length))

    def attach(self, engine: Engine) -> None:
        """Write after every evaluation of ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        row = {"epoch": epoch, "iteration": epoch * self.epoch_length}
        row.update({k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))})
        old = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame()
        if not old.empty:
            old = old[old["epoch"] < epoch]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(tmp, index=False)
