"""Handlers that only one process of a multi-process run attaches: logs, curves, TensorBoard, the last checkpoint.

A bundle lists its training handlers once; those that write files or the console are wrapped in :class:`FirstRank`,
so the multi-process config needs no handler list of its own (and never slices one by position).
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from ignite.engine import Engine

__all__ = ["is_first_rank", "FirstRank"]


def is_first_rank() -> bool:
    """Whether this process is the first of its process group (or there is no group)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class FirstRank:
    """Attach ``handler`` in the first process only (every process of a run that has no process group).

    Args:
        handler: any object with ``attach(engine)`` (a MONAI or ignite handler).

    Example (a bundle's handler list)::

        {"_target_": "medssl.handlers.ranks.FirstRank", "handler": {"_target_": "StatsHandler", "tag_name": "loss"}}
    """

    def __init__(self, handler: Any) -> None:
        if not callable(getattr(handler, "attach", None)):
            raise TypeError(f"FirstRank wraps a handler with attach(engine), got {type(handler).__name__}")
        self.handler = handler

    def attach(self, engine: Engine) -> None:
        """Attach the wrapped handler to ``engine`` in the first process."""
        if is_first_rank():
            self.handler.attach(engine)
