"""Accuracy benchmark: the protocol of the pseudo-label papers on medssl's tasks (``medssl bench accuracy``).

For each task (synthetic lung vessels in 3D, binary; synthetic BraTS as 2D axial slices, WT/TC/ET), each seed (a
different split, so a different labelled subset) and each labelled fraction, every method trains with the task's
bundle for the same number of iterations (:func:`medssl.bench.experiment.train_method`):

- ``lower_bound``: supervised on the labelled cases only; ``upper_bound``: supervised with every training case
  labelled (one run per seed, the same for every fraction);
- ``segpl``, ``bpl_kl_only``, ``bpl_elbo``: EM pseudo-labels with a fixed and with a learned threshold;
- ``ts_ce``, ``ts_gce``, ``ts_bce``, ``ts_sce``: students trained on the pseudo-labels of a teacher, the lower-bound
  model of the same fraction and seed, with cross-entropy and the robust losses.

Each model is scored on the test cases (Dice of the best validation checkpoint; per region for BraTS) and, as paper
000 reports robustness, under Gaussian noise of growing strength and an FGSM attack of growing epsilon. Results:
``runs.csv`` (every run), ``robustness.csv``, ``table.md`` (mean (sd) Dice per method and fraction, and the fraction
of the lower-to-upper gap each method closes), ``dice_vs_fraction.png`` and ``robustness.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medssl.bench.experiment import (
    METHODS,
    TASKS,
    RunResult,
    teacher_pseudolabels,
    test_dataset,
    train_method,
    with_best_checkpoint,
)
from medssl.data.datalist import load_datalist
from medssl.data.io import atomic_path, write_json
from medssl.data.split import split_datalist_file
from medssl.data.synthetic import synthesize
from medssl.visualize import save_figure

__all__ = [
    "PRESETS",
    "Preset",
    "TaskSetting",
    "run_accuracy",
    "robustness",
    "rescore_robustness",
    "summarize",
    "add_arguments",
    "run",
    "main",
]

SSL_METHODS = [m for m in METHODS if m not in ("lower_bound", "upper_bound")]
#: Smallest upper-minus-lower Dice for which "share of the gap closed" means something.
MIN_GAP = 0.02


@dataclass(frozen=True)
class TaskSetting:
    """A task of a preset: its data and the bundle settings that size it."""

    cases: int
    size: int
    iterations: int
    overrides: dict[str, Any]
    evaluations: int = 5
    #: unsupervised weight warm-up and ramp, as fractions of the run (pseudo-labels start once the model segments)
    warmup_fraction: float = 0.2
    ramp_fraction: float = 0.3


@dataclass(frozen=True)
class Preset:
    """Tasks, fractions, seeds, methods and perturbations of one benchmark."""

    tasks: dict[str, TaskSetting]
    fractions: tuple[float, ...] = (0.3, 0.5, 0.7)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    noise_std: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    fgsm_eps: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05)
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    #: (task, seed) chains run side by side, each with cores / jobs torch threads; tiny networks on a CPU gain
    #: almost nothing from a second thread, so two single-threaded jobs nearly double the throughput there
    jobs: int = 1


_TINY_LUNG = {
    "roi_size": [32, 32, 32],
    "network_def#channels": [16, 32, 64],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 1,
    "feature_channels": 32,
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "num_samples": 1,
    "learning_rate": 0.003,
    "sw_batch_size": 8,
}
_TINY_BRATS2D = {
    "roi_size": [48, 48],
    "network_channels": [8, 16, 32, 64],
    "embed_dim": 64,
    "num_layers": 1,
    "num_heads": 4,
    "mlp_dim": 128,
    "batch_size": 4,
    "unlabeled_batch_size": 4,
    "num_samples": 1,
    "learning_rate": 0.003,
    "sw_batch_size": 8,
    "val_hd95": False,  # validation picks the best checkpoint by Dice; HD95 would double its cost here
}

PRESETS: dict[str, Preset] = {
    # Every method, fraction and seed on small phantoms: under an hour on 2 CPU cores.
    "small": Preset(
        tasks={
            "lung_vessel": TaskSetting(
                cases=16, size=48, iterations=150, overrides=_TINY_LUNG, warmup_fraction=0.4, ramp_fraction=0.3
            ),
            "brats2d": TaskSetting(
                cases=10, size=48, iterations=100, overrides=_TINY_BRATS2D, warmup_fraction=0.4, ramp_fraction=0.3
            ),
        },
        jobs=2,
    ),
    # For a GPU: the bundles' own networks and patch sizes, on larger phantoms or on real data (--datalist).
    "full": Preset(
        tasks={
            "lung_vessel": TaskSetting(cases=60, size=128, iterations=20000, overrides={}, evaluations=40),
            "brats2d": TaskSetting(cases=60, size=128, iterations=20000, overrides={}, evaluations=40),
        }
    ),
}


def _brats_slices(cases: int, size: int, seed: int, out: Path) -> Path:
    """Synthetic BraTS volumes, laid out as a BraTS 2018 folder and cut into axial slices by ``prepare_brats``."""
    from medssl.data.brats import MODALITIES, prepare_brats

    datalist = out / "slices" / "datalist.json"
    if datalist.is_file():
        return datalist
    synth = synthesize("brats", cases=cases, size=size, seed=seed, out=out / "synth")
    for entry in load_datalist(synth)["training"]:
        case = out / "brats" / entry["case_id"]
        case.mkdir(parents=True, exist_ok=True)
        for modality, image in zip(MODALITIES, entry["image"]):
            shutil.copyfile(image, case / f"{entry['case_id']}_{modality}.nii.gz")
        shutil.copyfile(entry["label"], case / f"{entry['case_id']}_seg.nii.gz")
    prepare_brats(out / "brats", out / "prepared", slices2d=out / "slices")
    return datalist


def _dataset(task: str, setting: TaskSetting, out: Path, datalist: str | None) -> Path:
    if datalist:
        return Path(datalist)
    if task == "lung_vessel":
        path = out / "data" / "lung_vessel" / "dataset.json"
        return (
            path if path.is_file() else synthesize("lung_vessel", setting.cases, setting.size, seed=0, out=path.parent)
        )
    return _brats_slices(setting.cases, setting.size, seed=0, out=out / "data" / "brats2d")


def robustness(
    network: torch.nn.Module,
    wf: Any,
    eval_task: str,
    noise_std: Sequence[float],
    fgsm_eps: Sequence[float],
) -> list[dict[str, Any]]:
    """Test Dice of ``network`` under Gaussian noise (std in units of the normalised image) and FGSM attacks.

    FGSM moves each test image by ``eps * sign(grad)`` of the bundle's supervised loss against the ground truth,
    through sliding-window inference; ``eps`` is in the same units as the noise.
    """
    from monai.data import DataLoader, decollate_batch
    from monai.metrics import DiceMetric

    from medssl.engines.evaluation import evaluation_postprocessing

    device = torch.device(wf.parser.get_parsed_content("device"))
    loss_fn = wf.parser.get_parsed_content("loss")
    post = evaluation_postprocessing(eval_task)
    # every perturbation level reads the same pre-processed test scans: load them once
    loader = DataLoader(test_dataset(wf, cached=True), batch_size=1)  # perturbations and Dice are per scan
    network = network.to(device).eval()
    generator = torch.Generator(device="cpu").manual_seed(0)
    inferer = wf.parser.get_parsed_content("validate#inferer")

    def infer(x: torch.Tensor) -> torch.Tensor:  # the evaluator's inferer, differentiable for FGSM
        return inferer(x, network)

    rows: list[dict[str, Any]] = []
    clean: float | None = None
    for kind, levels in (("noise", noise_std), ("fgsm", fgsm_eps)):
        for level in levels:
            if level == 0 and clean is not None:  # no perturbation: the clean Dice, already measured
                rows.append({"perturbation": kind, "level": level, "dice": clean})
                continue
            # "mean" over every (image, region) pair with a non-empty ground truth: as MONAI's MeanDice, which scores
            # the clean test Dice, so level 0 is that Dice for binary and BraTS tasks alike
            metric = DiceMetric(include_background=True, reduction="mean")
            for batch in loader:
                image, label = batch["image"].to(device), batch["label"].to(device)
                if kind == "noise" and level > 0:
                    noise = torch.randn(image.shape, generator=generator).to(device)
                    image = image + level * noise
                elif kind == "fgsm" and level > 0:
                    image = image.clone().requires_grad_(True)
                    loss_fn(infer(image), label).backward()
                    image = (image + level * image.grad.sign()).detach()
                with torch.no_grad():
                    logits = infer(image)
                cases = [post({"pred": p, "label": y}) for p, y in zip(decollate_batch(logits), decollate_batch(label))]
                metric(y_pred=[c["pred"] for c in cases], y=[c["label"] for c in cases])  # channel-first, no batch dim
            rows.append({"perturbation": kind, "level": level, "dice": float(metric.aggregate())})
            if level == 0:
                clean = rows[-1]["dice"]
    network.zero_grad(set_to_none=True)
    return rows


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


RUN_KEY = ["task", "method", "seed", "labeled_fraction"]
ROBUST_KEY = RUN_KEY + ["perturbation", "level"]


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


def _read_csv(path: Path) -> list[dict[str, Any]]:
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _key(row: dict[str, Any], columns: Sequence[str]) -> tuple:
    return tuple(float(row[c]) if c in ("labeled_fraction", "level") else row[c] for c in columns)


def _merge(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per key, the last one given winning (chains' rows come after older top-level rows)."""
    return list({_key(r, columns): r for r in rows}.values())


def _run_chain(chain: _Chain) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run (or finish) one chain; its rows are saved in its folder after every run, so it resumes where it stopped."""
    if chain.threads:
        torch.set_num_threads(chain.threads)
    task, seed, spec, setting = chain.task, chain.seed, chain.spec, chain.setting
    runs_csv, robust_csv = chain.folder / "runs.csv", chain.folder / "robustness.csv"
    rows, robust_rows = _read_csv(runs_csv), _read_csv(robust_csv)
    finished = set(chain.skip) | {_key(r, RUN_KEY) for r in rows}
    splits = {
        f: split_datalist_file(
            chain.dataset, chain.folder / f"split_{f:.2f}.json", f, spec.val_fraction, spec.test_fraction, seed
        )
        for f in chain.fractions
    }

    def one(method: str, fraction: float) -> None:
        if (task, method, seed, fraction) in finished:
            return
        datalist_path, run_dir = _run_paths(chain.out, task, method, seed, fraction)
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
        _write_csv(rows, runs_csv)
        _write_csv(robust_rows, robust_csv)

    if "upper_bound" in chain.methods:
        split_datalist_file(
            chain.dataset, chain.folder / "split_1.00.json", 1.0, spec.val_fraction, spec.test_fraction, seed
        )
        one("upper_bound", 1.0)  # one upper-bound run per seed stands for every fraction in the tables
    needs_teacher = any(m.startswith("ts_") for m in chain.methods)
    for fraction in chain.fractions:
        run_root = chain.folder / f"frac{fraction:.2f}"
        if "lower_bound" in chain.methods or needs_teacher:
            one("lower_bound", fraction)
        teacher_list = _run_paths(chain.out, task, "ts_ce", seed, fraction)[0]  # where every student reads
        if needs_teacher and not teacher_list.is_file():
            best = run_root / "lower_bound" / "models" / "model_best.pt"
            teacher_pseudolabels(task, best, splits[fraction], run_root / "teacher", setting.overrides, chain.device)
        for method in chain.methods:
            if method not in ("lower_bound", "upper_bound"):
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
    rows, robust_rows = _read_csv(runs_csv), _read_csv(robust_csv)
    done = frozenset(_key(r, RUN_KEY) for r in rows)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    chains = [
        _Chain(
            task, seed, spec.tasks[task], spec, preset_name, out, _dataset(task, spec.tasks[task], out, datalist),
            tuple(methods), tuple(fractions), iterations or spec.tasks[task].iterations, device, threads, done,
        )  # fmt: skip
        for task in tasks
        for seed in seeds
    ]

    def collect(chain_rows: list[dict[str, Any]], chain_robust: list[dict[str, Any]]) -> None:
        rows[:] = _merge(rows + chain_rows, RUN_KEY)
        robust_rows[:] = _merge(robust_rows + chain_robust, ROBUST_KEY)
        _write_csv(rows, runs_csv)
        _write_csv(robust_rows, robust_csv)

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


def _run_paths(out: Path, task: str, method: str, seed: int, fraction: float) -> tuple[Path, Path]:
    """(datalist, run folder) of one run, laid out as :func:`run_accuracy` lays them out."""
    split_dir = out / task / f"seed{seed}"
    if method == "upper_bound":
        return split_dir / "split_1.00.json", split_dir / "upper_bound"
    run_root = split_dir / f"frac{fraction:.2f}"
    datalist = (
        run_root / "teacher" / "datalist.json" if method.startswith("ts_") else split_dir / f"split_{fraction:.2f}.json"
    )
    return datalist, run_root / method


def rescore_robustness(
    preset: str | Preset = "small",
    out: str | os.PathLike = "benchmarks/results/accuracy",
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Recompute the robustness rows of finished runs from their best checkpoints (no training), and the summary.

    For results written before a change to :func:`robustness`; the runs' own rows in ``runs.csv`` are kept.
    """
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    out = Path(out)
    runs = pd.read_csv(out / "runs.csv")
    robust_csv = out / "robustness.csv"
    selected = runs[runs["task"].isin(tasks or list(spec.tasks)) & runs["seed"].isin(seeds or list(spec.seeds))]
    start = time.perf_counter()
    for row in selected.itertuples():
        task, method, seed, fraction = row.task, row.method, int(row.seed), float(row.labeled_fraction)
        print(f"[{task} seed {seed} {fraction:.0%}] {method}: robustness of the best checkpoint", flush=True)
        datalist, run_dir = _run_paths(out, task, method, seed, fraction)
        new = with_best_checkpoint(
            task, method, datalist, run_dir,
            lambda net, wf: robustness(net, wf, TASKS[task].eval_task, spec.noise_std, spec.fgsm_eps),
            spec.tasks[task].overrides, device, seed,
        )  # fmt: skip
        new_rows = [{**r, "task": task, "method": method, "seed": seed, "labeled_fraction": fraction} for r in new]
        # the run's chain keeps its rows too (a later run_accuracy merges them over the top-level table)
        for path in (robust_csv, out / task / f"seed{seed}" / "robustness.csv"):
            kept = [r for r in _read_csv(path) if _key(r, RUN_KEY) != (task, method, seed, fraction)]
            _write_csv(kept + new_rows, path)
    robust = pd.DataFrame(_read_csv(robust_csv))
    summarize(runs, robust, out, spec, preset if isinstance(preset, str) else "custom", time.perf_counter() - start)
    return robust


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ({sd:.3f})"


def _machine() -> dict[str, Any]:
    import monai

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


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
    lines = [
        f"# Accuracy benchmark, preset `{preset}`",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d}; machine: {json.dumps(_machine())}; "
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
    write_json({"preset": preset, "machine": _machine(), "seconds": seconds, "jobs": jobs}, out / "run_info.json")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``medssl bench accuracy``."""
    from medssl.bench.track import TRACKS

    parser.add_argument(
        "--track", choices=sorted(TRACKS), default=None,
        help="a real-data track (instead of the phantom presets): acdc needs --data, an SSL4MIS-layout ACDC folder",
    )  # fmt: skip
    parser.add_argument("--protocol", default="cpu", help="the track's protocol: cpu, paper or smoke (default cpu)")
    parser.add_argument("--data", default=None, help="the track's real data folder")
    parser.add_argument(
        "--setting", action="append", help="labelled setting of a track (acdc: 3 or 7 patients); repeatable"
    )
    parser.add_argument("--report", action="store_true", help="with --track: only write the report of finished runs")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results/accuracy[/<track>])")
    parser.add_argument("--task", action="append", choices=sorted(set(TASKS) - {"brats3d"}), help="repeat for several")
    parser.add_argument("--datalist", default=None, help="real data prepared with `medssl prepare` (one --task)")
    parser.add_argument("--method", action="append", choices=sorted(METHODS), help="repeat for several")
    parser.add_argument("--fraction", action="append", type=float, help="labelled fraction; repeat for several")
    parser.add_argument("--seed", action="append", type=int, help="repeat for several")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per run (default: the preset's)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument(
        "--jobs", type=int, default=None, help="(task, seed) chains run side by side (default: the preset's)"
    )
    parser.add_argument(
        "--rescore-robustness",
        action="store_true",
        help="recompute the robustness of finished runs from their best checkpoints (no training)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``medssl bench accuracy`` from parsed arguments."""
    if args.track:
        from medssl.bench.track_report import run_track_command

        return run_track_command(args)
    args.out = args.out or "benchmarks/results/accuracy"
    if args.rescore_robustness:
        rescore_robustness(args.preset, args.out, tasks=args.task, seeds=args.seed, device=args.device)
        print(Path(args.out, "table.md").read_text())
        return 0
    runs, _ = run_accuracy(
        args.preset,
        args.out,
        tasks=args.task,
        datalist=args.datalist,
        device=args.device,
        methods=args.method,
        fractions=args.fraction,
        seeds=args.seed,
        iterations=args.iterations,
        jobs=args.jobs,
    )
    print(Path(args.out, "table.md").read_text())
    print(f"{len(runs)} runs; results in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/accuracy.py``: the same as ``medssl bench accuracy``."""
    import sys

    from medssl.cli import main as cli_main

    return cli_main(["bench", "accuracy", *(sys.argv[1:] if argv is None else argv)])
