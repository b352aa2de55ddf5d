"""Write a synthetic data set (phantom NIfTI files and a MONAI decathlon-style ``dataset.json``) to disk.

This is medssl's embedded default data: demos, bundle tests and benchmarks run on it without a download. Each case
draws from its own random generator seeded by ``(seed, case index)``, so case ``i`` is the same file whatever the
number of cases asked for, and a data set is reproducible from the seed recorded in its ``dataset.json``.

Layout written under ``out``::

    dataset.json
    imagesTr/lung_vessel_000.nii.gz                                   (lung_vessel: one CT image per case)
    imagesTr/brats_000_t1.nii.gz, ..._t1ce, ..._t2, ..._flair        (brats: four MR contrasts per case)
    labelsTr/<case>.nii.gz
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medssl import __version__
from medssl.checks import check_choice, check_in_range, check_type
from medssl.data.io import write_json, write_nifti
from medssl.data.phantoms import (
    BRATS_LABELS,
    BRATS_MODALITIES,
    LUNG_VESSEL_LABELS,
    MAX_SIZE,
    MIN_SIZE,
    VARIATIONS,
    brats_phantom,
    lung_vessel_phantom,
)

__all__ = ["TASKS", "SPACING_MM", "DATASET_JSON", "case_rng", "case_affine", "synthesize"]

TASKS = ("lung_vessel", "brats")
"""Tasks :func:`synthesize` knows."""
SPACING_MM = {"lung_vessel": 1.0, "brats": 1.0}
"""Isotropic voxel spacing (mm) per task, written into each file's affine."""
DATASET_JSON = "dataset.json"
"""Name of the datalist :func:`synthesize` writes."""

_DESCRIPTION = {
    "lung_vessel": "Synthetic chest CT (HU) with a labelled pulmonary vessel tree and unlabelled nodules and airways",
    "brats": "Synthetic skull-stripped brain MR (t1, t1ce, t2, flair) with a glioma, BraTS 2018 labels",
}


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as a Python int, raising ``TypeError`` for a non-integer and ``ValueError`` outside [low, high]."""
    check_type(name, value, (int, np.integer))
    return int(check_in_range(name, int(value), low, high))


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of case ``index`` in a data set made with ``seed``; independent of the number of cases.

    Raises:
        TypeError: ``seed`` or ``index`` is not an int.
        ValueError: ``seed`` or ``index`` is negative.
    """
    return np.random.default_rng([_check_int("seed", seed, 0), _check_int("index", index, 0)])


def case_affine(size: int, spacing: float) -> np.ndarray:
    """RAS+ affine of a ``size``-voxel cube with isotropic ``spacing`` (mm), centred on the world origin."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(size - 1) / 2.0 * spacing
    return affine


def synthesize(
    task: str, cases: int, size: int, seed: int, out: str | os.PathLike, variation: str = "case"
) -> Path:
    """Generate ``cases`` phantoms of ``task`` and write them with a decathlon-style ``dataset.json`` under ``out``.

    ``dataset.json`` holds ``name``, ``description``, ``task``, ``seed``, ``size``, ``spacing``, ``modality``,
    ``labels``, ``numTraining`` and ``training``, a list of ``{"image", "label", "case_id"}`` whose paths are relative
    to ``out``. For ``brats`` the ``image`` is a list of the four contrasts in the order t1, t1ce, t2, flair. Images
    are float32 (HU for ``lung_vessel``), labels uint8. ``dataset.json`` is written last, so its presence means every
    file it names is complete; files of an earlier, larger data set in ``out`` are left in place but not listed.

    Args:
        task: ``"lung_vessel"`` or ``"brats"``.
        cases: number of cases (>= 1).
        size: voxels per side of each cubic volume, in [32, 256].
        seed: non-negative integer; case ``i`` is generated from ``(seed, i)``.
        out: output folder, created if needed.
        variation: ``lung_vessel`` only: how much cases differ (:data:`~medssl.data.phantoms.VARIATIONS`); ``scanner``
            gives each case its own scanner calibration, contrast phase, dose and vessel calibre.

    Returns:
        Path of the written ``dataset.json``.

    Raises:
        TypeError: ``cases``, ``size`` or ``seed`` is not an int.
        ValueError: ``task`` or ``variation`` is unknown (or ``variation`` is not ``case`` for brats), ``cases`` < 1,
            ``size`` outside [32, 256], ``seed`` < 0, or ``out`` is an existing file.

    >>> synthesize("lung_vessel", cases=2, size=32, seed=0, out="data/lung")  # doctest: +SKIP
    PosixPath('data/lung/dataset.json')
    """
    check_choice("task", task, TASKS)
    check_choice("variation", variation, VARIATIONS)
    if variation != "case" and task != "lung_vessel":
        raise ValueError(f"variation {variation!r} is for lung_vessel phantoms, not {task}.")
    cases = _check_int("cases", cases, 1)
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE)
    seed = _check_int("seed", seed, 0)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the existing file {out}.")

    spacing = SPACING_MM[task]
    affine = case_affine(size, spacing)
    width = max(3, len(str(cases - 1)))
    training = []
    for i in range(cases):
        name = f"{task}_{i:0{width}d}"
        rng = case_rng(seed, i)
        label_rel = f"labelsTr/{name}.nii.gz"
        if task == "lung_vessel":
            image, label = lung_vessel_phantom(size, rng, variation=variation)
            image_rel: str | list[str] = f"imagesTr/{name}.nii.gz"
            write_nifti(image, affine, out / image_rel, dtype=np.float32)
        else:
            images, label = brats_phantom(size, rng)
            image_rel = [f"imagesTr/{name}_{m}.nii.gz" for m in BRATS_MODALITIES]
            for modality, rel in zip(BRATS_MODALITIES, image_rel):
                write_nifti(images[modality], affine, out / rel, dtype=np.float32)
        write_nifti(label, affine, out / label_rel, dtype=np.uint8)
        training.append({"image": image_rel, "label": label_rel, "case_id": name})

    dataset: dict[str, Any] = {
        "name": f"{task}_synthetic",
        "description": _DESCRIPTION[task],
        "task": task,
        "seed": seed,
        "size": size,
        "variation": variation,
        "spacing": [spacing] * 3,
        "generator": f"medssl {__version__} medssl.data.synthetic",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"} if task == "lung_vessel" else {str(k): m for k, m in enumerate(BRATS_MODALITIES)},
        "labels": dict(LUNG_VESSEL_LABELS if task == "lung_vessel" else BRATS_LABELS),
        "numTraining": cases,
        "training": training,
    }
    return write_json(dataset, out / DATASET_JSON)
