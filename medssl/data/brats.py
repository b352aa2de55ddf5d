"""``medssl prepare brats``: turn a BraTS folder into a MONAI datalist, optionally with axial 2D slices.

Input: a folder of case folders, one per patient, in either naming (auto-detected per case; ``_`` and ``-`` are both
accepted as the separator before the modality key):

- BraTS 2018-2021: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``
- BraTS 2023: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (t1n = T1, t1c = T1-Gd, t2w = T2, t2f = FLAIR)

A case without a ``seg`` file is listed as unlabelled. Labels are always written out in the 2018 convention
(0, 1 necrotic/non-enhancing core, 2 edema, 4 enhancing); see :mod:`medssl.transforms.brats_labels`.

Output ``out/datalist.json`` (MONAI decathlon style; every path absolute)::

    {"name": ..., "source": "<root>", "label_convention": "2018", "source_label_convention": "<given>",
     "modalities": ["t1", "t1ce", "t2", "flair"],
     "labels": {"0": "background", "1": "necrotic/non-enhancing core", "2": "edema", "4": "enhancing"},
     "tensorImageSize": "4D", "numTraining": n, "numUnlabeled": m,
     "training": [{"image": [t1, t1ce, t2, flair], "label": seg, "case_id": case}, ...],
     "unlabeled": [{"image": [t1, t1ce, t2, flair], "case_id": case}, ...]}

Input files are never modified: a label already in the 2018 convention is referenced where it is; any other is
converted into ``out/labels/<case>_seg.nii.gz``. Everything is written to a staging folder first and moved into place
only when every case has passed, so a failed run leaves no datalist behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from medssl.checks import check_in_range
from medssl.data.io import Volume, read_volume, write_json, write_nifti
from medssl.data.validation import (
    check_finite,
    check_label_values,
    check_not_constant,
    check_same_geometry,
    check_spatial_ndim,
)
from medssl.errors import DataError
from medssl.transforms.brats_labels import LABEL_NAMES, check_convention, convert_convention, label_values

__all__ = [
    "MODALITIES",
    "FILE_KEYS",
    "OUTPUT_LABELS",
    "DEFAULT_MIN_BRAIN_FRACTION",
    "BratsCase",
    "find_case",
    "find_cases",
    "slices_to_keep",
    "slice_affine",
    "prepare_brats",
]

#: Modalities in the order of the datalist's image list and of the 2D slices' channels.
MODALITIES: tuple[str, str, str, str] = ("t1", "t1ce", "t2", "flair")

#: File-name key of each modality (and of the label, ``seg``) in each naming scheme.
FILE_KEYS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "2018": MappingProxyType({"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
        "2023": MappingProxyType({"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}),
    }
)

#: The ``labels`` entry of every datalist written here (2018 convention).
OUTPUT_LABELS: Mapping[str, str] = MappingProxyType({str(k): v for k, v in LABEL_NAMES["2018"].items()})

DEFAULT_MIN_BRAIN_FRACTION = 0.1

_OUTPUT_CONVENTION = "2018"
_ALL_KEYS = sorted({k for keys in FILE_KEYS.values() for k in keys.values()}, key=len, reverse=True)
# Longest keys first so that "t1ce" is not read as "t1" + "ce"; the separator before the key may be "_" or "-".
_FILE_RE = re.compile(r"^(?P<prefix>.+?)[_-](?P<key>" + "|".join(_ALL_KEYS) + r")\.nii(?:\.gz)?$", re.IGNORECASE)

# Slices live in <slices2d>/slices/<case>/, not <slices2d>/<case>/: MONAI's load_decathlon_datalist replaces any value
# naming an existing path relative to the datalist's folder by that path, and would turn case ids into folders.
_SLICES_DIR = "slices"

_DROP_RULE = (
    "a slice is kept when voxels non-zero in any modality cover at least min_brain_fraction of it; "
    "every slice holding tumour (label > 0) is kept whatever its brain fraction"
)


@dataclass(frozen=True)
class BratsCase:
    """The files of one BraTS case folder.

    Attributes:
        case_id: the case folder's name.
        folder: the case folder.
        naming: ``"2018"`` (``_t1ce``) or ``"2023"`` (``-t1c``) file naming.
        images: paths of t1, t1ce, t2, flair (in :data:`MODALITIES` order).
        label: path of the segmentation, or None for an unlabelled case.
    """

    case_id: str
    folder: Path
    naming: str
    images: tuple[Path, ...]
    label: Path | None


def _expected_names(case_id: str) -> str:
    parts = []
    for naming, keys in FILE_KEYS.items():
        sep = "_" if naming == "2018" else "-"
        mods = ",".join(keys[m] for m in MODALITIES)
        parts.append(f"{case_id}{sep}{{{mods}}}.nii.gz (+ {case_id}{sep}seg.nii.gz)")
    return " or ".join(parts)


def find_case(folder: str | os.PathLike) -> BratsCase:
    """Find the four modality files and the optional label of one case folder, detecting its naming.

    Args:
        folder: a case folder.

    Returns:
        The case's files.

    Raises:
        DataError: naming the folder, when it holds no recognisable BraTS file, mixes the 2018 and 2023 namings,
            holds two files for one modality, or misses a modality.
    """
    folder = Path(folder)
    case_id = folder.name
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE_RE.match(path.name)
        if match is None or path.name.startswith(".") or path.is_dir():
            continue
        found.setdefault(match.group("key").lower(), []).append(path)

    namings = [n for n, keys in FILE_KEYS.items() if any(keys[m] in found for m in MODALITIES)]
    if not namings:
        raise DataError(
            folder,
            f"case folder {case_id!r} holds no recognisable BraTS image files; expected {_expected_names(case_id)}",
        )
    if len(namings) > 1:
        raise DataError(folder, f"case folder {case_id!r} mixes BraTS 2018 and 2023 file names ({sorted(found)})")
    naming = namings[0]
    keys = FILE_KEYS[naming]
    for key, paths in found.items():
        if len(paths) > 1:
            raise DataError(folder, f"case folder {case_id!r} holds several {key!r} files: {[p.name for p in paths]}")
    missing = [m for m in MODALITIES if keys[m] not in found]
    if missing:
        detail = ", ".join(f"{m} (*{'_' if naming == '2018' else '-'}{keys[m]}.nii.gz)" for m in missing)
        raise DataError(folder, f"case folder {case_id!r} is missing modality {detail}")
    label = found.get(keys["seg"], [None])[0]
    return BratsCase(
        case_id=case_id,
        folder=folder,
        naming=naming,
        images=tuple(found[keys[m]][0] for m in MODALITIES),
        label=label,
    )


def _is_same_or_inside(path: Path, others: Iterable[Path | None]) -> bool:
    resolved = path.resolve()
    for other in others:
        if other is None:
            continue
        other = other.resolve()
        if resolved == other or resolved in other.parents:
            return True
    return False


def find_cases(root: str | os.PathLike, exclude: Sequence[str | os.PathLike | None] = ()) -> list[BratsCase]:
    """All case folders directly under ``root``, sorted by name (hidden folders are skipped).

    Args:
        root: the dataset folder.
        exclude: folders to skip when they are (or contain) a sub-folder of ``root``, e.g. an output folder
            placed inside the dataset.

    Returns:
        The cases, see :func:`find_case`.

    Raises:
        DataError: ``root`` is not a folder, holds no case folder, or a case folder is unusable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "BraTS root folder not found" if not root.exists() else "BraTS root is not a folder")
    skip = [Path(p) for p in exclude if p is not None]
    folders = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and not _is_same_or_inside(d, skip)
    ]
    if not folders:
        raise DataError(root, "BraTS root holds no case folders")
    return [find_case(d) for d in folders]


def slices_to_keep(
    images: np.ndarray, label: np.ndarray | None, min_brain_fraction: float = DEFAULT_MIN_BRAIN_FRACTION
) -> np.ndarray:
    """Indices of the axial (last spatial axis) slices kept for the 2D export.

    Drop rule: a slice is kept when the brain, the voxels non-zero in any modality, covers at least
    ``min_brain_fraction`` of the slice; every slice that holds tumour (label > 0) is kept whatever its brain
    fraction. ``min_brain_fraction=0`` keeps every slice.

    Args:
        images: ``(X, Y, Z, C)`` stacked modalities.
        label: ``(X, Y, Z)`` label map, or None for an unlabelled case.
        min_brain_fraction: in [0, 1].

    Returns:
        Sorted int array of kept z indices.
    """
    brain = np.any(images != 0, axis=-1)
    fraction = brain.mean(axis=(0, 1))
    keep = fraction >= min_brain_fraction
    if label is not None:
        keep |= np.any(label != 0, axis=(0, 1))
    return np.flatnonzero(keep)


def slice_affine(affine: np.ndarray, z: int) -> np.ndarray:
    """Affine of axial slice ``z`` of a volume: the same axes, with the origin moved to the slice's position.

    Voxel (i, j) of the slice is voxel (i, j, z) of the volume, so its world position is unchanged.
    """
    out = np.array(affine, dtype=float, copy=True)
    out[:3, 3] = out[:3, 3] + z * out[:3, 2]
    return out


@dataclass
class _Staging:
    """A hidden folder next to the final outputs; removed on failure, emptied into place on success."""

    final: Path
    created_final: bool
    path: Path

    @classmethod
    def create(cls, final: Path) -> _Staging:
        created = not final.exists()
        final.mkdir(parents=True, exist_ok=True)
        return cls(final, created, Path(tempfile.mkdtemp(prefix=".medssl-prepare-", dir=final)))

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.created_final:
            # Only an empty folder we made ourselves is removed: never anything a user put there.
            try:
                self.final.rmdir()
            except OSError:
                pass

    def commit(self, names: Iterable[str]) -> None:
        """Move the staged entries ``names`` (files or folders) into ``final``, replacing older ones."""
        trash = self.path / ".replaced"
        for name in names:
            src, dst = self.path / name, self.final / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                trash.mkdir(exist_ok=True)
                os.replace(dst, trash / f"{len(list(trash.iterdir()))}")
            os.replace(src, dst)
        shutil.rmtree(self.path, ignore_errors=True)


def _read_case(
    case: BratsCase, convention: str, validate: bool, need_images: bool, need_label: bool
) -> tuple[list[Volume], Volume | None]:
    """Read what the preparation of ``case`` needs; check values when ``validate``.

    Geometry is checked whenever the images are read (also without ``validate``): slicing needs it.
    """
    images = [read_volume(p) for p in case.images] if need_images else []
    label = read_volume(case.label) if need_label and case.label is not None else None
    for vol in images:
        check_spatial_ndim(vol, 3)
        if validate:
            check_finite(vol)
    for vol in images[1:]:
        check_same_geometry(images[0], vol, spatial_dims=3)
    if validate:  # after the geometry: a wrong shape is the more useful message
        for vol in images:
            check_not_constant(vol)
    if label is not None:
        if images:
            check_spatial_ndim(label, 3)
            check_same_geometry(images[0], label, spatial_dims=3)
        if validate:
            check_label_values(label, label_values(convention))
    return images, label


def _label_2018(label: Volume, convention: str) -> np.ndarray:
    # Even a 2018 label goes through the (identity) table: it rejects values that uint8 would silently wrap.
    try:
        return convert_convention(np.asarray(label.array), convention, _OUTPUT_CONVENTION).astype(np.uint8)
    except ValueError as e:
        raise DataError(label.path, str(e)) from None


def _header(root: Path, convention: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "source": str(root),
        "label_convention": _OUTPUT_CONVENTION,
        "source_label_convention": convention,
        "modalities": list(MODALITIES),
        "labels": dict(OUTPUT_LABELS),
    }


def prepare_brats(
    root: str | os.PathLike,
    out: str | os.PathLike,
    label_convention: str = "2018",
    slices2d: str | os.PathLike | None = None,
    min_brain_fraction: float = DEFAULT_MIN_BRAIN_FRACTION,
    validate: bool = True,
) -> Path:
    """Write a MONAI datalist for a BraTS folder, and optionally export axial 2D slices.

    The datalist format is described in this module's docstring. With ``slices2d``, every case is also cut into
    axial slices (last axis, z) written to ``slices2d/slices/<case>/``:

    - ``<case>_z<idx:03d>_image.nii.gz``: shape ``(H, W, 4)``, channel-last float32, channels t1, t1ce, t2, flair
      (load with ``EnsureChannelFirstd(channel_dim=-1)``);
    - ``<case>_z<idx:03d>_label.nii.gz``: shape ``(H, W)``, uint8, 2018 convention (labelled cases only);

    both with the volume's affine whose origin is moved to the slice (:func:`slice_affine`), and a datalist
    ``slices2d/datalist.json`` in the same format whose entries also carry ``"case_id"`` and ``"slice"`` (so that a
    later split keeps the slices of one case together).

    Keep ``out`` and ``slices2d`` apart from ``root`` itself (sub-folders of it are fine, they are skipped as cases):
    MONAI's ``load_decathlon_datalist`` replaces any string naming an existing path relative to the datalist's folder
    by that path, so a datalist in ``root`` would have its case ids turned into case folders.

    Drop rule for slices: a slice is kept when the brain (voxels non-zero in any modality) covers at least
    ``min_brain_fraction`` of the slice; every slice that contains tumour is kept whatever its brain fraction.

    Args:
        root: folder of BraTS case folders (2018-2021 or 2023 naming, detected per case).
        out: output folder for ``datalist.json`` and converted labels (``labels/<case>_seg.nii.gz``).
        label_convention: label convention of the input segmentations: ``"2018"``, ``"2023"``, ``"msd"``, ``"2015"``
            (or ``"contiguous"``). Output labels are always in the 2018 convention.
        slices2d: output folder for the 2D slice export, or None for none.
        min_brain_fraction: in [0, 1], see the drop rule.
        validate: read every file and check it: readable, finite voxels, same shape and affine across modalities
            and label, label values within ``label_convention``. Without it, only files that must be read (labels
            to convert, slices to export) are read.

    Returns:
        The path of the written ``out/datalist.json``.

    Raises:
        DataError: naming the case folder or file: missing folder or modality, unrecognisable case folder, file
            empty or unreadable, NaN / Inf voxels, shape or affine mismatch, label value outside the convention.
            Nothing is left in ``out`` or ``slices2d`` when it is raised.
        ValueError: unknown ``label_convention`` or ``min_brain_fraction`` outside [0, 1].
    """
    convention = check_convention("label_convention", label_convention)
    min_brain_fraction = float(check_in_range("min_brain_fraction", min_brain_fraction, 0.0, 1.0))
    root = Path(root).absolute()
    out = Path(out).absolute()
    out2d = Path(slices2d).absolute() if slices2d is not None else None
    if out2d is not None and out2d == out:
        raise ValueError(f"slices2d must differ from out, both are {str(out)!r}.")

    # File names are checked for every case before anything is read or written.
    # Outputs placed inside root (also out == root) must not be read back as case folders on a rerun.
    cases = find_cases(root, exclude=(out, out / "labels", out2d))

    stage = _Staging.create(out)
    stage2d = None
    try:
        stage2d = _Staging.create(out2d) if out2d is not None else None
        training, unlabeled, training2d, unlabeled2d = [], [], [], []
        staged, staged2d = [], []
        for case in cases:
            images_listed = [str(p) for p in case.images]
            convert = case.label is not None and convention != _OUTPUT_CONVENTION
            images, label = _read_case(
                case,
                convention,
                validate,
                need_images=validate or out2d is not None,
                need_label=validate or convert or out2d is not None,
            )
            label_2018 = _label_2018(label, convention) if label is not None else None

            if case.label is None:
                unlabeled.append({"image": images_listed, "case_id": case.case_id})
            elif convert:
                name = f"labels/{case.case_id}_seg.nii.gz"
                write_nifti(label_2018, label.affine, stage.path / name, dtype=np.uint8)
                staged.append(name)
                training.append({"image": images_listed, "label": str(out / name), "case_id": case.case_id})
            else:
                training.append({"image": images_listed, "label": str(case.label), "case_id": case.case_id})

            if stage2d is not None:
                entries = _export_slices(case, images, label_2018, min_brain_fraction, stage2d.path, out2d)
                staged2d.append(f"{_SLICES_DIR}/{case.case_id}")
                (training2d if case.label is not None else unlabeled2d).extend(entries)

        datalist = _header(root, convention, root.name)
        datalist.update(
            {
                "tensorImageSize": "4D",
                "numTraining": len(training),
                "numUnlabeled": len(unlabeled),
                "training": training,
                "unlabeled": unlabeled,
            }
        )
        if stage2d is not None:
            datalist2d = _header(root, convention, f"{root.name} axial slices")
            datalist2d.update(
                {
                    "tensorImageSize": "3D",
                    "image_layout": "(H, W, 4) channel-last float32: " + ", ".join(MODALITIES),
                    "slice_axis": 2,
                    "min_brain_fraction": min_brain_fraction,
                    "drop_rule": _DROP_RULE,
                    "numTraining": len(training2d),
                    "numUnlabeled": len(unlabeled2d),
                    "training": training2d,
                    "unlabeled": unlabeled2d,
                }
            )
    except BaseException:
        # 2D first: out2d may sit inside out, whose own folder is removed only when empty.
        if stage2d is not None:
            stage2d.abort()
        stage.abort()
        raise

    if stage2d is not None:
        stage2d.commit(staged2d)
        write_json(datalist2d, out2d / "datalist.json")
    stage.commit(staged)
    # The 3D datalist is written last: its presence means the whole run succeeded.
    return write_json(datalist, out / "datalist.json")


def _export_slices(
    case: BratsCase,
    images: list[Volume],
    label: np.ndarray | None,
    min_brain_fraction: float,
    stage: Path,
    final: Path,
) -> list[dict[str, Any]]:
    """Write the kept axial slices of ``case`` under ``stage/<case>/``; return their datalist entries (final paths)."""
    shape = images[0].array.shape
    stacked = np.empty((*shape, len(images)), dtype=np.float32)
    for c, vol in enumerate(images):
        stacked[..., c] = vol.array
    affine = images[0].affine
    entries = []
    for z in slices_to_keep(stacked, label, min_brain_fraction).tolist():
        stem = f"{_SLICES_DIR}/{case.case_id}/{case.case_id}_z{z:03d}"
        slice_aff = slice_affine(affine, z)
        write_nifti(np.ascontiguousarray(stacked[:, :, z, :]), slice_aff, stage / f"{stem}_image.nii.gz")
        entry: dict[str, Any] = {"image": str(final / f"{stem}_image.nii.gz")}
        if label is not None:
            write_nifti(np.ascontiguousarray(label[:, :, z]), slice_aff, stage / f"{stem}_label.nii.gz", np.uint8)
            entry["label"] = str(final / f"{stem}_label.nii.gz")
        entry.update({"case_id": case.case_id, "slice": z})
        entries.append(entry)
    if not entries:
        # Keep the case folder so that committing it replaces older slices of this case.
        (stage / _SLICES_DIR / case.case_id).mkdir(parents=True, exist_ok=True)
    return entries
