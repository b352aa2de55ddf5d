"""The report of a real-data track: its table, the share of the lower-to-upper gap each method closes, the curves.

Reads every ``result.json`` of a protocol's runs (:mod:`medssl.bench.track`) and writes ``runs.csv`` (one row a
run), ``table.md`` and ``val_curves.png`` (validation Dice over iterations, one panel per method), all atomically.
:func:`export_records` copies what a report needs of each finished run (no checkpoints) to another folder, which is
itself a protocol folder: reports are written from it, and a later sitting that copies it back skips those runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.workflows.tasks import METHODS, TASKS
from medssl.bench.track import LOWER, UPPER, Track
from medssl.bench.tracks import TRACKS
from medssl.data.io import atomic_path, read_json
from medssl.visualize import save_figure

__all__ = ["RECORD_FILES", "PAIRED", "collect", "export_records", "gap_closed", "paired_difference", "write_report"]

#: What a run keeps in its record: the result, its time, the validation curve and the per-case test table.
RECORD_FILES = ("result.json", "timing.json", "eval/val_curve.csv", "test/per_case.csv")
#: The finished runs of a protocol folder (medssl.bench.track.run_dir_of, with a result).
_RESULTS = "runs/*/*/seed*/result.json"
#: The paired control (medssl.methods: SegPL with its loss weighted 0): the methods' run without an unsupervised loss.
PAIRED = "paired_lower_bound"


def collect(root: str | Path) -> pd.DataFrame:
    """One row per finished run under ``root`` (a protocol's folder): test metrics, best validation, time."""
    root, rows = Path(root), []
    for path in sorted(root.glob(_RESULTS)):
        r = read_json(path)
        row = {k: r.get(k) for k in ("method", "setting", "seed", "iterations", "best_val_dice", "best_val_iteration")}
        row.update({k: r.get(k) for k in ("wall_seconds", "cpu_seconds", "sittings", "val_seconds", "val_passes")})
        row.update({k.removeprefix("val_"): v for k, v in r["test"].items()})
        for name, metrics in r.get("post", {}).items():  # the track's other post-processings: "<metric>_<name>"
            row.update({f"{k.removeprefix('val_')}_{name}": v for k, v in metrics.items()})
        row["run_dir"] = path.parent.relative_to(root).as_posix()
        rows.append(row)
    return pd.DataFrame(rows)


def export_records(root: str | Path, dest: str | Path) -> list[Path]:
    """Copy the :data:`RECORD_FILES` of every finished run under ``root`` into the same layout under ``dest``.

    Each file is written atomically, with the per-case tables of the track's other post-processings
    (``test_<name>/per_case.csv``); a run without ``result.json`` (unfinished) is not exported. Returns the run folders
    written under ``dest``.
    """
    root, dest = Path(root), Path(dest)
    written = []
    for result in sorted(root.glob(_RESULTS)):
        run = result.parent.relative_to(root)
        post = [p.relative_to(root / run).as_posix() for p in sorted((root / run).glob("test_*/per_case.csv"))]
        for name in (*RECORD_FILES, *post):
            if (root / run / name).is_file():
                with atomic_path(dest / run / name) as tmp:
                    shutil.copyfile(root / run / name, tmp)
        written.append(dest / run)
    return written


def gap_closed(runs: pd.DataFrame, method: str, setting: str, metric: str = "mean_dice") -> pd.DataFrame:
    """Per seed: the method's test Dice, the lower and upper bounds', and ``(method - lower) / (upper - lower)``
    (``metric``: the column scored, e.g. ``mean_dice_lcc`` after a post-processing)."""
    out = []
    for seed in sorted(runs.loc[runs.method == method, "seed"].unique()):
        me = runs[(runs.method == method) & (runs.setting == setting) & (runs.seed == seed)]
        lo = runs[(runs.method == LOWER) & (runs.setting == setting) & (runs.seed == seed)]
        up = runs[(runs.method == UPPER) & (runs.seed == seed)]
        if me.empty or lo.empty or up.empty:
            continue
        m, low, high = (float(x[metric].iloc[0]) for x in (me, lo, up))
        if np.isnan([m, low, high]).any():  # a run not (yet) scored with this metric
            continue
        gap = high - low
        out.append({"seed": seed, "dice": m, "lower": low, "upper": high,
                    "closed": (m - low) / gap if gap > 0 else np.nan, "beats_lower": m > low})  # fmt: skip
    return pd.DataFrame(out)


def paired_difference(
    runs: pd.DataFrame, method: str, setting: str, control: str = PAIRED, metric: str = "mean_dice"
) -> pd.DataFrame:
    """Per seed with both runs: the method's test Dice minus the ``control``'s of the same setting and seed.

    The paired control shares the methods' random stream up to their warm-up, so the difference is what the method's
    unsupervised loss did rather than another draw of the supervised run.
    """
    both = runs[runs.method.isin((method, control)) & (runs.setting == setting)]
    dice = both.pivot_table(index="seed", columns="method", values=metric, aggfunc="first")
    if method not in dice or control not in dice:
        return pd.DataFrame(columns=["seed", "difference"])
    diff = (dice[method] - dice[control]).dropna()
    return pd.DataFrame({"seed": diff.index.astype(int), "difference": diff.to_numpy()})


def _mean_sd(values: pd.Series, fmt: str = "{:.3f}") -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return fmt.format(values.mean()) + ("" if np.isnan(sd) else " (" + fmt.format(sd) + ")")


def _paired_cell(paired: pd.DataFrame | None) -> str:
    """Mean (sd) of the paired differences, then each seed's sign: ``+0.012 (0.020); + - =``."""
    if paired is None or paired.empty:
        return ""
    d = paired.difference
    sd = f" ({d.std(ddof=1):.3f})" if len(d) > 1 else ""
    return f"{d.mean():+.3f}{sd}; " + " ".join("+" if x > 0 else "-" if x < 0 else "=" for x in d)


def _flatness(runs: pd.DataFrame, root: Path, unit: str = "seed") -> list[str]:
    """How much each upper bound's validation Dice still moved over the last fifth of its run (``unit``: what a seed
    is, "seed" or "fold")."""
    lines = []
    for row in runs[runs.method == UPPER].itertuples():
        curve_path = root / row.run_dir / "eval" / "val_curve.csv"
        if not curve_path.is_file():
            continue
        curve = pd.read_csv(curve_path)
        last = curve[curve.iteration >= 0.8 * curve.iteration.max()]
        start, end = float(last.val_mean_dice.iloc[0]), float(last.val_mean_dice.iloc[-1])
        lines.append(
            f"- upper bound, {unit} {row.seed}: validation Dice {start:.3f} at iteration "
            f"{int(last.iteration.iloc[0])}, "
            f"{end:.3f} at {int(last.iteration.iloc[-1])} (range {last.val_mean_dice.min():.3f}-"
            f"{last.val_mean_dice.max():.3f} over the last fifth)"
        )
    return lines


def write_report(track_name: str, protocol: str, out: str | Path) -> Path:
    """Write ``runs.csv``, ``table.md`` and ``val_curves.png`` of a protocol's finished runs; return ``table.md``."""
    track = TRACKS[track_name]
    root = Path(out) / protocol
    runs = collect(root)
    if runs.empty:
        raise FileNotFoundError(f"{root}: no finished run (result.json) to report")
    with atomic_path(root / "runs.csv") as tmp:
        runs.to_csv(tmp, index=False)
    channels = list(TASKS[track.task].channels)
    classes = channels if len(channels) > 1 else []  # a binary task's one channel is its Dice
    # the LA papers' surface metrics beside Dice and HD95, where the runs have them
    surface = [(key, name) for key, name in (("jaccard", "Jaccard"), ("asd", "ASD")) if key in runs and runs[key].notna().any()]
    proto = track.protocols[protocol]
    lines = [f"# {track_name}, protocol `{protocol}`", "", f"{proto.description}. Every method trains the same "
             "number of iterations; the checkpoint with the best validation Dice (per volume) is scored once on the "
             "test volumes. HD95 is MONAI's (voxels; the larger of the two directed 95th percentiles), not the "
             "papers' medpy hd95.", ""]  # fmt: skip
    if PAIRED in set(runs.method):
        lines += [f"Against the paired control: the method's test Dice minus `{PAIRED}`'s of the same "
                  f"{track.replicate} (the same run without the unsupervised loss), mean (sd), then each "
                  f"{track.replicate}: + above, - below, = the same.", ""]  # fmt: skip
    order = [m for m in METHODS if m in set(runs.method)]
    posts = [(name, f"_{name}") for name in track.post if f"mean_dice_{name}" in runs]
    for setting in sorted({s for s in runs.setting if s != "all"}) or ["all"]:
        lines += [f"## labelled setting {setting}", ""]
        lines += _table(runs, track, setting, order, classes, surface)
        for name, suffix in posts:
            settings = ", ".join(f"{k} {v}" for k, v in track.post[name].items())
            lines += [f"After post-processing `{name}` ({settings}): the same checkpoints scored again.", ""]
            lines += _table(runs, track, setting, order, classes, surface, suffix)
    flat = _flatness(runs, root, track.replicate) or ["- (no upper-bound curve yet)"]
    lines += ["Convergence of the upper bound:", ""] + flat
    lines += ["", f"CPU time of the {len(runs)} runs: {runs.cpu_seconds.sum() / 3600:.1f} h "
              f"(wall-clock {runs.wall_seconds.sum() / 3600:.1f} h, runs side by side counted separately).", ""]  # fmt: skip
    timed = runs[runs.val_passes.fillna(0) > 0] if "val_passes" in runs else runs.iloc[:0]
    if not timed.empty:  # runs recorded before medssl timed validation have no val_passes
        per_pass = timed.val_seconds.sum() / timed.val_passes.sum()
        share = timed.val_seconds.sum() / timed.wall_seconds.sum()
        lines += [f"Validation in the {len(timed)} runs that timed it: {per_pass:.1f} s a pass, {share:.1%} of their "
                  "wall-clock time.", ""]  # fmt: skip
    with atomic_path(root / "table.md") as tmp:
        tmp.write_text("\n".join(lines))
    _plot_curves(runs, root)
    return root / "table.md"


def _table(
    runs: pd.DataFrame,
    track: Track,
    setting: str,
    order: list[str],
    classes: list[str],
    surface: list[tuple[str, str]],
    suffix: str = "",
) -> list[str]:
    """The markdown table of one labelled setting: each method's test metrics (the columns ending in ``suffix``: a
    post-processing's), best validation Dice, gap closed, paired difference and CPU time."""
    part = runs[(runs.setting == setting) | (runs.method == UPPER)]
    dice = f"mean_dice{suffix}"
    head = ["method", f"{track.replicate}s", "Dice", *classes]
    head += ["HD95", *(name for _, name in surface), "best val Dice", "gap closed", "beats lower",
             "against the paired control", "CPU h"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in order:
        sel = part[part.method == method]
        if sel.empty or dice not in sel or sel[dice].isna().all():
            continue
        gaps = gap_closed(runs, method, setting, dice) if method not in (LOWER, UPPER) else pd.DataFrame()
        cells = [method, ",".join(str(int(s)) for s in sorted(sel.seed)), _mean_sd(sel[dice])]
        cells += [_mean_sd(sel[f"dice_{c}{suffix}"]) if f"dice_{c}{suffix}" in sel else "-" for c in classes]
        cells += [_mean_sd(sel[f"hd95{suffix}"], "{:.1f}") if f"hd95{suffix}" in sel else "-"]
        cells += [_mean_sd(sel[f"{key}{suffix}"], "{:.3f}" if key == "jaccard" else "{:.2f}")
                  if f"{key}{suffix}" in sel else "-" for key, _ in surface]  # fmt: skip
        cells += [_mean_sd(sel.best_val_dice)]
        paired = paired_difference(runs, method, setting, metric=dice) if method not in (LOWER, UPPER, PAIRED) else None
        cells += [_mean_sd(gaps.closed, "{:.0%}") if not gaps.empty else "",
                  " ".join("yes" if b else "no" for b in gaps.beats_lower) if not gaps.empty else "",
                  _paired_cell(paired), f"{sel.cpu_seconds.sum() / 3600:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _plot_curves(runs: pd.DataFrame, root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in set(runs.method)]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.2), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for row in runs[runs.method == method].itertuples():
            curve_path = root / row.run_dir / "eval" / "val_curve.csv"
            if curve_path.is_file():
                curve = pd.read_csv(curve_path)
                ax.plot(curve.iteration, curve.val_mean_dice, label=f"{row.setting} s{row.seed}", lw=1)
        ax.set(title=method, xlabel="iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # runs kept as records without a curve draw nothing
            ax.legend(fontsize=6)
    axes[0][0].set_ylabel("validation Dice (per volume)")
    fig.tight_layout()
    save_figure(fig, root / "val_curves.png")
