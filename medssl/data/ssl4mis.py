"""``medssl prepare ssl4mis``: HDF5 datasets in the SSL4MIS layout (ACDC, LA, BraTS 2019) as medssl datalists.

The semi-supervised segmentation papers (SSL4MIS, UA-MT, BCP, UniMatch, ...) share one HDF5 layout. Each ``.h5``
file holds two datasets, ``image`` (float) and ``label`` (integer classes), and list files name the cases:

- **2D layout** (ACDC): ``data/<patient>_<frame>_slice_<k>.h5`` are 2D training slices, listed in
  ``train_slices.list``; ``data/<patient>_<frame>.h5`` are volumes stored ``slices x H x W``, listed in ``val.list``
  and ``test.list`` (``train.list`` names the training volumes, which need not be present).
- **3D layout** (LA, BraTS 2019): one volume per case, ``data/<case>.h5`` or ``<case>/mri_norm2.h5`` (anywhere below
  the root, as the LA release nests them), listed in ``train.list`` / ``train.txt``, and ``test.list`` /
  ``test.txt`` (``val.list`` / ``val.txt`` when present).

medssl converts the files to NIfTI once (``images/`` and ``labels/`` under ``out``), so that every medssl and MONAI
tool reads them as it reads any other dataset (``LoadImaged``, bundle inference, deploy). The files carry no voxel
spacing: the NIfTI files get an identity affine, and distances (HD95) are in voxels. 2D-layout volumes are written
``H x W x slices`` (the slice axis last, as medssl's 2D bundles slice volumes); 3D-layout volumes keep their axes.

**The labelled subset is the papers' one.** For the 2D layout, ``k`` labelled patients are all the training slices
of the first ``k`` patients in ``train_slices.list`` order (ACDC: 3 patients = the first 68 slices, 7 = 136, as
SSL4MIS's ``patients_to_slices`` table gives); for the 3D layout, the first ``k`` lines of the training list
(UA-MT's ``labelnum``). Every other training case is unlabelled (listed without its label). One datalist is written
per labelled setting, ``datalist_<k>.json``, and ``datalist_all.json`` with every training case labelled (the upper
bound); the unlabelled and held-out parts of all of them are the same files. The defaults are each layout's
benchmark: ACDC's 3 and 7 patients and 4 classes (2D), LA's 1, 4 and 8 cases and 2 classes (3D).

**Validation carved from the training list.** LA (and BraTS 2019) has no validation list. ``val_from_train=N`` makes
the last ``N`` IDs of the 3D training list the validation set: no setting labels them (the first ``k`` labelled come
from the other IDs, and a ``k`` that would reach into them is an error), they are neither unlabelled nor in
``datalist_all.json``'s training part, and the test list is never touched. A root with its own validation list
(ACDC's ``val.list``) refuses ``N > 0``, as two validation sets would be ambiguous. Each datalist's ``split`` record
names the validation IDs and where they came from.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.datalist import save_datalist
from medssl.data.io import write_nifti
from medssl.errors import DataError, DatalistError

__all__ = [
    "LAYOUTS", "DEFAULT_LABELED", "DEFAULT_NUM_CLASSES", "Layout", "detect_layout", "read_h5_case", "labeled_cases",
    "carve_validation", "prepare_ssl4mis",
]  # fmt: skip

LAYOUTS = ("2d", "3d")
#: The labelled settings written when none are asked for: ACDC's patients (2D), LA's cases (3D).
DEFAULT_LABELED = {"2d": (3, 7), "3d": (1, 4, 8)}
#: The number of classes when none is given: ACDC's background + 3 structures (2D), LA's and BraTS 2019's 0/1 (3D).
DEFAULT_NUM_CLASSES = {"2d": 4, "3d": 2}
_SLICE = re.compile(r"^(?P<volume>.+)_slice_(?P<index>\d+)$")
_IDENTITY = np.eye(4)


@dataclass(frozen=True)
class Layout:
    """Where the lists and files of one SSL4MIS-layout folder are."""

    kind: str  # "2d" or "3d"
    train_list: Path
    val_list: Path | None
    test_list: Path | None


def _find_list(root: Path, stem: str) -> Path | None:
    for suffix in (".list", ".txt"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    return None


def detect_layout(root: str | os.PathLike, layout: str = "auto") -> Layout:
    """The layout of ``root``: 2D when it has ``train_slices.list``, else 3D (``train.list`` or ``train.txt``).

    Raises:
        DataError: ``root`` is not a folder, or has no training list.
        ValueError: ``layout`` is not ``auto``, ``2d`` or ``3d``.
    """
    root = Path(root)
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"layout must be one of ['2d', '3d', 'auto'], got {layout!r}.")
    if not root.is_dir():
        raise DataError(root, "SSL4MIS folder not found")
    slices = _find_list(root, "train_slices")
    kind = layout if layout != "auto" else ("2d" if slices is not None else "3d")
    train = slices if kind == "2d" else _find_list(root, "train")
    if train is None:
        wanted = "train_slices.list" if kind == "2d" else "train.list or train.txt"
        raise DataError(root, f"no {wanted}: not a folder in the SSL4MIS layout")
    return Layout(kind, train, _find_list(root, "val"), _find_list(root, "test"))


def _read_list(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n.replace(".h5", "") for n in names if n]
    if not names:
        raise DatalistError(path, "list file names no case")
    return names


def _h5_path(root: Path, name: str, kind: str, source: Path) -> Path:
    """The file of case ``name``: ``data/<name>.h5``, else (3D) ``<name>.h5`` or ``<name>/mri_norm2.h5`` below root."""
    candidates = [root / "data" / f"{name}.h5"]
    if kind == "3d":
        candidates += [root / f"{name}.h5", root / name / "mri_norm2.h5"]
        candidates += sorted(root.glob(f"*/{name}/mri_norm2.h5")) + sorted(root.glob(f"*/{name}.h5"))
    for path in candidates:
        if path.is_file():
            return path
    raise DatalistError(source, f"names case '{name}', but no {candidates[0]} (nor another SSL4MIS location) exists")


def read_h5_case(
    path: str | os.PathLike, spatial_dims: int, num_classes: int, with_label: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``image`` (float32) and ``label`` (uint8) of one SSL4MIS file, checked.

    Raises:
        DataError: the file cannot be read, lacks ``image`` or ``label``, has the wrong number of dimensions, NaN or
            Inf voxels, image and label of different shapes, or label values outside ``0 .. num_classes - 1``.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image",) + (("label",) if with_label else ()) if k not in f]
            if missing:
                raise DataError(path, f"HDF5 file has no dataset {missing} (it holds {sorted(f.keys())})")
            image = np.asarray(f["image"][()], dtype=np.float32)
            label = np.asarray(f["label"][()]) if with_label else None
    except DataError:
        raise
    except Exception as e:  # h5py raises OSError, KeyError and others for damaged files
        raise DataError(path, f"cannot be read as HDF5 ({type(e).__name__}: {e})") from None
    if image.ndim != spatial_dims:
        raise DataError(path, f"expected a {spatial_dims}D 'image', got shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataError(path, f"'image' holds {int((~np.isfinite(image)).sum())} NaN or Inf voxels")
    if label is None:
        return image, None
    if label.shape != image.shape:
        raise DataError(path, f"'image' shape {image.shape} and 'label' shape {label.shape} differ")
    if np.issubdtype(label.dtype, np.floating) and not (np.isfinite(label).all() and (label == np.round(label)).all()):
        raise DataError(path, "'label' holds non-integer, NaN or Inf values")
    unknown = sorted(set(np.unique(label).astype(int).tolist()) - set(range(num_classes)))
    if unknown:
        raise DataError(path, f"label values {unknown} are not in 0..{num_classes - 1}")
    return image, label.astype(np.uint8)


def labeled_cases(names: Sequence[str], labeled: int, kind: str) -> list[str]:
    """The labelled training entries of the papers' protocol: those of the first ``labeled`` patients (2D slices,
    grouped by the patient id before the first ``_``) or the first ``labeled`` cases (3D).

    >>> labeled_cases(["p1_f1_slice_1", "p1_f2_slice_1", "p2_f1_slice_1", "p3_f1_slice_1"], 2, "2d")
    ['p1_f1_slice_1', 'p1_f2_slice_1', 'p2_f1_slice_1']

    Raises:
        ValueError: ``labeled`` is not between 1 and the number of patients (cases).
    """
    groups = [n.split("_")[0] for n in names] if kind == "2d" else list(names)
    patients = list(dict.fromkeys(groups))
    if not 1 <= labeled <= len(patients):
        raise ValueError(f"labeled must be between 1 and {len(patients)} (the training patients), got {labeled}.")
    keep = set(patients[:labeled])
    return [n for n, g in zip(names, groups) if g in keep]


def carve_validation(layout: Layout, train: Sequence[str], val_from_train: int) -> tuple[list[str], list[str]]:
    """Split the training list into the training pool and the validation IDs carved from its end.

    >>> layout = Layout("3d", Path("train.list"), None, None)
    >>> carve_validation(layout, ["a", "b", "c", "d"], 1)
    (['a', 'b', 'c'], ['d'])

    Raises:
        ValueError: ``val_from_train`` is negative, or asked of the 2D layout (its training list names slices).
        DatalistError: the root has its own validation list (two validation sets would be ambiguous), or the training
            list has no more than ``val_from_train`` cases (none would be left to train on).
    """
    if val_from_train < 0:
        raise ValueError(f"val_from_train must be 0 or more, got {val_from_train}.")
    if val_from_train == 0:
        return list(train), []
    if layout.val_list is not None:
        raise DatalistError(
            layout.val_list,
            f"this folder has its own validation list, so val_from_train={val_from_train} (validation carved from "
            f"{layout.train_list.name}) would be ambiguous: use the list, or remove it to carve validation instead",
        )
    if layout.kind != "3d":
        raise ValueError(
            f"val_from_train carves whole volumes from the 3D layout's training list; {layout.train_list} is a 2D "
            "layout's list of slices"
        )
    if val_from_train >= len(train):
        raise DatalistError(
            layout.train_list,
            f"names {len(train)} cases: too few to carve val_from_train={val_from_train} validation cases from its "
            "end and keep one to train on",
        )
    return list(train[:-val_from_train]), list(train[-val_from_train:])


def _check_labeled(labeled: int, pool: Sequence[str], validation: Sequence[str], train_list: Path) -> None:
    """Refuse a 3D ``labeled`` that would reach into the validation IDs carved from the end of the training list."""
    if validation and labeled > len(pool):
        raise ValueError(
            f"labeled={labeled} would reach into the validation cases: the last {len(validation)} IDs of "
            f"{train_list} are validation (val_from_train={len(validation)}), so at most {len(pool)} can be labelled."
        )


def _entry(name: str, kind: str, image: Path, label: Path | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"image": str(image)}
    if label is not None:
        entry["label"] = str(label)
    match = _SLICE.match(name) if kind == "2d" else None
    if match:  # slices of one volume share a case id, so that splits and stacking keep them together
        entry.update(case_id=match["volume"], slice=int(match["index"]))
    else:
        entry["case_id"] = name
    return entry


def prepare_ssl4mis(
    root: str | os.PathLike,
    out: str | os.PathLike,
    labeled: Sequence[int] | None = None,
    num_classes: int | None = None,
    layout: str = "auto",
    val_from_train: int = 0,
) -> dict[str, Path]:
    """Convert an SSL4MIS-layout folder to NIfTI and write one datalist per labelled setting.

    Args:
        root: the folder (holding ``data/`` and the list files).
        out: output folder (``images/``, ``labels/``, ``datalist_<k>.json``, ``datalist_all.json``).
        labeled: labelled patients (2D layout) or cases (3D layout) of each datalist to write; None for the layout's
            benchmark settings (:data:`DEFAULT_LABELED`: 3 and 7 for ACDC, 1, 4 and 8 for LA).
        num_classes: labels must lie in ``0 .. num_classes - 1``; None for the layout's (:data:`DEFAULT_NUM_CLASSES`:
            ACDC 4, LA and BraTS 2019 2).
        layout: ``2d``, ``3d`` or ``auto`` (:func:`detect_layout`).
        val_from_train: the last ``val_from_train`` IDs of the 3D training list become the validation set, labelled
            by no setting (:func:`carve_validation`); 0 keeps the root's own validation list, if any.

    Returns:
        the datalists written, one per labelled setting and ``"all"``: e.g. ``{"1": path, "4": path, "8": path,
        "all": path}``.

    Raises:
        DataError: a missing list or file, a file without ``image``/``label``, mismatched shapes, unknown labels or
            NaN voxels (nothing is written under ``out`` then: conversion goes to a staging folder first).
        DatalistError: ``val_from_train`` with a root that has a validation list, or not less than the training list.
        ValueError: ``labeled`` asks for more patients than the training list has, or for labelled cases among the
            validation ones.
    """
    root, out = Path(root), Path(out)
    found = detect_layout(root, layout)
    kind = found.kind
    labeled = DEFAULT_LABELED[kind] if labeled is None else labeled
    num_classes = DEFAULT_NUM_CLASSES[kind] if num_classes is None else num_classes
    train = _read_list(found.train_list)
    pool, carved = carve_validation(found, train, val_from_train)
    for k in labeled:
        _check_labeled(int(k), pool, carved, found.train_list)
    subsets = {int(k): labeled_cases(pool, int(k), kind) for k in labeled}
    listed = {part: path for part, path in (("validation", found.val_list), ("testing", found.test_list)) if path}
    held_out = {part: _read_list(path) for part, path in listed.items()}
    if carved:
        held_out = {"validation": carved} | held_out
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))  # one per call: two calls never share it
    (stage / "images").mkdir()
    (stage / "labels").mkdir()
    try:
        entries: dict[str, dict[str, Any]] = {}
        for name in train:  # the carved validation cases too, with their labels
            entries[name] = _convert(root, name, kind, found.train_list, stage, True, num_classes, volume=kind == "3d")
        for part, source in listed.items():
            for name in held_out[part]:
                entries[name] = _convert(root, name, kind, source, stage, True, num_classes, volume=True)
        for sub in ("images", "labels"):
            dest = out / sub
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(stage / sub, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    def final(name: str, with_label: bool) -> dict[str, Any]:
        e = dict(entries[name])
        e["image"] = str(out / "images" / Path(e["image"]).name)
        if with_label:
            e["label"] = str(out / "labels" / Path(e["label"]).name)
        else:
            e.pop("label", None)
        return e

    validation_from = found.val_list.name if found.val_list else None
    if carved:
        validation_from = f"the last {len(carved)} IDs of {found.train_list.name}, labelled by no setting"
    written: dict[str, Path] = {}
    settings = {str(k): v for k, v in subsets.items()} | {"all": pool}  # the upper bound labels the whole pool
    for key, lab in settings.items():
        lab_set = set(lab)
        datalist = {
            "name": f"{root.name} (SSL4MIS layout)",
            "labels": {str(i): str(i) for i in range(num_classes)},
            "training": [final(n, True) for n in pool if n in lab_set],
            "unlabeled": [final(n, False) for n in pool if n not in lab_set],
            **{part: [final(n, True) for n in names] for part, names in held_out.items()},
            "split": {
                "source": str(root),
                "protocol": "ssl4mis",
                "layout": kind,
                "labeled_fraction": len(lab_set) / len(pool),
                "labeled_patients": len({n.split('_')[0] for n in lab}) if kind == "2d" else len(lab),
                "labeled": [n for n in pool if n in lab_set],
                "validation": list(held_out.get("validation", [])),
                "validation_from": validation_from,
                "val_from_train": val_from_train,
            },
        }
        written[key] = save_datalist(datalist, out / f"datalist_{key}.json")
    return written


def _convert(
    root: Path, name: str, kind: str, source: Path, stage: Path, with_label: bool, num_classes: int, volume: bool
) -> dict[str, Any]:
    path = _h5_path(root, name, kind, source)
    dims = 3 if volume else 2
    image, label = read_h5_case(path, dims, num_classes, with_label)
    if kind == "2d" and volume:  # slices x H x W -> H x W x slices
        image = np.moveaxis(image, 0, -1)
        label = None if label is None else np.moveaxis(label, 0, -1)
    image_path = write_nifti(image, _IDENTITY, stage / "images" / f"{name}.nii.gz")
    label_path = write_nifti(label, _IDENTITY, stage / "labels" / f"{name}.nii.gz", np.uint8) if with_label else None
    return _entry(name, kind, image_path, label_path)
