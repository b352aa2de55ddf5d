"""Robustness of a trained model: its test Dice under Gaussian noise and FGSM attacks of growing strength.

Paper 000 reports robustness, so the accuracy benchmark scores every run so (:func:`robustness`, called after
training), and :func:`rescore_robustness` scores the best checkpoints of finished runs again without training.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medssl.bench.accuracy_report import summarize
from medssl.workflows.runs import test_dataset, with_best_checkpoint
from medssl.bench.presets import PRESETS, Preset
from medssl.bench.results import RUN_KEY, read_rows, row_key, run_paths, write_rows
from medssl.workflows.tasks import TASKS

__all__ = ["robustness", "rescore_robustness"]


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

    from medssl.workflows.evaluation import evaluation_postprocessing

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
        datalist, run_dir = run_paths(out, task, method, seed, fraction)
        new = with_best_checkpoint(
            task, method, datalist, run_dir,
            lambda net, wf: robustness(net, wf, TASKS[task].eval_task, spec.noise_std, spec.fgsm_eps),
            spec.tasks[task].overrides, device, seed,
        )  # fmt: skip
        new_rows = [{**r, "task": task, "method": method, "seed": seed, "labeled_fraction": fraction} for r in new]
        # the run's chain keeps its rows too (a later run_accuracy merges them over the top-level table)
        for path in (robust_csv, out / task / f"seed{seed}" / "robustness.csv"):
            kept = [r for r in read_rows(path) if row_key(r, RUN_KEY) != (task, method, seed, fraction)]
            write_rows(kept + new_rows, path)
    robust = pd.DataFrame(read_rows(robust_csv))
    summarize(runs, robust, out, spec, preset if isinstance(preset, str) else "custom", time.perf_counter() - start)
    return robust
