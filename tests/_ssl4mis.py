"""Tiny folders in the SSL4MIS HDF5 layout, made on the fly: 2D slices + volumes (ACDC) and 3D volumes (LA)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_h5(path: Path, image: np.ndarray | None, label: np.ndarray | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if image is not None:
            f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)
    return path


def _case(rng: np.random.Generator, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(shape, np.uint8)
    h, w = shape[-2:]
    for c in range(1, classes):  # nested squares, one class each, like ventricles in myocardium
        m = c * max(1, h // 10)
        label[..., m : h - m, m : w - m] = c
    image = (label / max(1, classes - 1) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return (image - image.min()) / (image.max() - image.min()), label


def make_acdc_like(root: Path, patients: int = 8, slices: int = 2, size: int = 32, held_out: int = 2) -> Path:
    """``patients`` training patients (2 frames x ``slices`` slices each), ``held_out`` validation and test volumes."""
    rng = np.random.default_rng(0)
    train, train_vols = [], []
    for p in range(1, patients + 1):
        for frame in (1, 2):
            volume = f"patient{p:03d}_frame{frame:02d}"
            train_vols.append(volume)
            for k in range(1, slices + 1):
                name = f"{volume}_slice_{k}"
                write_h5(root / "data" / f"{name}.h5", *_case(rng, (size, size + 4), 4))
                train.append(name)
    lists = {"val": [], "test": []}
    for i, part in enumerate(["val"] * held_out + ["test"] * held_out):
        name = f"patient{100 + i:03d}_frame01"
        write_h5(root / "data" / f"{name}.h5", *_case(rng, (3, size + 8, size), 4))  # slices x H x W
        lists[part].append(name)
    (root / "train_slices.list").write_text("\n".join(train) + "\n")
    (root / "train.list").write_text("\n".join(train_vols) + "\n")
    (root / "val.list").write_text("\n".join(lists["val"]) + "\n")
    (root / "test.list").write_text("\n".join(lists["test"]) + "\n")
    return root


#: Where the 3D layouts keep case ``{}``: as the LA release nests it, one folder per case, one file per case (the
#: BraTS 2019 set of UA-MT), one file per case under ``data/``.
LAYOUTS_3D = ("2018LA_Seg_Training Set/{}/mri_norm2.h5", "{}/mri_norm2.h5", "{}.h5", "data/{}.h5")


def make_la_like(root: Path, cases: int = 4, size: int = 16, where: str = LAYOUTS_3D[0]) -> Path:
    """3D layout (``where``: a pattern of :data:`LAYOUTS_3D`), ``train.list`` and ``test.list``."""
    rng = np.random.default_rng(1)
    names = [f"CASE{i:02d}" for i in range(cases + 1)]
    for name in names:
        write_h5(root / where.format(name), *_case(rng, (size, size + 2, size - 4), 2))
    (root / "train.list").write_text("\n".join(names[:cases]) + "\n")
    (root / "test.list").write_text(names[cases] + "\n")
    return root
