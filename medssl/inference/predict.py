"""Sliding-window prediction of whole datalists to NIfTI files, on the GPU when there is one.

Also how ``medssl pseudolabel`` writes a teacher's pseudo-labels: each output has its input's affine and original
grid, is written atomically (a killed run leaves no partial file under the final name), and a new datalist lists the
unlabelled cases with their pseudo-labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, decollate_batch
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import Compose, Invertd

from medssl.data.datalist import case_id, load_datalist, require_unlabeled, save_datalist
from medssl.data.io import write_nifti
from medssl.device import resolve_device
from medssl.inference.optimize import optimize_for_inference

__all__ = ["make_sliding_window_inferer", "predict_to_files", "write_pseudolabels"]


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
