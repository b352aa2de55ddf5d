"""Where the accuracy benchmark keeps its results: the layout of its runs and its row tables (CSV, written atomically).

Under ``out``: ``<task>/seed<k>/`` per (task, seed) chain, with its splits, its own ``runs.csv`` and
``robustness.csv`` (so a chain resumes on its own), the upper bound's run and ``frac<f>/<method>/`` per run (the
teacher's pseudo-labels in ``frac<f>/teacher/``); ``runs.csv`` and ``robustness.csv`` of every chain at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medssl.workflows.tasks import reads_pseudo_labels
from medssl.data.io import atomic_path

__all__ = ["RUN_KEY", "ROBUST_KEY", "read_rows", "write_rows", "row_key", "merge_rows", "run_paths", "teacher_dir"]

#: the columns that name a run, and a robustness row
RUN_KEY = ["task", "method", "seed", "labeled_fraction"]
ROBUST_KEY = RUN_KEY + ["perturbation", "level"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV table (none when it does not exist yet)."""
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` as a CSV table, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def row_key(row: dict[str, Any], columns: Sequence[str]) -> tuple:
    """The key of ``row`` in ``columns`` (fractions and levels as floats, as a CSV reads them back)."""
    return tuple(float(row[c]) if c in ("labeled_fraction", "level") else row[c] for c in columns)


def merge_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per key, the last one given winning (chains' rows come after older top-level rows)."""
    return list({row_key(r, columns): r for r in rows}.values())


def teacher_dir(out: Path, task: str, seed: int, fraction: float) -> Path:
    """Where the teacher (the lower bound) of a fraction and seed writes the pseudo-labels its students read."""
    return out / task / f"seed{seed}" / f"frac{fraction:.2f}" / "teacher"


def run_paths(out: Path, task: str, method: str, seed: int, fraction: float) -> tuple[Path, Path]:
    """(datalist, run folder) of one run, laid out as :func:`~medssl.bench.accuracy.run_accuracy` lays them out."""
    split_dir = out / task / f"seed{seed}"
    if method == "upper_bound":
        return split_dir / "split_1.00.json", split_dir / "upper_bound"
    run_root = split_dir / f"frac{fraction:.2f}"
    datalist = (
        teacher_dir(out, task, seed, fraction) / "datalist.json"
        if reads_pseudo_labels(method)
        else split_dir / f"split_{fraction:.2f}.json"
    )
    return datalist, run_root / method
