"""The accuracy benchmark's summary: ``table.md`` (mean (sd) Dice per method and fraction, the share of the
lower-to-upper gap each method closes, robustness), ``dice_vs_fraction.png``, ``robustness.png`` and
``run_info.json``."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.bench.measure import machine_info
from medssl.bench.presets import Preset
from medssl.workflows.tasks import BOUNDS, METHODS
from medssl.data.io import atomic_path, write_json
from medssl.visualize import save_figure

__all__ = ["MIN_GAP", "summarize"]

#: The methods compared with the bounds.
SSL_METHODS = [m for m in METHODS if m not in BOUNDS]
#: Smallest upper-minus-lower Dice for which "share of the gap closed" means something.
MIN_GAP = 0.02


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ({sd:.3f})"


def summarize(
    runs: pd.DataFrame,
    robust: pd.DataFrame,
    out: str | os.PathLike,
    spec: Preset,
    preset: str,
    seconds: float,
    jobs: int = 1,
) -> Path:
    """Write ``table.md``, ``dice_vs_fraction.png`` and ``robustness.png`` from the run tables."""
    out = Path(out)
    machine = machine_info()
    lines = [
        f"# Accuracy benchmark, preset `{preset}`",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d}; machine: {json.dumps(machine)}; "
        f"this call ran {seconds / 60:.1f} min ({jobs} job{'s' if jobs > 1 else ''} side by side).",
        "",
    ]
    for task, task_runs in runs.groupby("task", sort=False):
        setting = spec.tasks.get(task)
        lines += [f"## {task}", ""]
        if setting is not None:
            lines += [
                f"{setting.cases} phantoms of {setting.size} voxels a side (or the given datalist), "
                f"{int(task_runs['iterations'].max())} iterations per run, "
                f"seeds {sorted(int(s) for s in task_runs['seed'].unique())}; "
                "test Dice of the best validation checkpoint, mean (sd) over seeds.",
                "",
            ]
        fractions = sorted(f for f in task_runs["labeled_fraction"].unique() if f < 1)
        region_cols = [c for c in ("dice_WT", "dice_TC", "dice_ET") if c in task_runs and task_runs[c].notna().any()]
        cols = ["dice_mean"] + region_cols
        header = "| method | " + " | ".join(f"{f:.0%} {c.replace('dice_', '')}" for f in fractions for c in cols) + " |"
        lines += [header, "|---|" + "---|" * (len(fractions) * len(cols))]
        upper = task_runs[task_runs["method"] == "upper_bound"]
        for method in [m for m in METHODS if m in set(task_runs["method"])]:
            cells = []
            for f in fractions:
                sel = (
                    upper
                    if method == "upper_bound"
                    else task_runs[(task_runs["method"] == method) & (task_runs["labeled_fraction"] == f)]
                )
                cells += [_mean_sd(sel[c]) for c in cols]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Share of the lower-to-upper-bound gap closed: (method - lower) / (upper - lower) of the mean Dice, per "
            f"seed, then averaged; a seed counts only where the upper bound beats the lower bound by at least "
            f"{MIN_GAP} Dice (n/a: no such seed, the labels left nothing to close).",
            "",
        ]
        lines += ["| method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
        for method in [m for m in SSL_METHODS if m in set(task_runs["method"])]:
            cells = []
            for f in fractions:
                gaps = []
                for seed in sorted(task_runs["seed"].unique()):
                    lo = task_runs[
                        (task_runs.method == "lower_bound")
                        & (task_runs.labeled_fraction == f)
                        & (task_runs.seed == seed)
                    ]
                    up = upper[upper.seed == seed]
                    me = task_runs[
                        (task_runs.method == method) & (task_runs.labeled_fraction == f) & (task_runs.seed == seed)
                    ]
                    if lo.empty or up.empty or me.empty:
                        continue
                    gap = float(up.dice_mean.iloc[0] - lo.dice_mean.iloc[0])
                    if gap >= MIN_GAP:
                        gaps.append((float(me.dice_mean.iloc[0]) - float(lo.dice_mean.iloc[0])) / gap)
                cells.append(f"{np.mean(gaps):+.0%}" if gaps else "n/a")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if not robust.empty:
            task_robust = robust[robust["task"] == task]
            if not task_robust.empty:
                lines += ["", "Robustness (test Dice, mean over seeds and fractions):", ""]
                for kind, part in task_robust.groupby("perturbation", sort=False):
                    levels = sorted(part["level"].unique())
                    lines += [
                        f"| {kind} | " + " | ".join(f"{lv:g}" for lv in levels) + " |",
                        "|---|" + "---|" * len(levels),
                    ]
                    for method in [m for m in METHODS if m in set(part["method"])]:
                        cells = [
                            f"{part[(part.method == method) & (part.level == lv)].dice.mean():.3f}" for lv in levels
                        ]
                        lines.append(f"| {method} | " + " | ".join(cells) + " |")
                    lines.append("")
        lines.append("")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines))
    _plots(runs, robust, out)
    write_json({"preset": preset, "machine": machine, "seconds": seconds, "jobs": jobs}, out / "run_info.json")
    return out / "table.md"


def _plots(runs: pd.DataFrame, robust: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(runs["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = runs[runs.task == task]
        fractions = sorted(f for f in part.labeled_fraction.unique() if f < 1)
        for method in [m for m in METHODS if m in set(part.method)]:
            if method == "upper_bound":
                value = part[part.method == method].dice_mean.mean()
                ax.axhline(value, color="black", linestyle="--", label="upper_bound")
                continue
            stats = (
                part[part.method == method]
                .groupby("labeled_fraction")
                .dice_mean.agg(["mean", "std"])
                .reindex(fractions)
            )
            ax.errorbar(
                np.array(fractions) * 100,
                stats["mean"],
                yerr=stats["std"].fillna(0),
                marker="o",
                capsize=3,
                label=method,
            )
        ax.set(title=task, xlabel="labelled fraction (%)", ylabel="test Dice")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "dice_vs_fraction.png")
    if robust.empty:
        return
    kinds = list(robust["perturbation"].unique())
    fig, axes = plt.subplots(len(tasks), len(kinds), figsize=(5 * len(kinds), 3.6 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            part = robust[(robust.task == task) & (robust.perturbation == kind)]
            for method in [m for m in METHODS if m in set(part.method)]:
                curve = part[part.method == method].groupby("level").dice.mean()
                ax.plot(curve.index, curve.values, marker="o", label=method)
            ax.set(
                title=f"{task}: {kind}", xlabel="noise std" if kind == "noise" else "FGSM epsilon", ylabel="test Dice"
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out / "robustness.png")
