"""Validation and test evaluation: MONAI's ``SupervisedEvaluator`` with sliding-window inference and Dice.

Binary tasks report the foreground Dice. BraTS tasks (networks with 4 softmax channels on medssl's contiguous labels
0 background, 1 core, 2 edema, 3 enhancing) report Dice and HD95 of the regions WT, TC and ET. Multi-class tasks
(ACDC: RV, Myo, LV) report Dice and HD95 of each foreground class. Every score is per case (per scan: a 2D network's
scans are evaluated whole, see :mod:`medssl.data.slices`), then averaged over cases.

HD95 is MONAI's ``HausdorffDistanceMetric`` at percentile 95, in voxels: the larger of the two directed 95th
percentiles, and NaN (left out of the mean) where the prediction or the ground truth is empty. The ACDC papers use
medpy's ``hd95`` instead (the 95th percentile of both directions' distances pooled; 0 for an empty prediction), so
their HD95 is not the same number: medssl reports MONAI's and says so beside the results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointSaver, HausdorffDistance, MeanDice, MeanIoUHandler, SurfaceDistance, from_engine
from monai.inferers import Inferer
from monai.transforms import Activationsd, AsDiscreted, Compose, KeepLargestConnectedComponentd

from medssl.checks import check_bool, check_choice
from medssl.handlers.per_case_metrics import PerCaseMetricsWriter
from medssl.device import resolve_device
from medssl.inference.predict import make_sliding_window_inferer
from medssl.transforms.brats_labels import REGION_NAMES, BratsToRegionsd

__all__ = ["TASKS", "evaluation_postprocessing", "channel_names", "build_evaluator"]

TASKS = ("binary", "brats", "multiclass")


def channel_names(task: str, class_names: Sequence[str] | None = None) -> list[str]:
    """Names of the evaluated channels of ``task`` (``class_names``: the foreground classes of ``multiclass``).

    Raises:
        ValueError: an unknown task, or ``multiclass`` without class names.
    """
    task = check_choice("task", task, TASKS)
    if task == "multiclass":
        if not class_names:
            raise ValueError("task 'multiclass' needs class_names, the names of the foreground classes 1..n.")
        return [str(n) for n in class_names]
    return ["foreground"] if task == "binary" else list(REGION_NAMES)


def evaluation_postprocessing(
    task: str, threshold: float = 0.5, num_classes: int | None = None, largest_component: bool = False
) -> Compose:
    """Turn logits into the one-hot masks the metrics compare (``pred`` and ``label`` of each decollated case).

    binary: sigmoid then ``> threshold`` (then only the largest connected component with ``largest_component``, as
    some LA papers score); brats: argmax, then both prediction and label to WT/TC/ET channels; multiclass: argmax,
    then both to ``num_classes`` one-hot channels (background included; metrics drop it).
    """
    task = check_choice("task", task, TASKS)
    if task == "binary":
        steps = [Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=threshold)]
        if check_bool("largest_component", largest_component):
            steps.append(KeepLargestConnectedComponentd("pred", applied_labels=[1]))
        return Compose(steps)
    if task == "multiclass":
        return Compose([AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=num_classes)])
    return Compose([AsDiscreted("pred", argmax=True), BratsToRegionsd(["pred", "label"], convention="contiguous")])


def _channel(index: int):
    def select(output: Any) -> tuple[list, list]:
        preds, labels = from_engine(["pred", "label"])(output)
        return [p[index : index + 1] for p in preds], [y[index : index + 1] for y in labels]

    return select


def build_evaluator(
    val_data_loader: Any,
    network: torch.nn.Module,
    roi_size: Sequence[int],
    task: str = "binary",
    device: str | torch.device | None = None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    inferer: Inferer | None = None,
    hd95: bool | None = None,
    output_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    save_dict: dict | None = None,
    amp: bool = False,
    val_handlers: Sequence | None = None,
    class_names: Sequence[str] | None = None,
    surface: bool = False,
    largest_component: bool = False,
) -> SupervisedEvaluator:
    """A ``SupervisedEvaluator`` whose key metric ``val_mean_dice`` is the mean Dice over the task's channels.

    BraTS also gets ``val_dice_WT``, ``val_dice_TC``, ``val_dice_ET``, multi-class tasks ``val_dice_<class>``; with
    ``hd95`` (default on for BraTS and multi-class), ``val_hd95`` (95th-percentile Hausdorff distance in voxels,
    averaged over regions or classes).

    Args:
        val_data_loader: loader of ``{"image", "label"}`` dicts (labels in 0/1, or medssl's contiguous BraTS labels).
        network: the network to evaluate.
        roi_size: sliding-window size.
        task: ``"binary"``, ``"brats"`` or ``"multiclass"``.
        device: torch device (None: CUDA when available).
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        inferer: a custom inferer instead of the sliding window.
        hd95: also compute HD95 (default: True for brats, multi-class and with ``surface``, False for binary).
        output_dir: write ``per_case.csv`` and ``summary.csv`` here after each evaluation.
        checkpoint_dir: keep the best model by ``val_mean_dice`` here as ``model_best.pt``.
        save_dict: objects to checkpoint (default ``{"model": network}``).
        amp: mixed precision on CUDA.
        val_handlers: more handlers.
        class_names: the foreground classes (labels 1..n) of a ``multiclass`` task.
        surface: also the Jaccard index (``val_jaccard``) and the average symmetric surface distance in voxels
            (``val_asd``), the LA papers' metrics beside Dice and HD95 (on unless ``hd95`` is False).
        largest_component: a binary prediction keeps only its largest connected component before scoring.
    """
    device = resolve_device(device)
    amp, surface, largest_component = (check_bool(k, v) for k, v in
                                       (("amp", amp), ("surface", surface), ("largest_component", largest_component)))  # fmt: skip
    hd95 = None if hd95 is None else check_bool("hd95", hd95)
    names = channel_names(task, class_names)
    if inferer is None:
        inferer = make_sliding_window_inferer(roi_size, device, sw_batch_size=sw_batch_size, overlap=overlap)
    details = output_dir is not None
    # multi-class one-hot masks carry the background as channel 0, which no metric scores
    first = 1 if task == "multiclass" else 0
    metrics: dict[str, Any] = {}
    if task != "binary":
        for i, name in enumerate(names):
            # per case, these are the key metric's channels (val_mean_dice_<name> in per_case.csv): no second copy
            metrics[f"val_dice_{name}"] = MeanDice(include_background=True, output_transform=_channel(first + i),
                                                   save_details=False)  # fmt: skip
    if hd95 or (hd95 is None and (task != "binary" or surface)):
        metrics["val_hd95"] = HausdorffDistance(
            include_background=first == 0, percentile=95, output_transform=from_engine(["pred", "label"]),
            save_details=details,
        )  # fmt: skip
    if surface:
        pairs = from_engine(["pred", "label"])
        metrics["val_jaccard"] = MeanIoUHandler(include_background=first == 0, output_transform=pairs,
                                                save_details=details)  # fmt: skip
        metrics["val_asd"] = SurfaceDistance(include_background=first == 0, symmetric=True, output_transform=pairs,
                                             save_details=details)  # fmt: skip
    handlers = list(val_handlers or [])
    if output_dir is not None:
        handlers.append(PerCaseMetricsWriter(output_dir, channel_names=names))
    if checkpoint_dir is not None:
        handlers.append(
            CheckpointSaver(
                str(checkpoint_dir),
                save_dict or {"model": network},
                save_key_metric=True,
                key_metric_filename="model_best.pt",
            )
        )
    return SupervisedEvaluator(
        device=device,
        val_data_loader=val_data_loader,
        network=network,
        inferer=inferer,
        postprocessing=evaluation_postprocessing(task, num_classes=len(names) + 1, largest_component=largest_component),
        key_val_metric={
            "val_mean_dice": MeanDice(
                include_background=first == 0, output_transform=from_engine(["pred", "label"]), save_details=details
            )
        },
        additional_metrics=metrics or None,
        val_handlers=handlers or None,
        amp=amp,
    )
