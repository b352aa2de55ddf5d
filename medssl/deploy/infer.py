"""Running a loaded bundle on one volume held in memory (a numpy array and its RAS affine).

The volume goes through the bundle's own pipeline (``predict_to_files``: its pre-processing from ``LoadImaged`` on,
sliding-window inferer, post-processing, inversion to the input grid), so the application's label map is exactly the
one the bundle's ``inference.json`` writes for the same image as NIfTI. The volume is written to a scratch NIfTI for
this; it costs milliseconds next to the inference.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from medssl.data.io import read_volume, write_nifti
from medssl.workflows.bundle import BundleInference
from medssl.inference.predict import predict_to_files

__all__ = ["predict_volume"]


def predict_volume(
    inference: BundleInference, array: np.ndarray, affine: np.ndarray, workdir: str | os.PathLike | None = None
) -> np.ndarray:
    """The bundle's label map (uint8, indexed as ``array``) for a volume indexed (x, y, z) with a RAS ``affine``.

    A volume smaller than the bundle's ROI (e.g. a 3-slice CT) is padded by the sliding-window inferer and cropped
    back.
    """
    with tempfile.TemporaryDirectory(prefix="medssl-infer-", dir=workdir) as tmp:
        image = write_nifti(np.asarray(array), affine, Path(tmp) / "image.nii.gz")
        [out] = predict_to_files(
            inference.network,
            [{"image": str(image)}],
            inference.preprocessing,
            inference.inferer,
            inference.postprocessing,
            Path(tmp) / "pred",
            inference.device,
        )
        pred = read_volume(out).array
    if pred.shape != np.asarray(array).shape:
        raise RuntimeError(f"the bundle's prediction has shape {pred.shape}, not the input's {np.asarray(array).shape}")
    return pred.astype(np.uint8)
