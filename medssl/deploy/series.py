"""Finding, checking and choosing the DICOM series of an input folder, and its geometry (pydicom only).

The deploy application checks its input here before any operator runs, so that a folder without DICOM, a damaged
file, a folder with several candidate series, or a series of the wrong modality ends with one :class:`DataError`
naming the folder or file, and no output is started.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import DataError

__all__ = ["SeriesInfo", "scan_dicom_folder", "choose_series", "series_affine", "sort_slices", "stage_series"]

_logger = logging.getLogger("medssl.deploy")

# Files that are meant as DICOM even without the "DICM" preamble.
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Relative spread of slice gaps tolerated before a series counts as having missing or duplicate slices.
_SLICE_GAP_RTOL = 1e-2


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder: its identity and its instances (headers only, sorted by file name)."""

    uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    datasets: list[Any] = field(default_factory=list)
    repaired: bool = False

    def __str__(self) -> str:
        return f"{self.modality} series {self.uid} ('{self.description}', {len(self.files)} files)"


def _meant_as_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _expected_pixel_bytes(ds: Any) -> int | None:
    """Bytes of uncompressed pixel data the header announces (None for a compressed transfer syntax)."""
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames * int(ds.BitsAllocated) // 8


def scan_dicom_folder(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Read the headers of every DICOM file under ``folder`` (recursively) and group the images by series.

    Files that are not DICOM (no preamble, no DICOM suffix) are ignored, as are DICOM objects without pixel data
    (reports, DICOMDIR). A file that is meant as DICOM but cannot be read, or whose pixel data is shorter than its
    header says, is an error: a series silently missing a slice would be segmented at the wrong place.

    Raises:
        DataError: ``folder`` does not exist or is not a folder, holds no DICOM image, or holds a damaged file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "input folder not found" if not folder.exists() else "input is not a folder")
    series: dict[str, SeriesInfo] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            if path.stat().st_size == 0 or _meant_as_dicom(path):
                raise DataError(path, "not a readable DICOM file (empty or damaged)") from None
            continue
        except Exception as e:  # pydicom raises many types for a truncated or damaged file
            raise DataError(path, f"damaged DICOM file ({type(e).__name__}: {e})") from None
        if "PixelData" not in ds or "SeriesInstanceUID" not in ds:
            continue
        expected = _expected_pixel_bytes(ds)
        if expected is not None and len(ds.PixelData) < expected:
            raise DataError(path, f"DICOM pixel data is truncated ({len(ds.PixelData)} of {expected} bytes)")
        repaired = _repair_header(ds, path)
        uid = str(ds.SeriesInstanceUID)
        info = series.setdefault(
            uid, SeriesInfo(uid=uid, modality=str(ds.get("Modality", "")), description=str(ds.get("SeriesDescription", "")))
        )
        info.files.append(path)
        info.datasets.append(ds)
        info.repaired |= repaired
    if not series:
        raise DataError(folder, "folder holds no DICOM image")
    return list(series.values())


def _repair_header(ds: Any, path: Path) -> bool:
    """Fill empty Study/Series/SOP UIDs (seen in anonymised exports) in memory; return whether it did.

    The SOP Class and Instance UIDs fall back to the file meta's; the others are derived from what the slices of one series
    share (frame of reference, series number and description, folder), so every slice of the series gets the same.
    """
    from pydicom.uid import generate_uid

    filled = []
    if not str(ds.get("SOPClassUID", "") or "") and str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        filled.append("SOPClassUID")
    if not str(ds.get("SOPInstanceUID", "") or ""):
        meta_uid = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPInstanceUID", "") or "")
        ds.SOPInstanceUID = meta_uid or generate_uid(entropy_srcs=[str(path.resolve())])
        filled.append("SOPInstanceUID")
    if not str(ds.get("SeriesInstanceUID", "") or ""):
        shared = [str(ds.get(k, "")) for k in ("FrameOfReferenceUID", "SeriesNumber", "SeriesDescription", "Modality")]
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path.parent.resolve()), *shared])
        filled.append("SeriesInstanceUID")
    if not str(ds.get("StudyInstanceUID", "") or ""):
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(ds.SeriesInstanceUID), "StudyInstanceUID"])
        filled.append("StudyInstanceUID")
    # empty integer strings that the SDK's loader turns into int(None)
    dropped = [k for k in ("SeriesNumber", "AcquisitionNumber", "InstanceNumber") if k in ds and ds[k].value is None]
    for keyword in dropped:
        delattr(ds, keyword)
    if filled or dropped:
        _logger.warning(
            f"{path}: empty {', '.join(filled + dropped)}; derived UIDs are used and empty numbers left out "
            "(the file is not changed)"
        )
    return bool(filled or dropped)


def choose_series(
    candidates: list[SeriesInfo], folder: str | os.PathLike, modality: str | None = None, series_uid: str | None = None
) -> SeriesInfo:
    """The one series to segment: the one with ``series_uid`` if given, else the only one of ``modality``.

    Args:
        candidates: the series of the folder, as :func:`scan_dicom_folder` finds them.
        folder: the input folder, for messages.
        modality: the modality the bundle was trained on (e.g. ``"CT"``); None accepts any.
        series_uid: choose this SeriesInstanceUID.

    Raises:
        DataError: no series, or several series, match; or the chosen series has the wrong modality.
    """
    listing = "; ".join(str(s) for s in candidates)
    if series_uid is not None:
        chosen = [s for s in candidates if s.uid == series_uid]
        if not chosen:
            raise DataError(folder, f"no series with SeriesInstanceUID {series_uid}; the folder holds: {listing}")
        pool = chosen
    else:
        pool = candidates
    if modality is not None:
        matching = [s for s in pool if s.modality.upper() == modality.upper()]
        if not matching:
            raise DataError(folder, f"the bundle segments {modality} images, but the folder holds only: {listing}")
        pool = matching
    if len(pool) > 1:
        raise DataError(
            folder,
            f"{len(pool)} {modality or ''} series match and no rule chooses between them ({listing}); "
            "give one series per folder or choose one with --series-uid",
        )
    return pool[0]


def sort_slices(datasets: list[Any]) -> list[Any]:
    """Single-frame slices sorted by their position along the slice normal (ascending), as the SDK sorts them."""
    normal = _normal(datasets[0])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))


def _normal(ds: Any) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def series_affine(datasets: list[Any], path: str | os.PathLike = "") -> np.ndarray:
    """The 4x4 RAS+ affine of a volume indexed (column, row, slice) whose slices are ``datasets`` in that order.

    ``PixelSpacing`` is (spacing between rows, spacing between columns), so the column index steps along the row
    direction by the second value. The slice step is the mean gap between first and last slice; gaps that differ by
    more than 1% (missing or duplicate slices) are an error.

    Raises:
        DataError: a slice lacks its geometry, or the slices are unevenly spaced.
    """
    for ds in datasets:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or "PixelSpacing" not in ds:
            raise DataError(path or ds.filename, "DICOM slice without ImagePositionPatient/Orientation/PixelSpacing")
    first = datasets[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in datasets])
    if len(datasets) > 1:
        normal = _normal(first)
        gaps = np.diff(positions @ normal)
        typical = float(np.median(gaps))
        if typical == 0.0 or np.abs(gaps - typical).max() > _SLICE_GAP_RTOL * abs(typical):
            raise DataError(
                path,
                f"DICOM slices are unevenly spaced (gaps {float(gaps.min()):.4g} to {float(gaps.max()):.4g} mm): "
                "missing or duplicate slices",
            )
        slice_step = (positions[-1] - positions[0]) / (len(datasets) - 1)
    else:
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
        slice_step = _normal(first) * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = slice_step
    lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def stage_series(info: SeriesInfo, dest: str | os.PathLike) -> Path:
    """Put the files of one series into ``dest`` for the application to load, so that it sees that series only.

    Files are linked; a series whose UIDs :func:`scan_dicom_folder` had to fill in is written as repaired copies
    instead (the source files are never changed), so the SDK's loader can group it and the SEG can reference it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for i, (path, ds) in enumerate(zip(info.files, info.datasets)):
        target = dest / f"{i:05d}_{path.name}"
        if info.repaired:
            ds.save_as(target)
        else:
            os.symlink(path.resolve(), target)
    return dest
