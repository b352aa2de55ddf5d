"""``medssl demo``: does semi-supervised training help on this kind of data, and what does it cost?

On synthetic lung-vessel CT that medssl generates itself (no download), cases from several scanners (the
``scanner`` variation), at 30% labelled, the demo trains the supervised lower bound and FixMatch with the learned
threshold (on the real ACDC track within 0.02 Dice of medssl's best, the same method with a fixed cut at 0.5; see
:data:`DEMO_METHODS`) with the lung-vessel bundle's own components, each for the same number of iterations,
evaluates each on held-out test cases with sliding-window inference, and writes to the output folder:

- ``results.csv`` and ``results.md``: test Dice (mean and sd over test cases) per method, best validation Dice,
  iterations and training time; the table is also printed;
- ``predictions.png``: a test case's image, ground truth and each method's prediction side by side (an axial slice
  and a maximum-intensity projection);
- ``curves.png``: training loss, validation Dice and the learned threshold's mean and spread against iteration;
- ``runs/<method>/models/``: each method's checkpoints (``model_last.pt``, ``model_best.pt``), and ``data/``, the data.

The iteration budget is calibrated from ``minutes`` by timing a few iterations and a validation pass first, so the
demo fills its time on a laptop-class CPU and trains longer on a GPU; ``iterations`` fixes it instead. It never
trains fewer than :data:`MIN_ITERATIONS` iterations per method, the fewest at which the comparison shows what the
unlabelled cases add: a slower machine takes longer than ``minutes`` and says so, with an estimate, before it
trains. Both methods see the same labelled batches at every iteration (each data stream of a run draws from a
generator of its own, :mod:`medssl.data.loaders`), so the comparison is about the unlabelled cases. Where the
semi-supervised method still ends below the supervised one, the demo says that the run was too short to show the
effect.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medssl.workflows.runs import RunResult, train_method
from medssl.workflows.sizes import DEMO_LUNG
from medssl.data.datalist import load_datalist
from medssl.data.io import atomic_path
from medssl.data.split import split_datalist_file
from medssl.data.synthetic import synthesize
from medssl.device import resolve_device
from medssl.inference.predict import make_sliding_window_inferer
from medssl.visualize import save_figure, save_overlay_grid

__all__ = [
    "run_demo",
    "DEMO_CASES",
    "DEMO_SIZE",
    "DEMO_METHODS",
    "DEMO_OVERRIDES",
    "LABELED_FRACTION",
    "DEMO_VARIATION",
    "GAP_ITERATIONS",
    "Calibration",
    "calibrate_iterations",
    "MIN_ITERATIONS",
    "label_gap",
    "plot_curves",
    "results_table",
]

DEMO_CASES = 24
DEMO_SIZE = 64
LABELED_FRACTION = 0.3
VAL_FRACTION = 0.15
TEST_FRACTION = 0.25
#: How much the demo's phantoms differ (medssl.data.phantoms.VARIATIONS): ``scanner``, each case its own
#: calibration, contrast phase, dose and vessel calibre. With ``case`` phantoms (one scanner) all labels add 0.02
#: Dice over 30% of them at the demo's budget, so no method can show anything; with ``scanner`` they add 0.15
#: (benchmarks/RESULTS.md, `medssl demo --gap`).
DEMO_VARIATION = "scanner"
#: The methods the demo compares, as it names them -> variants of :data:`medssl.methods.VARIANTS`: the supervised
#: lower bound and FixMatch with the Bayesian threshold head's learned cut (drawn in curves.png), medssl's own
#: combination. On ACDC it closes 70% of the gap over three seeds, the same method with a fixed cut at 0.5 74% (they
#: tie on seed 0); on lung phantoms of narrower scanner ranges, at 700 iterations, they scored 0.751 and 0.747
#: (benchmarks/RESULTS.md). Two methods, so that each trains about twice as long as three would in the same 10
#: minutes: the gap between 30% and all labelled opens only after a few hundred iterations.
DEMO_METHODS = {"supervised": "supervised", "fixmatch_learned": "fixmatch_learned"}
#: The lung-vessel bundle at a size that trains in minutes on a CPU: 48^3 patches, a 4-level UNet.
DEMO_OVERRIDES: dict[str, Any] = DEMO_LUNG.overrides()
EVALUATIONS = 10
#: The fewest iterations per method at which the demo's comparison means something: below it, FixMatch's loss on
#: the unlabelled cases (from half the run) has not had the time to act, and the run says nothing about them (an
#: AMD EPYC of 2 cores, 240 iterations: supervised 0.488, FixMatch with the learned threshold 0.231). Measured with
#: ``medssl demo --iterations N`` (seed 0, both methods on the same labelled batches, benchmarks/RESULTS.md "Demo"):
#: 250 iterations -0.365 test Dice (FixMatch collapsed), 400 +0.016 (validation +0.076), 550 +0.051 (validation
#: +0.095); 700-800 gave +0.10 to +0.15 before. The demo runs at least this many, taking longer than ``--minutes``
#: on a slow machine (and saying so before it trains).
MIN_ITERATIONS = 550
#: Seconds of the demo's fixed costs besides training and validation: building each run, figures.
FIXED_SECONDS = 30.0
#: The unsupervised loss starts at half the run and reaches full weight at 80%: the supervised model of this size
#: segments nothing for its first 80-100 iterations, and pseudo-labels taken earlier are all background, which
#: teaches the SSL models to predict nothing (SegPL ended at Dice 0.04 with a start at 20% of 240 iterations).
WARMUP_FRACTION = 0.5
RAMP_FRACTION = 0.3
#: The budget of ``medssl demo --gap``: about what ``make demo`` calibrates itself to on 2 idle CPU cores.
GAP_ITERATIONS = 700


@dataclass(frozen=True)
class Calibration:
    """What the demo measured before training: its costs on this machine, and the iterations it chose."""

    #: iterations per method
    iterations: int
    #: steady-state seconds of one iteration of every method together
    per_round: float
    #: seconds of one validation pass of every method together
    per_validation: float
    #: estimated minutes of the whole demo, from its start
    minutes: float
    #: the budget fits fewer than :data:`MIN_ITERATIONS`, so the demo runs longer than asked
    over_budget: bool


def calibrate_iterations(
    datalist: str | os.PathLike,
    work_dir: str | os.PathLike,
    minutes: float,
    elapsed: float,
    device: str | torch.device | None,
    overrides: dict[str, Any],
    methods: Sequence[str],
    probe_iterations: int = 10,
    min_iterations: int | None = None,
) -> Calibration:
    """Iterations per method that fill ``minutes`` (less ``elapsed`` seconds) for all ``methods``, never fewer than
    ``min_iterations`` (default :data:`MIN_ITERATIONS`).

    Times ``probe_iterations`` of each method (their costs differ: two views, a teacher's pass, mixed batches) and
    the validation pass that ends the probe. An iteration's cost is the median over the probe's second half: the
    first iterations of a process pay for memory allocation and kernel selection (on a 2-core AMD EPYC the first
    probe, a median over iterations 2-6, took 1.83 s for an iteration of both methods where training then ran at
    about 1.3 s). The budget then pays for training, :data:`EVALUATIONS` validations and the test evaluation of
    each method (as long as the validation set's share of a validation pass for every test case, with
    :data:`FIXED_SECONDS` of set-up and figures); what is left sets the iterations, a multiple of
    :data:`EVALUATIONS`.
    """
    floor = MIN_ITERATIONS if min_iterations is None else int(min_iterations)
    split = load_datalist(datalist)
    test_share = len(split["testing"]) / max(len(split["validation"]), 1)

    def probe(method: str) -> tuple[float, float]:
        times: list[float] = []
        result = train_method(
            "lung_vessel",
            method,
            datalist,
            Path(work_dir) / method,
            iterations=probe_iterations,
            evaluations=1,
            overrides=overrides,
            device=device,
            warmup_fraction=0.0,  # timed as after its warm-up: every pass of the method from the first iteration
            ramp_fraction=0.0,
            on_iteration=lambda engine: times.append(time.perf_counter()),
        )
        steps = np.diff(times)[len(times) // 2 - 1 :]  # the second half: the steady state
        step = float(np.median(steps)) if len(steps) else float("inf")
        # the run's time less its iterations is the validation pass (and the run's set-up)
        validation = max(result.seconds - step * probe_iterations, 0.0)
        return step, validation

    costs = [probe(DEMO_METHODS[m]) for m in methods]
    per_round = sum(step for step, _ in costs)
    per_validation = sum(validation for _, validation in costs)
    fixed = FIXED_SECONDS + per_validation * (EVALUATIONS + test_share)
    budget = minutes * 60.0 - elapsed - fixed
    iterations = max(int(budget / per_round) // EVALUATIONS * EVALUATIONS, 0)
    over_budget = iterations < floor
    iterations = max(iterations, floor)
    estimate = (elapsed + fixed + iterations * per_round) / 60.0
    return Calibration(iterations, per_round, per_validation, estimate, over_budget)


def _predict(result: RunResult, image: torch.Tensor, roi: Sequence[int], device: torch.device) -> np.ndarray:
    network = result.network.to(device).eval()
    inferer = make_sliding_window_inferer(roi, device, sw_batch_size=4)
    with torch.inference_mode():
        logits = inferer(image[None].to(device), network)
    return (torch.sigmoid(logits[0, 0]) > 0.5).cpu().numpy().astype(np.uint8)


def results_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """One row per method: test Dice (mean, sd over test cases), best validation Dice, iterations, seconds."""
    rows = []
    for name, r in results.items():
        per_case = pd.read_csv(r.run_dir / "test" / "per_case.csv")
        dice = per_case["dice_foreground"] if "dice_foreground" in per_case else per_case.filter(like="dice").iloc[:, 0]
        best_val = max((v["val_mean_dice"] for v in r.val_curve), default=float("nan"))
        rows.append(
            {
                "method": name,
                "test_dice_mean": float(dice.mean()),
                "test_dice_sd": float(dice.std(ddof=1)) if len(dice) > 1 else 0.0,
                "test_cases": len(dice),
                "best_val_dice": best_val,
                "iterations": r.iterations,
                "train_seconds": round(r.seconds, 1),
            }
        )
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame, header: str) -> str:
    lines = [header, "", "| method | test Dice, mean (sd) | best validation Dice | iterations | training time (s) |"]
    lines.append("|---|---|---|---|---|")
    for row in table.itertuples():
        lines.append(
            f"| {row.method} | {row.test_dice_mean:.3f} ({row.test_dice_sd:.3f}) | {row.best_val_dice:.3f} | "
            f"{row.iterations} | {row.train_seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(results: dict[str, RunResult], path: str | os.PathLike) -> Path:
    """Training loss (moving average), validation Dice and the threshold's mean and spread against iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, r) in enumerate(results.items()):
        color = cycle[i % len(cycle)]  # one colour per method in every panel
        train = pd.DataFrame(r.train_curve)
        if not train.empty:
            window = max(1, len(train) // 20)
            axes[0].plot(train["iteration"], train["loss"].rolling(window, min_periods=1).mean(), color=color, label=name)
            if name == "segpl":  # a fixed cut, not a learned one
                axes[2].axhline(0.5, color=color, linestyle="--", label="segpl (fixed 0.5)")
            elif "threshold_mean" in train:
                mean = train["threshold_mean"].rolling(window, min_periods=1).mean()
                std = train["threshold_std"].rolling(window, min_periods=1).mean()
                axes[2].plot(train["iteration"], mean, color=color, label=f"{name} (mean)")
                axes[2].fill_between(train["iteration"], mean - std, mean + std, color=color, alpha=0.25)
        val = pd.DataFrame(r.val_curve)
        if not val.empty:
            axes[1].plot(val["iteration"], val["val_mean_dice"], marker="o", color=color, label=name)
    axes[0].set(title="training loss", xlabel="iteration")
    axes[1].set(title="validation Dice", xlabel="iteration", ylim=(0, 1))
    axes[2].set(title="pseudo-label threshold (mean ± sd)", xlabel="iteration", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _verdict(table: pd.DataFrame, iterations: int) -> str:
    """What the table says in words: the semi-supervised method's gain over the supervised one, or, where it ends
    below it, that the run was too short to show the effect."""
    dice = table.set_index("method")["test_dice_mean"]
    names = list(DEMO_METHODS)
    supervised, ssl = names[0], names[-1]
    gain = float(dice[ssl] - dice[supervised])
    if gain > 0:
        return (
            f"With the unlabelled cases, {ssl} scores {gain:+.3f} test Dice over the supervised model trained on "
            f"the same labelled batches ({iterations} iterations each)."
        )
    short = (
        f"{iterations} iterations are fewer than the {MIN_ITERATIONS} that the comparison needs: "
        if iterations < MIN_ITERATIONS
        else ""
    )
    return (
        f"{ssl} ended {-gain:.3f} test Dice below the supervised model: {short}this run was too short to show what "
        f"the unlabelled cases add (its loss on them starts at half the run). Train longer (--iterations or "
        f"--minutes) to see the effect; benchmarks/RESULTS.md has the measured runs."
    )


def _write_table(table: pd.DataFrame, header: str, out: Path, stem: str, footer: str = "") -> str:
    """Write ``table`` to ``out/<stem>.csv`` and, under ``header`` (and above ``footer``), to ``out/<stem>.md``
    (atomically); return the markdown."""
    with atomic_path(out / f"{stem}.csv") as tmp:
        table.to_csv(tmp, index=False)
    markdown = _markdown(table, header) + (f"\n{footer}\n" if footer else "")
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
    return markdown


def _demo_split(out: Path, cases: int, size: int, seed: int, labeled_fraction: float, variation: str) -> Path:
    """The demo's phantoms in ``out/data`` (generated once per variation) split at ``labeled_fraction``; validation
    and test cases do not depend on the fraction."""
    data_dir = out / "data"
    dataset = data_dir / "dataset.json"
    if not dataset.is_file() or load_datalist(dataset).get("variation", "case") != variation:
        print(f"generating {cases} synthetic lung-vessel CT cases ({variation} variation) of {size}^3 voxels")
        synthesize(task="lung_vessel", cases=cases, size=size, seed=seed, out=data_dir, variation=variation)
    name = "split.json" if labeled_fraction == LABELED_FRACTION else f"split_{labeled_fraction:.2f}.json"
    return split_datalist_file(dataset, out / name, labeled_fraction, VAL_FRACTION, TEST_FRACTION, seed)


def label_gap(
    out: str | os.PathLike = "demo_gap",
    iterations: int = GAP_ITERATIONS,
    device: str | None = None,
    seed: int = 0,
    cases: int = DEMO_CASES,
    size: int = DEMO_SIZE,
    overrides: dict[str, Any] | None = None,
    variation: str = DEMO_VARIATION,
) -> pd.DataFrame:
    """Whether the demo's data leave unlabelled cases anything to add: the supervised model on the demo's split
    (:data:`LABELED_FRACTION` labelled) against the same model with every training case labelled, on the same
    validation and test cases, seed and budget. Writes ``gap.csv`` and ``gap.md`` to ``out``; returns the table, one
    row per labelled setting."""
    dev = resolve_device(device)
    settings = {**DEMO_OVERRIDES, **(overrides or {})}
    out = Path(out)
    results: dict[str, RunResult] = {}
    for fraction in (LABELED_FRACTION, 1.0):
        split_path = _demo_split(out, cases, size, seed, fraction, variation)
        name = f"{fraction:.0%} labelled"
        print(f"training supervised, {name} ({iterations} iterations)")
        results[name] = train_method(
            "lung_vessel", DEMO_METHODS["supervised"], split_path, out / "runs" / f"supervised_{fraction:.2f}",
            iterations, EVALUATIONS, settings, dev, seed,
        )  # fmt: skip
    table = results_table(results)
    gap = float(table["test_dice_mean"].iloc[1] - table["test_dice_mean"].iloc[0])
    header = (
        f"Synthetic lung-vessel CT ({variation} variation), supervised only, {iterations} iterations on {dev}: "
        f"all labelled minus {LABELED_FRACTION:.0%} labelled = {gap:.3f} test Dice."
    )
    print(_write_table(table, header, out, "gap"))
    return table


def run_demo(
    out: str | os.PathLike = "demo_output",
    minutes: float = 10.0,
    device: str | None = None,
    seed: int = 0,
    iterations: int | None = None,
    cases: int = DEMO_CASES,
    size: int = DEMO_SIZE,
    overrides: dict[str, Any] | None = None,
    variation: str = DEMO_VARIATION,
) -> pd.DataFrame:
    """Run the demo; return the results table (also written to ``out``).

    Args:
        out: output folder; the data go to ``out/data``, each method's run to ``out/runs/<method>``.
        minutes: time budget of the whole demo, from which the iteration budget is calibrated; on a machine too
            slow to run :data:`MIN_ITERATIONS` in it, the demo takes longer (and says so before it trains).
        device: torch device (default: CUDA when available).
        seed: seed of the phantoms, the split and the training runs.
        iterations: training iterations per method (overrides the calibration from ``minutes``).
        cases, size: number and size of the phantoms.
        overrides: bundle settings on top of :data:`DEMO_OVERRIDES`.
        variation: how much the phantoms differ (:data:`medssl.data.phantoms.VARIATIONS`).
    """
    start = time.perf_counter()
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    dev = resolve_device(device)
    settings = {**DEMO_OVERRIDES, **(overrides or {})}
    out = Path(out)
    split_path = _demo_split(out, cases, size, seed, LABELED_FRACTION, variation)
    split = load_datalist(split_path)
    print(
        f"split at {LABELED_FRACTION:.0%} labelled: {len(split['training'])} labelled, "
        f"{len(split['unlabeled'])} unlabelled, {len(split['validation'])} validation, {len(split['testing'])} test; "
        f"device {dev}"
    )
    if iterations is None:
        print("timing a few iterations to fit the budget...")
        cal = calibrate_iterations(
            split_path, out / "calibration", minutes, time.perf_counter() - start, dev, settings, list(DEMO_METHODS)
        )
        iterations = cal.iterations
        print(
            f"{cal.per_round:.2f} s per iteration of both methods, {cal.per_validation:.1f} s per validation: "
            f"{iterations} iterations per method, about {cal.minutes:.1f} minutes in all"
        )
        if cal.over_budget:
            print(
                f"NOTE: this machine needs about {cal.minutes:.1f} minutes, more than --minutes {minutes:g}: the "
                f"comparison needs at least {MIN_ITERATIONS} iterations per method (fewer show nothing about the "
                f"unlabelled cases), so the demo runs them rather than shrink the run"
            )
    elif iterations < MIN_ITERATIONS:
        print(
            f"NOTE: {iterations} iterations per method is below the {MIN_ITERATIONS} that the comparison needs: "
            "expect the semi-supervised method not to show its effect"
        )
    results: dict[str, RunResult] = {}
    for name, method in DEMO_METHODS.items():
        print(f"training {name} ({iterations} iterations)")
        results[name] = train_method(
            "lung_vessel", method, split_path, out / "runs" / name, iterations, EVALUATIONS, settings, dev, seed,
            warmup_fraction=WARMUP_FRACTION, ramp_fraction=RAMP_FRACTION,
        )  # fmt: skip
    table = results_table(results)
    header = (
        f"Synthetic lung-vessel CT ({variation} variation), {len(split['training'])} labelled and "
        f"{len(split['unlabeled'])} unlabelled cases ({LABELED_FRACTION:.0%} labelled), "
        f"Dice on {len(split['testing'])} test cases, {iterations} iterations per method on {dev}."
    )
    verdict = _verdict(table, iterations)
    markdown = _write_table(table, header, out, "results", footer=verdict)
    _save_predictions(results, split["testing"][0], settings["roi_size"], dev, out / "predictions.png")
    plot_curves(results, out / "curves.png")
    print()
    print(markdown)
    print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'predictions.png'}, {out / 'curves.png'}")
    print(f"checkpoints in {out / 'runs'}/<method>/models; done in {(time.perf_counter() - start) / 60:.1f} minutes")
    return table


def _save_predictions(
    results: dict[str, RunResult], entry: dict[str, Any], roi: Sequence[int], device: torch.device, path: Path
) -> Path:
    from medssl.transforms.presets import lung_vessel_transforms

    case = lung_vessel_transforms("eval")(dict(entry))
    image, label = case["image"], case["label"][0].numpy()
    shown = image[0].numpy()  # CT window mapped to [0, 1], in the orientation the network sees
    columns = [("ground truth", label)]
    mips = [("ground truth", label.max(axis=-1))]
    for name, r in results.items():
        pred = _predict(r, image, roi, device)
        inter = float((pred * label).sum())
        denom = float(pred.sum() + label.sum())
        dice = 2 * inter / denom if denom else 1.0
        columns.append((f"{name} (Dice {dice:.2f})", pred))
        mips.append((f"{name}", pred.max(axis=-1)))
    name = entry.get("case_id", Path(entry["image"]).name)
    z = int(np.argmax(label.sum(axis=(0, 1))))  # the axial slice with the most vessel
    rows = [
        (f"{name}, axial slice {z}", shown, columns),
        ("maximum-intensity projection", shown.max(axis=-1), mips),
    ]
    return save_overlay_grid(rows, path, z=z, window=(0, 1), title="test case: ground truth and predictions")
