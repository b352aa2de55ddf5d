"""Accuracy benchmark: the protocol of the pseudo-label papers on medssl's tasks (``medssl bench accuracy``).

For each task (synthetic lung vessels in 3D, binary; synthetic BraTS as 2D axial slices, WT/TC/ET), each seed (a
different split, so a different labelled subset) and each labelled fraction, every method trains with the task's
bundle for the same number of iterations (:func:`medssl.workflows.runs.train_method`):

- ``lower_bound``: supervised on the labelled cases only; ``upper_bound``: supervised with every training case
  labelled (one run per seed, the same for every fraction);
- every variant of :data:`medssl.methods.VARIANTS` that trains on unlabelled images: ``segpl``, ``bpl_kl_only``,
  ``bpl_elbo`` (EM pseudo-labels with a fixed and with a learned threshold), ``ts_ce``, ``ts_gce``, ``ts_bce``,
  ``ts_sce`` (students trained on the pseudo-labels of a teacher, the lower-bound model of the same fraction and
  seed, with cross-entropy and the robust losses), and ``paired_lower_bound``: the lower bound on the methods' random
  stream (SegPL with its loss weighted 0: unlabelled images drawn and passed forward, nothing learned from them), so
  that a method's difference from it is what its unsupervised loss did, not a different draw of the supervised run.

Each model is scored on the test cases (Dice of the best validation checkpoint; per region for BraTS) and, as paper
000 reports robustness, under Gaussian noise of growing strength and an FGSM attack of growing epsilon. Results:
``runs.csv`` (every run), ``robustness.csv``, ``table.md`` (mean (sd) Dice per method and fraction, and the fraction
of the lower-to-upper gap each method closes), ``dice_vs_fraction.png`` and ``robustness.png``.

Here: the chains of runs and how they are scheduled; the presets in :mod:`medssl.bench.presets`, robustness in
:mod:`medssl.bench.robustness`, the result files in :mod:`medssl.bench.results` and the summary in
:mod:`medssl.bench.accuracy_report`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medssl.bench.accuracy_report import summarize
from medssl.workflows.runs import RunResult, teacher_pseudolabels, train_method
from medssl.bench.presets import PRESETS, Preset, TaskSetting, dataset
from medssl.bench.results import (
    ROBUST_KEY,
    RUN_KEY,
    merge_rows,
    read_rows,
    row_key,
    run_paths,
    teacher_dir,
    write_rows,
)
from medssl.bench.robustness import robustness
from medssl.workflows.tasks import BOUNDS, METHODS, TASKS, reads_pseudo_labels
from medssl.data.split import split_datalist_file

__all__ = ["run_accuracy"]


def _record(result: RunResult, seed: int, fraction: float, extra: dict[str, Any]) -> dict[str, Any]:
    row = {
        "task": result.task,
        "method": result.method,
        "seed": seed,
        "labeled_fraction": fraction,
        "iterations": result.iterations,
        "train_seconds": round(result.seconds, 2),
        "dice_mean": result.test_dice["mean"],
        "best_val_dice": max((v["val_mean_dice"] for v in result.val_curve), default=float("nan")),
        "collapsed_at": result.collapsed_at,
        **extra,
    }
    row.update({f"dice_{k}": v for k, v in result.test_dice.items() if k not in ("mean", "foreground")})
    return row


@dataclass(frozen=True)
class _Chain:
    """The runs of one task and seed: the upper bound, then per fraction the lower bound (the teacher) and the rest."""

    task: str
    seed: int
    setting: TaskSetting
    spec: Preset
    preset: str
    out: Path
    dataset: Path
    methods: tuple[str, ...]
    fractions: tuple[float, ...]
    iterations: int
    device: str | None
    threads: int | None
    skip: frozenset[tuple[str, str, int, float]]

    @property
    def folder(self) -> Path:
        return self.out / self.task / f"seed{self.seed}"


def _run_chain(chain: _Chain) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run (or finish) one chain; its rows are saved in its folder after every run, so it resumes where it stopped."""
    if chain.threads:
        torch.set_num_threads(chain.threads)
    task, seed, spec, setting = chain.task, chain.seed, chain.spec, chain.setting
    runs_csv, robust_csv = chain.folder / "runs.csv", chain.folder / "robustness.csv"
    rows, robust_rows = read_rows(runs_csv), read_rows(robust_csv)
    finished = set(chain.skip) | {row_key(r, RUN_KEY) for r in rows}
    splits = {
        f: split_datalist_file(
            chain.dataset, chain.folder / f"split_{f:.2f}.json", f, spec.val_fraction, spec.test_fraction, seed
        )
        for f in chain.fractions
    }

    def one(method: str, fraction: float) -> None:
        if (task, method, seed, fraction) in finished:
            return
        datalist_path, run_dir = run_paths(chain.out, task, method, seed, fraction)
        print(f"[{task} seed {seed} {fraction:.0%}] {method} ({chain.iterations} iterations)", flush=True)
        result = train_method(
            task,
            method,
            datalist_path,
            run_dir,
            chain.iterations,
            setting.evaluations,
            setting.overrides,
            chain.device,
            seed,
            warmup_fraction=setting.warmup_fraction,
            ramp_fraction=setting.ramp_fraction,
            after_training=lambda net, wf: robustness(net, wf, TASKS[task].eval_task, spec.noise_std, spec.fgsm_eps),
        )
        rows.append(_record(result, seed, fraction, {"preset": chain.preset}))
        robust_rows.extend(
            {**r, "task": task, "method": method, "seed": seed, "labeled_fraction": fraction} for r in result.extra
        )
        finished.add((task, method, seed, fraction))
        write_rows(rows, runs_csv)
        write_rows(robust_rows, robust_csv)

    if "upper_bound" in chain.methods:
        split_datalist_file(
            chain.dataset, chain.folder / "split_1.00.json", 1.0, spec.val_fraction, spec.test_fraction, seed
        )
        one("upper_bound", 1.0)  # one upper-bound run per seed stands for every fraction in the tables
    needs_teacher = any(reads_pseudo_labels(m) for m in chain.methods)
    for fraction in chain.fractions:
        run_root = chain.folder / f"frac{fraction:.2f}"
        if "lower_bound" in chain.methods or needs_teacher:
            one("lower_bound", fraction)
        teacher = teacher_dir(chain.out, task, seed, fraction)  # where every student reads
        if needs_teacher and not (teacher / "datalist.json").is_file():
            best = run_root / "lower_bound" / "models" / "model_best.pt"
            teacher_pseudolabels(task, best, splits[fraction], teacher, setting.overrides, chain.device)
        for method in chain.methods:
            if method not in BOUNDS:
                one(method, fraction)
    return rows, robust_rows


def run_accuracy(
    preset: str | Preset = "small",
    out: str | os.PathLike = "benchmarks/results/accuracy",
    tasks: Sequence[str] | None = None,
    datalist: str | None = None,
    device: str | None = None,
    methods: Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    iterations: int | None = None,
    jobs: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the benchmark; return every run and the robustness rows (also written, with tables and plots, to ``out``).

    The runs of each task and seed form a chain (the teacher of the teacher-student runs is the chain's lower bound);
    ``jobs`` chains run side by side in separate processes (default: the preset's), each with ``cores / jobs`` torch
    threads. Runs already finished in ``out`` are reused, so an interrupted benchmark continues where it stopped.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    spec = PRESETS[preset] if isinstance(preset, str) else preset
    preset_name = preset if isinstance(preset, str) else "custom"
    out = Path(out)
    tasks = list(tasks or spec.tasks)
    methods = list(methods or spec.methods)
    fractions = list(fractions or spec.fractions)
    seeds = list(seeds or spec.seeds)
    jobs = spec.jobs if jobs is None else jobs
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    if datalist and len(tasks) != 1:
        raise ValueError("--datalist is a single task's data: give one --task with it")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    for f in fractions:
        if not 0 < f < 1:
            raise ValueError(f"labelled fraction must be in (0, 1), got {f}")
    runs_csv, robust_csv = out / "runs.csv", out / "robustness.csv"
    rows, robust_rows = read_rows(runs_csv), read_rows(robust_csv)
    done = frozenset(row_key(r, RUN_KEY) for r in rows)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    chains = [
        _Chain(
            task, seed, spec.tasks[task], spec, preset_name, out, dataset(task, spec.tasks[task], out, datalist),
            tuple(methods), tuple(fractions), iterations or spec.tasks[task].iterations, device, threads, done,
        )  # fmt: skip
        for task in tasks
        for seed in seeds
    ]

    def collect(chain_rows: list[dict[str, Any]], chain_robust: list[dict[str, Any]]) -> None:
        rows[:] = merge_rows(rows + chain_rows, RUN_KEY)
        robust_rows[:] = merge_rows(robust_rows + chain_robust, ROBUST_KEY)
        write_rows(rows, runs_csv)
        write_rows(robust_rows, robust_csv)

    start = time.perf_counter()
    if jobs == 1:
        for chain in chains:
            collect(*_run_chain(chain))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_chain, chain) for chain in chains]
            for future in as_completed(futures):
                collect(*future.result())
    runs = pd.DataFrame(rows)
    robust = pd.DataFrame(robust_rows)
    summarize(runs, robust, out, spec, preset_name, time.perf_counter() - start, jobs=jobs)
    return runs, robust
