"""What every medssl bundle trains and validates with that its config cannot say in a line: the unlabelled stream
(which exists only for a method that reads unlabelled images), the validation handlers, the loss log's cadence.

A bundle's ``train.json`` holds what is its own (data, network, sizes, method block); what the bundles share is in
their common config, ``bundles/_common/configs/common.json``, which calls these. Its training handlers are listed
there, MONAI's way; what only one process does (the validation curve, logs, TensorBoard, the last checkpoint, the
progress bar) is wrapped in :class:`~medssl.handlers.ranks.FirstRank`, so the multi-process config needs no list of
its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ignite.engine import Engine
from monai.handlers import StatsHandler, TensorBoardStatsHandler

from medssl.data.datalist import require_unlabeled
from medssl.data.loaders import stream_loader
from medssl.handlers.checkpoint import AtomicCheckpointSaver
from medssl.methods import uses_unlabeled

__all__ = [
    "LOSS_LINES",
    "loss_cadence",
    "every",
    "validation_handlers",
    "unlabeled_data",
    "unlabeled_loader",
    "check_unlabeled",
    "RENAMED",
    "refuse_renamed",
]


#: About this many loss lines per run at most when the cadence is ``"auto"``.
LOSS_LINES = 100


def loss_cadence(total_iterations: int, lines: int = LOSS_LINES) -> int:
    """Every how many iterations to log the loss so that a run of ``total_iterations`` logs about ``lines`` lines at
    most: the largest of 1, 2, 5, 10, 20, 50, ... not above ``total_iterations / lines`` (a 4-iteration run logs
    every iteration, 550 iterations every 5th, 5000 every 50th)."""
    target = max(1, int(total_iterations) // lines)
    steps = [decade * f for decade in (1, 10, 100, 1000, 10000) for f in (1, 2, 5)]
    return max(step for step in steps if step <= target)


def every(n: int | str) -> bool | Callable[[Engine, Any], bool]:
    """An iteration filter for a ``StatsHandler``'s ``iteration_log``: every iteration (``True``) for ``n == 1``,
    every ``n``-th for a number, and for ``"auto"`` every :func:`loss_cadence` of the run's length (read from the
    engine when the filter is first called: ``max_epochs x epoch_length``)."""
    if n == "auto":
        cadence: dict[str, int] = {}

        def auto(engine: Engine, event: Any) -> bool:
            if "n" not in cadence:
                cadence["n"] = loss_cadence((engine.state.max_epochs or 1) * (engine.state.epoch_length or 1))
            return engine.state.iteration % cadence["n"] == 0

        return auto
    n = int(n)
    return True if n == 1 else (lambda engine, event: engine.state.iteration % n == 0)


def validation_handlers(best_saver: AtomicCheckpointSaver | None, output_dir: str | os.PathLike) -> list[Any]:
    """The validation engine's handlers: the best checkpoint, the metrics on the console and in TensorBoard."""
    handlers: list[Any] = [best_saver] if best_saver is not None else []
    return handlers + [StatsHandler(iteration_log=False), TensorBoardStatsHandler(log_dir=str(output_dir), iteration_log=False)]


def unlabeled_data(ssl_method: str, split: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The split's unlabelled entries when ``ssl_method`` trains on them, else none (nothing to load or cache)."""
    return list(split.get("unlabeled") or []) if uses_unlabeled(ssl_method) else []


def unlabeled_loader(ssl_method: str, dataset: Any, seed: int, **kwargs: Any) -> Any:
    """The unlabelled stream's loader (:func:`~medssl.data.loaders.stream_loader`, its own generator) when
    ``ssl_method`` trains on unlabelled images, else None (the trainer is then a supervised trainer).

    Args:
        ssl_method: a method of :data:`medssl.methods.REGISTRY`.
        dataset: the unlabelled dataset.
        seed: the run's seed.
        kwargs: the loader's other arguments (``batch_size``, ``drop_last``, ``num_workers``, a ``sampler``, ...).
    """
    return stream_loader(dataset, seed, "unlabeled", **kwargs) if uses_unlabeled(ssl_method) else None


def check_unlabeled(ssl_method: str, split: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Refuse a method that trains on unlabelled images with a split (read from ``source``) that has none.

    Raises:
        DatalistError: the unlabelled set is empty or absent.
    """
    if uses_unlabeled(ssl_method):
        require_unlabeled(dict(split), source)


#: Bundle settings that were renamed: old name -> what to write instead.
RENAMED = {
    "threshold_mode": "threshold_scope (per_image | per_pixel: the threshold head's output) or method#cut "
    "(fixed | learned | adaptive: the method's cut)",
}


def refuse_renamed(**values: Any) -> None:
    """Refuse a bundle setting that was renamed (set on the command line or in a config), naming the new one.

    Raises:
        ValueError: a renamed setting has a value.
    """
    for name, value in values.items():
        if value is not None:
            raise ValueError(f"bundle setting '{name}' ({value!r}) was renamed: use {RENAMED[name]}")
