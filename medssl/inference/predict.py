"""Sliding-window prediction of whole datalists to NIfTI files, on the GPU when there is one.

Also how ``medssl pseudolabel`` writes a teacher's pseudo-labels, and the engine of every bundle's
``inference.json`` (:func:`input_images`, :func:`segmentation_writer`: a MONAI ``SupervisedEvaluator`` whose
post-processing inverts the pre-processing and writes each segmentation): each output has its input's affine and
original grid, is written atomically (a killed run leaves no partial file under the final name), and is logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import logging

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import Activations, AsDiscrete, Compose, Invertd, KeepLargestConnectedComponent

from medssl.checks import check_bool
from medssl.data.datalist import case_id, load_datalist, require_unlabeled, save_datalist
from medssl.data.io import write_nifti
from medssl.device import resolve_device
from medssl.errors import DataError
from medssl.inference.optimize import optimize_for_inference

__all__ = [
    "make_sliding_window_inferer",
    "predict_to_files",
    "write_pseudolabels",
    "input_images",
    "datalist_images",
    "binary_label_map",
    "SegmentationWriter",
    "segmentation_writer",
]

logger = logging.getLogger("medssl.inference")


def make_sliding_window_inferer(
    roi_size: Sequence[int],
    device: torch.device,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
    stitch_on_cpu: bool | None = None,
    volume_voxels: int | None = None,
) -> SlidingWindowInferer:
    """MONAI's ``SlidingWindowInferer`` with windows run on ``device``.

    The stitching buffer stays on the GPU unless ``stitch_on_cpu`` is True, or (when None) the volume is too large
    for the GPU's free memory (about 40 bytes per voxel and class for the buffers), so huge volumes still run.
    """
    sw_device = device
    out_device = device
    if device.type == "cuda":
        if stitch_on_cpu is None and volume_voxels is not None:
            free, _ = torch.cuda.mem_get_info(device)
            stitch_on_cpu = volume_voxels * 40 > free // 2
        if stitch_on_cpu:
            out_device = torch.device("cpu")
    return SlidingWindowInferer(
        roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode, sw_device=sw_device, device=out_device
    )


def _output_path(entry: dict[str, Any], out_dir: Path, suffix: str) -> Path:
    stem = case_id(entry)
    if "slice" in entry:
        # 2D slice datalists hold several slices of one case: <case>_z<slice>, as `medssl prepare brats` names them
        stem = f"{stem}_z{int(entry['slice']):03d}"
    return out_dir / f"{stem}{suffix}.nii.gz"


@torch.inference_mode()
def predict_to_files(
    network: torch.nn.Module,
    entries: Sequence[dict[str, Any]],
    preprocessing: Compose,
    inferer: Inferer,
    postprocessing: Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    suffix: str = "_seg",
    image_key: str = "image",
    dtype: Any = np.uint8,
    num_workers: int = 0,
    optimize: bool = True,
) -> list[Path]:
    """Predict every entry and write a NIfTI segmentation on the input's grid and affine.

    Args:
        network: the segmentation network (put in eval mode here).
        entries: datalist entries with ``image``.
        preprocessing: MONAI dictionary transforms from the loader to the network input; they must be invertible
            (``Invertd`` maps the prediction back to the input's grid).
        inferer: how to run the network, usually a sliding-window inferer.
        postprocessing: maps the network output of one case (C, *spatial) to a label map (1, *spatial), e.g.
            ``AsDiscrete(argmax=True)``.
        out_dir: folder for ``<case_id><suffix>.nii.gz`` (``<case_id>_z<slice:03d><suffix>.nii.gz`` for entries of a
            2D slice datalist, which carry a ``slice`` index).
        device: torch device (None: CUDA when available).
        suffix: file-name suffix after the case id.
        image_key: key of the image in the entries.
        dtype: stored data type.
        num_workers: loader workers.
        optimize: run a copy rewritten by :func:`~medssl.inference.optimize.optimize_for_inference` (batch norm
            folded, fused attention: the same outputs up to float rounding, faster on the CPU).

    Returns:
        the written paths, in the order of ``entries``.
    """
    device = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    network = network.to(device).eval()
    if optimize:
        network = optimize_for_inference(network)
    inverter = Invertd(keys="pred", transform=preprocessing, orig_keys=image_key, nearest_interp=True, to_tensor=True)
    loader = DataLoader(Dataset(list(entries), transform=preprocessing), batch_size=1, num_workers=num_workers)
    written: list[Path] = []
    for entry, batch in zip(entries, loader):
        image = batch[image_key].to(device)
        logits = inferer(image, network)
        batch["pred"] = logits
        for item in decollate_batch(batch):
            item["pred"] = postprocessing(item["pred"])
            item = inverter(item)
            pred = item["pred"]
            meta = pred.meta if hasattr(pred, "meta") else item[image_key].meta
            affine = np.asarray(meta.get("original_affine", meta["affine"]), dtype=float)
            arr = pred.detach().cpu().numpy()[0]
            written.append(write_nifti(arr.astype(dtype), affine, _output_path(entry, out_dir, suffix)))
    return written


def write_pseudolabels(
    network: torch.nn.Module,
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    preprocessing: Compose,
    inferer: Inferer,
    postprocessing: Callable[[torch.Tensor], torch.Tensor],
    device: str | torch.device | None = None,
    key: str = "pseudo_label",
) -> Path:
    """Run a teacher over the unlabelled cases of ``datalist`` and write ``out_dir/datalist.json``.

    The new datalist is the old one with each unlabelled entry carrying ``key`` (its pseudo-label file) and
    ``"pseudo_labeled": true``. Files go to ``out_dir/pseudo_labels/``; the datalist is written last, so it only
    ever names complete files.

    Raises:
        DatalistError: the datalist has no unlabelled case, or names a missing file.
    """
    datalist = Path(datalist)
    data = load_datalist(datalist)
    unlabeled = require_unlabeled(data, datalist)
    out_dir = Path(out_dir)
    paths = predict_to_files(
        network, unlabeled, preprocessing, inferer, postprocessing, out_dir / "pseudo_labels", device, suffix="_pseudo"
    )
    data["unlabeled"] = [{**e, key: str(p), "pseudo_labeled": True} for e, p in zip(unlabeled, paths)]
    data["pseudo_label_source"] = {"datalist": str(datalist.resolve()), "key": key}
    return save_datalist(data, out_dir / "datalist.json")


def binary_label_map(threshold: float = 0.5, largest_component: bool = False) -> Compose:
    """The label map of one sigmoid channel's logits: ``sigmoid > threshold``, then, with ``largest_component``, only
    its largest connected component (as some LA papers score)."""
    steps: list[Any] = [Activations(sigmoid=True), AsDiscrete(threshold=threshold)]
    if check_bool("largest_component", largest_component):
        steps.append(KeepLargestConnectedComponent(applied_labels=[1]))
    return Compose(steps)


def input_images(folder: str | os.PathLike, pattern: str = "*.nii.gz") -> list[dict[str, str]]:
    """The images to segment: every file of ``folder`` that matches ``pattern``, in name order, as datalist entries.

    Raises:
        DataError: ``folder`` does not exist or holds no such file (an inference that would write nothing).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder of images to segment (pass --dataset_dir FOLDER)")
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise DataError(folder, f"no {pattern} image in this folder to segment")
    return [{"image": str(f)} for f in files]


def datalist_images(datalist: str | os.PathLike, key: str = "testing") -> list[dict[str, Any]]:
    """The cases to segment from a datalist: its ``key`` list, or, when it has none, its labelled and unlabelled
    training cases (a case's ``image`` may be a list of files, one a modality).

    Raises:
        DataError: the datalist is missing or unreadable, or names no case.
    """
    path = Path(datalist)
    if not path.is_file():
        raise DataError(path, "no such datalist of images to segment (pass --dataset_dir FOLDER or --datalist FILE)")
    content = load_datalist(path, require=(key, "training", "unlabeled"))
    cases = content.get(key) or (content.get("training") or []) + (content.get("unlabeled") or [])
    if not cases:
        raise DataError(path, f"the datalist names no case to segment (no '{key}', 'training' or 'unlabeled' list)")
    return list(cases)


class SegmentationWriter:
    """Post-processing of one predicted case: the label map from the logits, back on the input's grid, written.

    Called with the evaluator's merged batch and output item (``image`` with its pre-processing applied, ``pred``
    the logits), it applies ``postprocessing`` (logits to a label map), inverts ``preprocessing``, writes
    ``<case><suffix>.nii.gz`` with the input's affine to ``output_dir`` (atomically), and adds the path as
    ``written``.
    """

    def __init__(
        self,
        preprocessing: Compose,
        postprocessing: Callable[[torch.Tensor], torch.Tensor],
        output_dir: str | os.PathLike,
        suffix: str = "_seg",
        dtype: Any = np.uint8,
        image_key: str = "image",
    ) -> None:
        self.postprocessing = postprocessing
        self.inverter = Invertd(keys="pred", transform=preprocessing, orig_keys=image_key, nearest_interp=True,
                                to_tensor=True)  # fmt: skip
        self.output_dir = Path(output_dir)
        self.suffix = suffix
        self.dtype = dtype
        self.image_key = image_key

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image = item[self.image_key]
        entry = {k: item[k] for k in ("case_id", "slice") if k in item}
        entry["image"] = str(image.meta.get("filename_or_obj", "case")) if hasattr(image, "meta") else "case"
        item["pred"] = self.postprocessing(item["pred"])
        meta = image.meta  # the input's grid, unless the pre-processing moved it and is inverted here
        if getattr(image, "applied_operations", None):
            item = self.inverter(item)
            meta = getattr(item["pred"], "meta", meta)
        pred = item["pred"]
        affine = np.asarray(meta.get("original_affine", meta["affine"]), dtype=float).reshape(-1, 4, 4)[0]
        array = pred.detach().cpu().numpy()[0].astype(self.dtype)
        item["written"] = str(write_nifti(array, affine, _output_path(entry, self.output_dir, self.suffix)))
        return item


def _log_written(engine: Engine) -> None:
    for item in engine.state.output:
        logger.info(f"wrote {item['written']}")
        engine.state.written = getattr(engine.state, "written", 0) + 1


def segmentation_writer(
    dataset: Any,
    network: torch.nn.Module,
    inferer: Inferer,
    preprocessing: Compose,
    postprocessing: Callable[[torch.Tensor], torch.Tensor],
    output_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    amp: bool = False,
    suffix: str = "_seg",
    optimize: bool = True,
) -> SupervisedEvaluator:
    """The inference engine of a bundle's ``inference.json``: segment every case of ``dataset`` and write it.

    A MONAI ``SupervisedEvaluator`` over ``dataset`` (one case a batch) whose post-processing is a
    :class:`SegmentationWriter`; it logs each file it writes and, at the end, how many and where.

    Args:
        dataset: the cases, with ``preprocessing`` as their transform (:func:`input_images` lists a folder's).
        network: the segmentation network, its weights loaded (run as a copy rewritten by
            :func:`~medssl.inference.optimize.optimize_for_inference` when ``optimize``).
        inferer, preprocessing, postprocessing: as the bundle declares them.
        output_dir: where ``<case><suffix>.nii.gz`` go.
        device: torch device (None: CUDA when available).
        amp: mixed precision (CUDA).
    """
    device = resolve_device(device)
    network = network.to(device).eval()
    if optimize:
        network = optimize_for_inference(network)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=DataLoader(dataset, batch_size=1, num_workers=0),
        network=network,
        inferer=inferer,
        postprocessing=SegmentationWriter(preprocessing, postprocessing, output_dir, suffix=suffix),
        amp=amp,
    )
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, _log_written)
    evaluator.add_event_handler(
        Events.COMPLETED,
        lambda e: logger.info(f"wrote {getattr(e.state, 'written', 0)} segmentations to {Path(output_dir).resolve()}"),
    )
    return evaluator
