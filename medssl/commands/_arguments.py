"""Argument types and argument groups that several sub-commands share."""

from __future__ import annotations

import argparse
import ast
from typing import Any


def float_pair(text: str) -> tuple[float, float]:
    """``"-1000,500"`` -> ``(-1000.0, 500.0)``."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers like -1000,500, got {text!r}")
    return float(parts[0]), float(parts[1])


def spacing(text: str) -> tuple[float, float, float] | None:
    """One or three spacings in mm, or ``keep``."""
    if text.lower() in ("none", "keep"):
        return None
    parts = [float(p) for p in text.replace(",", " ").split() if p]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected one or three spacings in mm, or 'keep', got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def config_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as a Python literal (else kept as text, e.g. a path or a ``$`` expression)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. roi_size=[64,64,64], got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return key.strip(), parsed


def add_override(parser: argparse.ArgumentParser, what: str = "an inference.json setting") -> None:
    """The repeatable ``--override KEY=VALUE`` option."""
    parser.add_argument(
        "--override", action="append", type=config_override, metavar="KEY=VALUE",
        help=f"override {what}, e.g. roi_size=[64,64,64] (the value is read as a Python literal, else kept as "
        "text); repeatable",
    )  # fmt: skip


#: How much synthetic cases differ (:data:`medssl.data.phantoms.VARIATIONS`, named here so that building the
#: command line does not import the phantom generators).
PHANTOM_VARIATIONS = ("case", "scanner")


def add_variation_argument(parser: argparse.ArgumentParser, default: str = "case") -> None:
    """``--variation``: how much the lung-vessel phantoms differ."""
    parser.add_argument(
        "--variation", choices=PHANTOM_VARIATIONS, default=default,
        help="lung_vessel phantoms: 'case' (one scanner, cases differ in anatomy and noise) or 'scanner' (each case "
        f"its own calibration, contrast phase, dose and vessel calibre); default {default}",
    )  # fmt: skip


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``medssl synth`` and ``medssl prepare synthetic`` (the same command)."""
    parser.add_argument("--task", choices=["lung_vessel", "brats"], required=True)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="voxels per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    add_variation_argument(parser)
