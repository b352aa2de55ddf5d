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

__all__ = ["DataError", "DatalistError", "TRACEBACK_ENV", "clear_error", "install_excepthook", "one_line"]

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


#: Set (to anything but 0 or empty) to print the whole traceback above medssl's clear message.
TRACEBACK_ENV = "MEDSSL_TRACEBACK"


def one_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` on one line. A ``DataLoader`` worker's error arrives with the worker's traceback
    as its message; its last line is the message the worker raised (``medssl.errors.DataError: path: problem``)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    name = type(exc).__name__
    for prefix in (f"{type(exc).__module__}.{name}: ", f"{name}: "):
        if last.startswith(prefix):
            last = last[len(prefix) :]
    return f"{name}: {last}"


def install_excepthook() -> None:
    """End a program stopped by bad input with medssl's clear message, not a traceback.

    Bundle configs call it first in ``initialize``. ``python -m monai.bundle run`` would print the whole chain: the
    medssl error, then MONAI's wrapper (``Failed to evaluate ...``, ``applying transform ...``) with some 40 frames of
    the config resolver, whose last line does not say what is wrong. When the chain holds an error medssl raised on
    purpose (:func:`clear_error`), the hook prints two lines instead: that the run stopped on bad input, and
    ``Type: path: problem``. Other errors (a bug, an interrupt) keep the full traceback, and so does every error with
    ``MEDSSL_TRACEBACK=1``; the clear message is then repeated as the last line.
    """
    previous = sys.excepthook
    if getattr(previous, "_medssl", False):
        return

    def hook(tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        clear = clear_error(value)
        if clear is not None and os.environ.get(TRACEBACK_ENV, "") in ("", "0"):
            print(f"medssl: the run stopped on bad input ({TRACEBACK_ENV}=1 prints the traceback)", file=sys.stderr)
            print(one_line(clear), file=sys.stderr)
            return
        previous(tp, value, tb)
        if clear is not None and clear is not value:
            print(one_line(clear), file=sys.stderr)

    hook._medssl = True  # type: ignore[attr-defined]
    sys.excepthook = hook
