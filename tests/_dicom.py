"""A synthetic DICOM CT series for the tests (I/O, ``medssl prepare lung-vessel-ct``, the bad-input corpus).

Imported by name (``from _dicom import write_dicom_series``): tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

STUDY_UID = "1.2.826.0.1.3680043.2.1125.9.1"
SERIES_UID = "1.2.826.0.1.3680043.2.1125.9.1.1"


def write_dicom_series(
    array: np.ndarray,
    folder: Path,
    spacing: Sequence[float] = (0.8, 0.8, 2.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    series_uid: str = SERIES_UID,
    prefix: str = "",
) -> Path:
    """A minimal axial CT series of ``array`` (x, y, z; z last), one int16 file ``<prefix><k:03d>.dcm`` per slice.

    ``spacing`` and ``origin`` are in ITK's LPS world; several series can share a folder (give each its own
    ``series_uid`` and ``prefix``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(np.asarray(array).astype(np.int16), (2, 1, 0))))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0020|000d": STUDY_UID,
            "0020|000e": series_uid,
            "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k + 1),
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)
    return folder
