"""The progress bar draws on a terminal only; the loss log's cadence suits the run's length."""

from __future__ import annotations

import io

import pytest
from ignite.engine import Engine, Events

from medssl.handlers.progress import TerminalProgressBar
from medssl.workflows.training import every, loss_cadence


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, drawn", [(io.StringIO(), False), (_Terminal(), True)])
def test_progress_bar_only_on_a_terminal(stream, drawn):
    engine = Engine(lambda e, b: 0.0)
    bar = TerminalProgressBar(stream=stream, persist=True)
    bar.attach(engine)
    engine.run(range(3), max_epochs=1)
    assert (bar.bar is not None) == drawn
    assert ("\r" in stream.getvalue()) == drawn  # tqdm redraws with carriage returns: never into a file


@pytest.mark.parametrize("total, n", [(4, 1), (199, 1), (200, 2), (550, 5), (3000, 20), (5000, 50), (30000, 200)])
def test_loss_cadence(total, n):
    assert loss_cadence(total) == n


def test_auto_cadence_reads_the_run_length_from_the_engine():
    logged = []
    engine = Engine(lambda e, b: 0.0)
    keep = every("auto")
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: logged.append(e.state.iteration) if keep(e, None) else None)
    engine.run(range(100), max_epochs=5)  # 500 iterations: every 5th
    assert logged == list(range(5, 501, 5))
    assert every(1) is True and every(3)(engine, None) is False  # iteration 500
