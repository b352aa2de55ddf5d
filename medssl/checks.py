"""Argument checks shared by all of medssl: each raises an error that names the argument and the bad value."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

__all__ = ["check_bool", "check_in_range", "check_positive", "check_choice", "check_type", "check_renamed"]


def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> Any:
    """Raise ``TypeError`` unless ``value`` is an instance of ``types``; return ``value``."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        expected = " or ".join(t.__name__ for t in _as_tuple(types))
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} ({value!r}).")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool: a bool, 0 or 1, or a word MONAI's ``str2bool`` reads (``true`` / ``false``, ``yes`` / ``no``,
    any case): ``python -m monai.bundle run ... --amp false`` passes the string ``"false"``, which Python would read
    as true. Anything else raises ``ValueError`` naming the setting.

    >>> check_bool("amp", "false"), check_bool("resume", "True"), check_bool("amp", 0)
    (False, True, False)
    """
    if isinstance(value, str):
        from monai.utils import str2bool  # here: medssl's light commands import this module without MONAI

        try:
            return str2bool(value.strip())
        except ValueError:
            pass
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")  # no subclass of bool
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)) or numpy_bool:
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def check_in_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Raise ``ValueError`` unless ``low <= value <= high`` (bounds optional, inclusivity per side); return ``value``.

    >>> check_in_range("q", 0.7, 0.0, 1.0, low_inclusive=False)
    0.7
    """
    check_type(name, value, (int, float))
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got nan.")
    too_low = low is not None and (value < low or (value == low and not low_inclusive))
    too_high = high is not None and (value > high or (value == high and not high_inclusive))
    if too_low or too_high:
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        right = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{name} must be in {left}, {right}, got {value}.")
    return value


def check_positive(name: str, value: Any, strict: bool = True) -> float:
    """Raise ``ValueError`` unless ``value > 0`` (``>= 0`` when ``strict`` is False); return ``value``."""
    return check_in_range(name, value, low=0, low_inclusive=not strict)


def check_choice(name: str, value: Any, choices: Collection) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``; return ``value``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(str, choices))}, got {value!r}.")
    return value


def check_renamed(
    what: str, given: Iterable[str], renamed: Mapping[str, str], error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` if any of the names ``given`` is an old spelling in ``renamed`` (old name -> new name).

    >>> check_renamed("method setting", ["warmup"], {"mode": "threshold_fit"})
    >>> check_renamed("method setting", ["mode"], {"mode": "threshold_fit"})
    Traceback (most recent call last):
    ...
    ValueError: method setting 'mode' was renamed 'threshold_fit'.
    """
    old = sorted(k for k in set(given) if k in renamed)
    if old:
        raise error("; ".join(f"{what} {k!r} was renamed {renamed[k]!r}" for k in old) + ".")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
