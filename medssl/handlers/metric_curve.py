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
    """After each validation, append the trainer's epoch and iteration and the evaluator's metrics to ``path``.

    Attach it to the trainer after the ``ValidationHandler`` that runs ``evaluator`` (handlers of one event run in
    the order they were attached), with the same ``interval``. Rows at or after the current iteration are replaced,
    so a run resumed from an earlier checkpoint leaves no duplicate or stale points. Written atomically.

    Args:
        path: the CSV file (columns ``epoch``, ``iteration`` and one per metric).
        evaluator: the validation engine whose ``state.metrics`` are recorded.
        interval: validation interval, in epochs.
    """

    def __init__(self, path: str | os.PathLike, evaluator: Engine, interval: int = 1) -> None:
        self.path = Path(path)
        self.evaluator = evaluator
        self.interval = int(check_positive("interval", interval))

    def attach(self, engine: Engine) -> None:
        """Write after every ``interval`` epochs of the trainer ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        iteration = int(engine.state.iteration)
        row = {"epoch": int(engine.state.epoch), "iteration": iteration}
        metrics = self.evaluator.state.metrics or {}
        row.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        old = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame()
        if not old.empty:
            old = old[old["iteration"] < iteration]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(tmp, index=False)
