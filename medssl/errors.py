"""Error types that medssl raises for bad user input.

Every error names the file (or argument) and the problem, so a user running an unattended pipeline can act on it
without reading a traceback from deep inside a library.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import TracebackType

__all__ = ["DataError", "DatalistError", "clear_error", "install_excepthook"]

_PACKAGE_DIR = Path(__file__).resolve().parent


class DataError(ValueError):
    """A file on disk cannot be used as it is: unreadable, wrong shape, NaN voxels, unknown labels, bad geometry.

    Args:
        path: the offending file (or files, joined for the message).
        problem: what is wrong with it, in words a user understands.
    """

    def __init__(self, path: str | os.PathLike | list | tuple, problem: str | None = None) -> None:
        if isinstance(path, (list, tuple)):
            path = ", ".join(str(p) for p in path)
        self.path = str(path)
        self.problem = problem
        # One argument: a message already formatted, as PyTorch's DataLoader re-raises a worker's error.
        super().__init__(self.path if problem is None else f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class DatalistError(DataError):
    """A datalist (MONAI decathlon-style JSON) is malformed or names files that cannot be used."""


def _raised_by_medssl(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    last = traceback.extract_tb(tb)[-1]
    return Path(last.filename).resolve().is_relative_to(_PACKAGE_DIR)


def clear_error(exc: BaseException) -> BaseException | None:
    """The innermost error of ``exc``'s chain that medssl raised on purpose, or None.

    MONAI wraps what a transform or a config expression raises in ``RuntimeError("applying transform ...")`` or
    ``RuntimeError("Failed to evaluate ...")``; the clear message (a :class:`DataError`, or a ``ValueError``,
    ``TypeError`` or ``FloatingPointError`` from a medssl check) is then the cause of the cause.
    """
    found = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DataError) or (
            isinstance(exc, (ValueError, TypeError, FloatingPointError)) and _raised_by_medssl(exc)
        ):
            found = exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found


def install_excepthook() -> None:
    """Repeat medssl's clear message as the last line when an uncaught error ends a program.

    Bundle configs call it first in ``initialize``: ``python -m monai.bundle run`` prints the full traceback, whose
    last line is MONAI's wrapper; the line this hook adds names the file (or argument) and the problem.
    """
    previous = sys.excepthook
    if getattr(previous, "_medssl", False):
        return

    def hook(tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        previous(tp, value, tb)
        clear = clear_error(value)
        if clear is not None and clear is not value:
            print(f"{type(clear).__name__}: {clear}", file=sys.stderr)

    hook._medssl = True  # type: ignore[attr-defined]
    sys.excepthook = hook
