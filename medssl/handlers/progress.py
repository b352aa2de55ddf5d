"""A progress bar for a person at a terminal, and none in a log file.

ignite's ``ProgressBar`` (tqdm) redraws its line with ``\\r`` a few times per iteration; written to a file or a
pipe, those redraws pile up into one physical line per epoch (about 28 KB at 200 iterations) with the log records
glued onto it. Where the output is not a terminal, the loss lines of the ``StatsHandler`` (at a cadence that suits
the run's length, :func:`medssl.workflows.training.loss_cadence`) and ignite's epoch lines are the record.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine

__all__ = ["TerminalProgressBar"]


class TerminalProgressBar:
    """Attach ignite's ``ProgressBar`` when ``stream`` (default: ``sys.stderr``, where tqdm writes) is a terminal.

    Args:
        stream: the stream the bar would be drawn on; its ``isatty()`` decides.
        kwargs: ``ProgressBar``'s arguments (``persist``, ``bar_format``, ...).
    """

    def __init__(self, stream: IO[str] | None = None, **kwargs: Any) -> None:
        self.stream = stream
        self.kwargs = kwargs
        self.bar: ProgressBar | None = None

    def attach(self, engine: Engine) -> None:
        """Attach a ``ProgressBar`` to ``engine`` if the output is a terminal; do nothing otherwise."""
        stream = self.stream if self.stream is not None else sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            self.bar = ProgressBar(file=stream, **self.kwargs)
            self.bar.attach(engine)
