"""Conversion of lung CT scans with vessel masks into a MONAI datalist: ``medssl prepare lung-vessel-ct``.

Each case is a CT image (Hounsfield units) with an optional binary vessel mask and an optional lung mask. The
conversion checks every case first, then resamples to a fixed voxel spacing, clips HU to a window, crops to the lung
bounding box and writes NIfTI files plus a decathlon-style ``datalist.json``. Cases without a vessel mask become the
unlabelled set of semi-supervised training.

Resampling keeps physical space: the output voxel grid covers the same field of view as the input (its first corner is
the input's first corner), keeps the input's axis directions, and carries an affine under which every output voxel
centre sits at the world position it was interpolated from. Cropping shifts the affine's origin by the crop offset.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.checks import check_in_range, check_positive, check_type
from medssl.data.io import Volume, read_volume, sitk_to_volume, write_json, write_nifti
from medssl.data.validation import (
    check_finite,
    check_label_values,
    check_not_constant,
    check_same_geometry,
    check_spatial_ndim,
)
from medssl.errors import DataError

__all__ = [
    "LUNG_VESSEL_LABELS",
    "IMAGE_SUFFIXES",
    "LungVesselCase",
    "find_lung_vessel_cases",
    "prepare_lung_vessel_ct",
]

LUNG_VESSEL_LABELS = {"0": "background", "1": "vessel"}
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
# Data files that belong to a header file of IMAGE_SUFFIXES (MetaImage .mhd -> .raw/.zraw, detached NRRD -> .raw).
_COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz")
_DATASET_NAME = "lung_vessel_ct"
_INT16 = np.iinfo(np.int16)
# Below this minimum an image holds air (about -1000 HU); a CT whose minimum stays above it is likely not in HU.
_AIR_HINT_HU = -200.0
# Largest deviation of an affine's direction columns from orthonormal that still counts as a rotation (no shear).
_SHEAR_TOL = 1e-4


@dataclass(frozen=True)
class LungVesselCase:
    """One input case: a CT image, an optional vessel mask (``None``: unlabelled) and an optional lung mask.

    Each path is a NIfTI/MHA/NRRD file or a folder holding one DICOM series.
    """

    case_id: str
    image: Path
    label: Path | None = None
    lung: Path | None = None


def _case_id_of(path: Path) -> str | None:
    """The case id a file or DICOM folder stands for, or ``None`` when it is not an image by its name."""
    if path.is_dir():
        return path.name
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _scan_folder(folder: Path) -> dict[str, Path]:
    """Map case id to input path for every image file or DICOM sub-folder of ``folder``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.lower().endswith(_COMPANION_SUFFIXES):
            continue
        cid = _case_id_of(path)
        if cid is None:
            if path.suffix.lower() in (".dcm", ".ima", ".dicom"):
                raise DataError(path, f"DICOM file directly in {folder}; put each series in its own sub-folder")
            expected = f"a DICOM folder or {', '.join(IMAGE_SUFFIXES)}"
            raise DataError(path, f"not an image file by its name (expected {expected})")
        if cid in found:
            raise DataError([found[cid], path], f"two inputs for case '{cid}' in {folder}")
        found[cid] = path
    return found


def _check_case_id(cid: str) -> str:
    if not cid or cid in (".", "..") or "/" in cid or "\\" in cid:
        raise ValueError(f"case_id must be a plain file name, got {cid!r}.")
    return cid


def _resolve_lung_masks(
    lung_masks: str | os.PathLike | Mapping[str, str | os.PathLike] | None, default_folder: Path | None
) -> dict[str, Path]:
    if lung_masks is None:
        return _scan_folder(default_folder) if default_folder is not None and default_folder.is_dir() else {}
    if isinstance(lung_masks, Mapping):
        return {_check_case_id(str(k)): Path(v) for k, v in lung_masks.items()}
    check_type("lung_masks", lung_masks, (str, os.PathLike))
    folder = Path(lung_masks)
    if not folder.is_dir():
        raise DataError(folder, "lung_masks folder not found")
    return _scan_folder(folder)


def find_lung_vessel_cases(
    pairs_or_root: str | os.PathLike | Sequence[Mapping[str, Any]],
    lung_masks: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
) -> list[LungVesselCase]:
    """List the cases of a lung-vessel CT input, sorted by case id; see :func:`prepare_lung_vessel_ct` for the layout.

    Args:
        pairs_or_root: a root folder (``images/``, ``labels/``, optional ``lungs/``) or a list of dicts with
            ``"image"`` and optional ``"label"``, ``"lung"`` and ``"case_id"``.
        lung_masks: a folder of lung masks named by case, or a mapping case id -> lung mask path; ``None`` uses
            ``<root>/lungs`` when it exists (root input) or the ``"lung"`` keys (list input).

    Returns:
        The cases; nothing is read beyond folder listings.

    Raises:
        DataError: the root or its ``images/`` folder is missing or empty, a file is not an image by its name, two
            files give the same case, or a label or lung mask has no matching image.
        ValueError: a case id is not a plain file name or repeats, or lung masks are given both ways.
        TypeError: ``pairs_or_root`` or an entry has the wrong type.
    """
    if isinstance(pairs_or_root, (str, os.PathLike)):
        root = Path(pairs_or_root)
        if not root.is_dir():
            raise DataError(root, "input root folder not found")
        images_dir = root / "images"
        if not images_dir.is_dir():
            raise DataError(images_dir, "folder not found (expected <root>/images with one image per case)")
        images = _scan_folder(images_dir)
        labels = _scan_folder(root / "labels") if (root / "labels").is_dir() else {}
        lungs = _resolve_lung_masks(lung_masks, root / "lungs")
    else:
        check_type("pairs_or_root", pairs_or_root, (list, tuple))
        images, labels, listed_lungs = {}, {}, {}
        for i, item in enumerate(pairs_or_root):
            check_type(f"pairs_or_root[{i}]", item, Mapping)
            if item.get("image") is None:
                raise ValueError(f"pairs_or_root[{i}] has no 'image': {dict(item)!r}.")
            image = Path(item["image"])
            given = item.get("case_id")
            cid = _check_case_id(str(given) if given is not None else _case_id_of(image) or image.name)
            if cid in images:
                raise ValueError(f"case_id {cid!r} appears twice in pairs_or_root ({images[cid]} and {image}).")
            images[cid] = image
            if item.get("label") is not None:
                labels[cid] = Path(item["label"])
            if item.get("lung") is not None:
                listed_lungs[cid] = Path(item["lung"])
        if listed_lungs and lung_masks is not None:
            raise ValueError("give lung masks either as 'lung' keys of pairs_or_root or as lung_masks, not both.")
        lungs = listed_lungs or _resolve_lung_masks(lung_masks, None)
    if not images:
        raise DataError(pairs_or_root if not isinstance(pairs_or_root, (list, tuple)) else "<pairs>", "no image found")
    for kind, paths in (("label", labels), ("lung mask", lungs)):
        orphans = sorted(set(paths) - set(images))
        if orphans:
            raise DataError([paths[c] for c in orphans], f"{kind} without a matching image (case {', '.join(orphans)})")
    return [LungVesselCase(cid, images[cid], labels.get(cid), lungs.get(cid)) for cid in sorted(images)]


def _check_args(
    spacing: Sequence[float] | float | None, window: Sequence[float], margin_mm: float
) -> tuple[tuple[float, float, float] | None, tuple[float, float]]:
    if spacing is not None:
        if isinstance(spacing, (int, float)):
            spacing = (spacing,) * 3
        check_type("spacing", spacing, (list, tuple))
        if len(spacing) != 3:
            raise ValueError(f"spacing must hold 3 values (x, y, z in mm) or be one number or None, got {spacing!r}.")
        spacing = tuple(float(check_positive("spacing", s)) for s in spacing)
    check_type("window", window, (list, tuple))
    if len(window) != 2:
        raise ValueError(f"window must be (low, high) in HU, got {window!r}.")
    low = float(check_in_range("window[0]", window[0], _INT16.min, _INT16.max))
    high = float(check_in_range("window[1]", window[1], _INT16.min, _INT16.max))
    # The output is int16: the window must hold at least one integer.
    if math.ceil(low) > math.floor(high):
        raise ValueError(f"window must be (low, high) with low < high, got {window!r}.")
    check_positive("margin_mm", margin_mm, strict=False)
    return spacing, (low, high)


def _as_3d(vol: Volume) -> Volume:
    # Some tools store a 3D volume as (x, y, z, 1).
    if vol.array.ndim == 4 and vol.array.shape[3] == 1:
        vol = Volume(array=vol.array[..., 0], affine=vol.affine, path=vol.path)
    check_spatial_ndim(vol, 3)
    return vol


def _check_binary_label(vol: Volume) -> None:
    try:
        check_label_values(vol, (0, 1))
    except DataError as e:
        values = np.unique(vol.array) if np.isfinite(vol.array).all() else None
        if values is not None and set(values.tolist()) <= {0, 255}:
            raise DataError(vol.path, "vessel label holds values [0, 255]; save a binary mask as 0/1") from None
        raise DataError(vol.path, f"vessel label must be binary 0/1: {e.problem}") from None


def _check_no_shear(vol: Volume) -> None:
    m = vol.affine[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if not np.all(norms > 0):
        raise DataError(vol.path, f"affine has a zero voxel spacing {tuple(norms.tolist())}")
    d = m / norms
    if np.abs(d.T @ d - np.eye(3)).max() > _SHEAR_TOL:
        raise DataError(vol.path, "affine is sheared (axes not orthogonal); it cannot be resampled")


def _load_case(case: LungVesselCase, resample: bool, warn: bool) -> tuple[Volume, Volume | None, Volume | None]:
    """Read and check one case; raise :class:`DataError` naming the file and the problem."""
    image = _as_3d(read_volume(case.image))
    if not np.issubdtype(image.array.dtype, np.number) or np.iscomplexobj(image.array):
        raise DataError(image.path, f"image has voxel type {image.array.dtype}; expected real-valued HU")
    check_finite(image)
    check_not_constant(image)
    if resample:
        _check_no_shear(image)
    if warn and image.array.size and float(image.array.min()) > _AIR_HINT_HU:
        warnings.warn(
            f"{image.path}: the lowest value is {float(image.array.min()):.4g}, with no air near -1000; is it in HU?",
            stacklevel=3,
        )
    label = None
    if case.label is not None:
        label = _as_3d(read_volume(case.label))
        _check_binary_label(label)
        check_same_geometry(image, label)
        if warn and not label.array.any():
            warnings.warn(f"{label.path}: vessel label is empty (no voxel is 1)", stacklevel=3)
    lung = None
    if case.lung is not None:
        lung = _as_3d(read_volume(case.lung))
        check_finite(lung)
        check_same_geometry(image, lung)
        if not lung.array.any():
            raise DataError(lung.path, "lung mask is empty (no voxel is non-zero); nothing to crop to")
    return image, label, lung


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image (LPS) from an array indexed (x, y, z) and its RAS affine: the inverse of ``sitk_to_volume``."""
    import SimpleITK as sitk

    m = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    # Nearest orthonormal matrix: removes float noise of stored affines, which ITK would carry into the output grid.
    u, _, vt = np.linalg.svd(m / spacing)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (u @ vt).ravel()])
    image.SetOrigin([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]])
    return image


def _resample(
    array: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float], is_label: bool, fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample onto a grid of ``spacing`` covering the same field of view; return (array, RAS affine)."""
    import SimpleITK as sitk

    src = _to_sitk(array, affine)
    old_spacing = np.array(src.GetSpacing())
    new_spacing = np.array(spacing)
    size = np.maximum(1, np.round(np.array(src.GetSize()) * old_spacing / new_spacing)).astype(int)
    direction = np.array(src.GetDirection()).reshape(3, 3)
    # Keep the field of view's first corner: the first voxel centre moves by half the spacing change along each axis.
    origin = np.array(src.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2.0)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing([float(s) for s in new_spacing])
    resampler.SetSize([int(s) for s in size])
    resampler.SetOutputDirection(src.GetDirection())
    resampler.SetOutputOrigin([float(v) for v in origin])
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
    # Linear interpolation into an integer type would truncate; labels stay uint8.
    resampler.SetOutputPixelType(sitk.sitkUInt8 if is_label else sitk.sitkFloat32)
    resampler.SetDefaultPixelValue(float(fill))
    out = sitk_to_volume(resampler.Execute(src), "")
    return out.array, out.affine


def _process(
    image: Volume,
    label: Volume | None,
    lung: Volume | None,
    spacing: tuple[float, float, float] | None,
    window: tuple[float, float],
    margin_mm: float,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Resample, clip and crop one case; return (int16 image, uint8 label or None, RAS affine)."""
    img = np.asarray(image.array, dtype=np.float32)
    lab = None if label is None else (np.asarray(label.array) != 0).astype(np.uint8)
    lng = None if lung is None else (np.asarray(lung.array) != 0).astype(np.uint8)
    affine = np.asarray(image.affine, dtype=float)
    if spacing is not None:
        img, new_affine = _resample(img, affine, spacing, is_label=False, fill=window[0])
        if lab is not None:
            lab, _ = _resample(lab, affine, spacing, is_label=True, fill=0)
        if lng is not None:
            lng, _ = _resample(lng, affine, spacing, is_label=True, fill=0)
            if not lng.any():
                raise DataError(lung.path, f"lung mask is empty after resampling to {spacing} mm")
        affine = new_affine
    img = np.clip(np.rint(img), math.ceil(window[0]), math.floor(window[1])).astype(np.int16)
    if lng is not None:
        out_spacing = np.linalg.norm(affine[:3, :3], axis=0)
        margin = np.ceil(margin_mm / out_spacing).astype(int)
        nonzero = np.nonzero(lng)
        lo = np.maximum([int(ix.min()) for ix in nonzero] - margin, 0)
        hi = np.minimum([int(ix.max()) + 1 for ix in nonzero] + margin, img.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        img = img[box]
        lab = None if lab is None else lab[box]
        affine = affine.copy()
        affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return img, lab, affine


def _raise_collected(errors: list[DataError], n_cases: int) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        lines = "\n".join(f"  {e.path}: {e.problem}" for e in errors)
        raise DataError([e.path for e in errors], f"{len(errors)} of {n_cases} cases failed validation:\n{lines}")


def prepare_lung_vessel_ct(
    pairs_or_root: str | os.PathLike | Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    spacing: Sequence[float] | float | None = (1.0, 1.0, 1.0),
    window: Sequence[float] = (-1000, 500),
    lung_masks: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    margin_mm: float = 10.0,
    validate: bool = True,
) -> Path:
    """Convert lung CT scans with vessel masks into NIfTI files and a MONAI datalist under ``out``.

    Input layout (root folder form)::

        root/
          images/<case>.nii.gz | .nii | .mha | .mhd | .nrrd | .nhdr   CT in HU, or
          images/<case>/                                              a folder holding one DICOM series
          labels/<case>.<any of the above>     binary vessel mask 0/1 on the image's grid (optional folder)
          lungs/<case>.<any of the above>      lung mask on the image's grid, any non-zero = lung (optional folder)

    A case is named by its image's file name without suffix (or its DICOM folder's name). An image without a label
    is unlabelled; a label or lung mask without an image is an error. Hidden files are ignored. In the Python list
    form, each entry is ``{"image": path, "label": path (optional), "lung": path (optional), "case_id": str
    (optional, default: the image name without suffix)}``.

    Every case is checked first (readable, 3D, finite, label values in {0, 1}, label and lung mask on the image's
    grid); only then is anything written. Each case is then resampled (image: linear; masks: nearest neighbour) to
    ``spacing`` over the same field of view, clipped to ``window`` and rounded to int16 HU, cropped to the lung mask's
    bounding box plus ``margin_mm`` when the case has one, and written as ``out/imagesTr/<case>.nii.gz`` (int16) and
    ``out/labelsTr/<case>.nii.gz`` (uint8 0/1) with affines in the input's physical space. Files are produced in a
    staging folder beside ``out`` and moved in only when all cases succeeded, so a failure leaves ``out`` as it was.
    Inputs are only read. Existing files of the same names under ``out`` are replaced.

    Datalist (``out/datalist.json``, paths relative to ``out``)::

        {"name": "lung_vessel_ct", "source": <root or the inputs' common folder>, "spacing": [x, y, z] or null,
         "window": [low, high], "labels": {"0": "background", "1": "vessel"},
         "training": [{"image": "imagesTr/<case>.nii.gz", "label": "labelsTr/<case>.nii.gz", "case_id": <case>}],
         "unlabeled": [{"image": "imagesTr/<case>.nii.gz", "case_id": <case>}]}

    Args:
        pairs_or_root: the root folder described above, or a list of case dicts.
        out: output folder (created if needed).
        spacing: output voxel spacing (x, y, z) in mm, one number for isotropic, or ``None`` to keep each case's grid
            (no interpolation).
        window: HU range (low, high) to clip to.
        lung_masks: a folder of lung masks named by case, or a mapping case id -> lung mask; ``None`` uses
            ``<root>/lungs`` when present, or the list entries' ``"lung"`` keys. Cases without one are not cropped.
        margin_mm: margin added around the lung bounding box on each side, in mm (clipped to the image).
        validate: check all cases before writing any (fail fast, every bad case reported at once). With ``False``
            each case is read once and checked as it is converted; a bad case still stops the run and ``out`` is
            still left untouched, but only after the cases before it were converted.

    Returns:
        The path of the datalist, ``out/datalist.json``.

    Raises:
        DataError: an input is missing, empty, truncated or unreadable, not 3D, holds NaN/Inf, a label holds values
            other than 0/1, an image and its label or lung mask differ in shape or affine, a lung mask is empty, or
            the layout is wrong (see :func:`find_lung_vessel_cases`). Several bad cases are reported in one error.
        ValueError: a bad ``spacing``, ``window``, ``margin_mm`` or case id, ``out`` is a file, or an output file
            would overwrite an input.
        TypeError: an argument has the wrong type.

    >>> prepare_lung_vessel_ct("raw/parse2022", "data/lung_vessel_ct", spacing=1.0)  # doctest: +SKIP
    PosixPath('data/lung_vessel_ct/datalist.json')
    """
    spacing, window = _check_args(spacing, window, margin_mm)
    cases = find_lung_vessel_cases(pairs_or_root, lung_masks)
    # Resolved so that the staging folder lands beside ``out`` even for out=".".
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the file {str(out)!r}.")
    _check_outputs_apart(cases, out)
    if any(c.lung is not None for c in cases) and any(c.lung is None for c in cases):
        missing = [c.case_id for c in cases if c.lung is None]
        warnings.warn(f"no lung mask for case(s) {', '.join(missing)}, which stay uncropped", stacklevel=2)

    if validate:
        errors: list[DataError] = []
        for case in cases:
            try:
                _load_case(case, resample=spacing is not None, warn=True)
            except DataError as e:
                errors.append(e)
        _raise_collected(errors, len(cases))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        training, unlabeled, moves = [], [], []
        for case in cases:
            image, label, lung = _load_case(case, resample=spacing is not None, warn=not validate)
            img, lab, affine = _process(image, label, lung, spacing, window, margin_mm)
            del image, label, lung
            rel_image = f"imagesTr/{case.case_id}.nii.gz"
            write_nifti(img, affine, staging / rel_image)
            moves.append(rel_image)
            if lab is None:
                unlabeled.append({"image": rel_image, "case_id": case.case_id})
            else:
                rel_label = f"labelsTr/{case.case_id}.nii.gz"
                write_nifti(lab, affine, staging / rel_label, dtype=np.uint8)
                moves.append(rel_label)
                training.append({"image": rel_image, "label": rel_label, "case_id": case.case_id})
        datalist = {
            "name": _DATASET_NAME,
            "source": _source_of(pairs_or_root, cases),
            "spacing": None if spacing is None else list(spacing),
            "window": list(window),
            "labels": dict(LUNG_VESSEL_LABELS),
            "training": training,
            "unlabeled": unlabeled,
        }
        for rel in moves:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)
        # The datalist goes last: a datalist on disk means every file it names is in place.
        return write_json(datalist, out / "datalist.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_outputs_apart(cases: list[LungVesselCase], out: Path) -> None:
    inputs = {p.resolve() for c in cases for p in (c.image, c.label, c.lung) if p is not None}
    for case in cases:
        for rel in (f"imagesTr/{case.case_id}.nii.gz", f"labelsTr/{case.case_id}.nii.gz"):
            target = (out / rel).resolve()
            if target in inputs or any(p in inputs for p in target.parents):
                raise ValueError(f"out={str(out)!r} would overwrite the input {target}; choose another folder.")


def _source_of(pairs_or_root: Any, cases: list[LungVesselCase]) -> str:
    if isinstance(pairs_or_root, (str, os.PathLike)):
        return str(Path(pairs_or_root).resolve())
    return os.path.commonpath([str(c.image.resolve().parent) for c in cases])
