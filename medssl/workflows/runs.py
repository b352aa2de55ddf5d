"""The training API: one run of one method with a bundle's own components, what the demo and the benchmarks repeat.

``train_method(task, method, datalist, run_dir, iterations)`` trains a bundle (a key of
:data:`~medssl.workflows.tasks.TASKS`) with a method (a variant of the registry, or a bound) and settings, and
returns the run's record (:class:`RunResult`: curves, test Dice, best checkpoint), also written to
``run_dir/result.json``.

A run parses a bundle's ``configs/train.json`` with MONAI's ``ConfigWorkflow`` (as ``python -m monai.bundle run``
would), overrides its size and budget, runs its trainer for a fixed number of iterations (``epochs`` x
``epoch_length``, validating after every epoch), records the training curves, then evaluates the best validation
checkpoint on the held-out test cases with sliding-window inference. Teacher-student runs first write the teacher's
pseudo-labels with the bundle's inference config, exactly as ``medssl pseudolabel`` does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from medssl.workflows.tasks import TASKS, TaskSpec, run_settings
from medssl.checkpoints import load_weights
from medssl.checks import check_choice
from medssl.data.io import write_json
from medssl.handlers.pseudo_label_stats import ssl_scalars
from medssl.workflows.bundle import config_workflow, device_overrides

__all__ = [
    "RunResult",
    "train_method",
    "with_best_checkpoint",
    "teacher_pseudolabels",
    "evaluate_checkpoint",
    "test_dataset",
]


@dataclass
class RunResult:
    """What one run leaves: its curves, the test Dice and where its checkpoints are."""

    task: str
    method: str
    run_dir: Path
    iterations: int
    seconds: float
    test_dice: dict[str, float]
    train_curve: list[dict[str, float]] = field(default_factory=list)
    val_curve: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: Path | None = None
    collapsed_at: int | None = None
    network: torch.nn.Module | None = field(default=None, repr=False)
    extra: Any = None

    @property
    def mean_dice(self) -> float:
        return self.test_dice["mean"]


def train_method(
    task: str,
    method: str,
    datalist: str | os.PathLike,
    run_dir: str | os.PathLike,
    iterations: int,
    evaluations: int = 10,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    warmup_fraction: float = 0.2,
    ramp_fraction: float = 0.3,
    on_iteration: Callable[[Any], None] | None = None,
    verbose: bool = False,
    after_training: Callable[[torch.nn.Module, Any], Any] | None = None,
) -> RunResult:
    """Train ``method`` with ``task``'s bundle on the split ``datalist`` for ``iterations`` iterations.

    Args:
        task: a key of :data:`TASKS`.
        method: a run name (:func:`~medssl.workflows.tasks.run_settings`): a bound or a variant of medssl.methods.
        datalist: a split written by ``medssl split`` (teacher-student: with the teacher's ``pseudo_label``).
        run_dir: the run's ``bundle_root``: checkpoints in ``models/``, logs in ``eval/``, results here.
        iterations: training iterations in all (the same budget for every method of a comparison).
        evaluations: validations during training (the run has this many epochs of ``iterations / evaluations``).
        overrides: more bundle settings (``roi_size``, ``network_def#channels``, batch sizes, ...).
        device: torch device (default: the bundle's, CUDA when available).
        seed: the run's seed (``set_determinism``).
        warmup_fraction, ramp_fraction: unsupervised weight warm-up and ramp, as fractions of the run.
        on_iteration: called with the trainer after each iteration.
        verbose: keep the bundle's per-iteration log lines (otherwise only the progress bar and warnings).
        after_training: called as ``f(network, workflow)`` with the best checkpoint loaded; its return value is
            the result's ``extra`` (the accuracy benchmark scores robustness this way).

    Returns:
        the curves, the test Dice of the best validation checkpoint and the checkpoint's path.
    """
    spec = TASKS[check_choice("task", task, tuple(TASKS))]
    settings = run_settings(method)
    if iterations < evaluations or evaluations < 1:
        raise ValueError(f"iterations ({iterations}) must be at least evaluations ({evaluations}) >= 1")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    epoch_length = iterations // evaluations
    values: dict[str, Any] = {
        "bundle_root": str(run_dir),
        "datalist": str(datalist),
        "labeled_fraction": None,
        "seed": seed,
        "epochs": evaluations,
        "val_interval": 1,
        "num_workers": 0,
        "cache_rate": 1.0,
        "method#warmup": warmup_fraction,
        "method#ramp": ramp_fraction,
        "train#trainer#epoch_length": epoch_length,
        **device_overrides(device),
        **settings,
        **dict(overrides or {}),
    }
    previous = logging.root.manager.disable
    if not verbose:  # the bundle's StatsHandler logs every iteration; keep the progress bar and warnings only
        logging.disable(logging.INFO)
    try:
        return _train(task, method, spec, values, run_dir, on_iteration, after_training)
    finally:
        logging.disable(previous)


def _train(
    task: str,
    method: str,
    spec: TaskSpec,
    values: dict[str, Any],
    run_dir: Path,
    on_iteration: Callable[[Any], None] | None,
    after_training: Callable[[torch.nn.Module, Any], Any] | None,
) -> RunResult:
    wf = config_workflow(spec.bundle, ["train.json"], values)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    train_curve: list[dict[str, float]] = []
    val_curve: list[dict[str, float]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: Any) -> None:
        train_curve.append({"iteration": engine.state.iteration, **ssl_scalars(engine.state.output)})
        if on_iteration is not None:
            on_iteration(engine)

    @evaluator.on(Events.COMPLETED)
    def _validated(engine: Any) -> None:
        val_curve.append(
            {"iteration": trainer.state.iteration, **{k: float(v) for k, v in engine.state.metrics.items()}}
        )

    start = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - start
    best = run_dir / "models" / "model_best.pt"
    network = wf.parser.get_parsed_content("network")
    if best.is_file():
        load_weights(network, best, map_location=wf.parser.get_parsed_content("device"))
    test_dice = evaluate_checkpoint(task, network, wf, run_dir / "test")
    extra = after_training(network, wf) if after_training is not None else None
    result = RunResult(
        task=task,
        method=method,
        run_dir=run_dir,
        iterations=trainer.state.iteration,
        seconds=seconds,
        test_dice=test_dice,
        train_curve=train_curve,
        val_curve=val_curve,
        best_checkpoint=best if best.is_file() else None,
        collapsed_at=getattr(trainer.state, "pseudo_label_collapsed", None),
        network=network,
        extra=extra,
    )
    wf.finalize()
    write_json(
        {"task": task, "method": method, "iterations": result.iterations, "seconds": seconds, "test_dice": test_dice},
        run_dir / "result.json",
    )
    return result


def with_best_checkpoint(
    task: str,
    method: str,
    datalist: str | os.PathLike,
    run_dir: str | os.PathLike,
    fn: Callable[[torch.nn.Module, Any], Any],
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> Any:
    """Call ``fn(network, workflow)`` with the best checkpoint of a finished run loaded, without training again.

    The workflow is the run's bundle workflow on ``datalist`` with ``overrides``, so ``fn`` sees the same split,
    pre-processing and settings as the run's ``after_training`` did (the accuracy benchmark rescores robustness so).
    """
    spec = TASKS[check_choice("task", task, tuple(TASKS))]
    best = Path(run_dir) / "models" / "model_best.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best}: the run has no best checkpoint")
    values = {
        "bundle_root": str(run_dir), "datalist": str(datalist), "labeled_fraction": None, "seed": seed,
        "num_workers": 0, "cache_rate": 0.0, **device_overrides(device), **run_settings(method),
        **dict(overrides or {}),
    }  # fmt: skip
    wf = config_workflow(spec.bundle, ["train.json"], values)
    wf.initialize()
    network = wf.parser.get_parsed_content("network")
    load_weights(network, best, map_location=wf.parser.get_parsed_content("device"))
    try:
        return fn(network, wf)
    finally:
        wf.finalize()


def evaluate_checkpoint(task: str, network: torch.nn.Module, wf: Any, out_dir: str | os.PathLike) -> dict[str, float]:
    """Dice of ``network`` on the test cases of ``wf``'s split, per case in ``out_dir/per_case.csv``.

    Cases are whole scans (the slices of a 2D split stacked back, :func:`~medssl.data.slices.stack_slices`), run
    through the bundle's own validation inferer and pre-processing, as its ``evaluate.json`` would.

    Returns ``{"mean": ..., <channel>: ...}`` (for BraTS the channels are WT, TC and ET).
    """
    from medssl.workflows.evaluation import build_evaluator

    spec = TASKS[task]
    evaluator = build_evaluator(
        DataLoader(test_dataset(wf), batch_size=1),
        network,
        wf.parser.get_parsed_content("roi_size"),
        task=spec.eval_task,
        device=wf.parser.get_parsed_content("device"),
        inferer=wf.parser.get_parsed_content("validate#inferer"),
        hd95=False,
        output_dir=out_dir,
        class_names=spec.channels if spec.eval_task == "multiclass" else None,
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    dice = {"mean": float(metrics["val_mean_dice"])}
    if spec.eval_task == "binary":
        dice["foreground"] = dice["mean"]
    else:
        dice.update({name: float(metrics[f"val_dice_{name}"]) for name in spec.channels})
    return dice


def test_dataset(wf: Any, cached: bool = False) -> Dataset:
    """The test scans of ``wf``'s split with its validation pre-processing (2D slices stacked into volumes).

    Raises:
        ValueError: the split has no test cases.
    """
    from monai.data import CacheDataset

    from medssl.data.slices import stack_slices

    split = wf.parser.get_parsed_content("split")
    if not split.get("testing"):
        raise ValueError(f"{wf.parser['datalist']}: the split has no test cases to evaluate on")
    data = stack_slices(split["testing"])
    transform = wf.parser.get_parsed_content("validate#preprocessing")
    if cached:
        return CacheDataset(data, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
    return Dataset(data, transform=transform)


def teacher_pseudolabels(
    task: str,
    checkpoint: str | os.PathLike,
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """Write the teacher's pseudo-labels of the unlabelled cases with the bundle's inference config.

    Returns the student's datalist (the split, each unlabelled entry with its ``pseudo_label``).
    """
    from medssl.workflows.bundle import load_bundle_inference
    from medssl.inference.predict import write_pseudolabels

    spec = TASKS[check_choice("task", task, tuple(TASKS))]
    # train.json's training and validation sections have no counterpart in inference.json
    inference_overrides = {
        k: v for k, v in dict(overrides or {}).items() if k.split("#")[0] not in ("train", "validate")
    }
    teacher = load_bundle_inference(spec.bundle, checkpoint=checkpoint, device=device, overrides=inference_overrides)
    return write_pseudolabels(
        teacher.network,
        datalist,
        out_dir,
        teacher.preprocessing,
        teacher.inferer,
        teacher.postprocessing,
        device=teacher.device,
    )

