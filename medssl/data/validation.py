"""Checks on what medssl reads: finite voxels, known labels, matching image/label geometry, dimensionality.

Each check raises :class:`~medssl.errors.DataError` naming the file and the problem; none modifies its input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medssl.data.io import Volume
from medssl.errors import DataError

__all__ = ["check_finite", "check_not_constant", "check_label_values", "check_same_geometry", "check_spatial_ndim"]


def check_finite(vol: Volume) -> None:
    """Raise if ``vol`` holds NaN or Inf voxels."""
    arr = vol.array
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum() - n_nan)
            raise DataError(vol.path, f"image holds {n_nan} NaN and {n_inf} Inf voxels")


def check_not_constant(vol: Volume) -> None:
    """Raise if every voxel of ``vol`` has the same value (an empty export, a blank modality)."""
    arr = vol.array
    if arr.size and np.all(arr == arr.flat[0]):
        raise DataError(vol.path, f"image is constant (every voxel is {arr.flat[0]})")


def check_label_values(vol: Volume, allowed: Iterable[int]) -> np.ndarray:
    """Raise if ``vol`` holds a value outside ``allowed`` or a non-integer value; return the values present."""
    allowed = sorted({int(a) for a in allowed})
    arr = vol.array
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(vol.path, "label holds NaN or Inf voxels")
        if not np.array_equal(arr, np.round(arr)):
            raise DataError(vol.path, "label holds non-integer values")
    values = np.unique(arr).astype(np.int64)
    unknown = sorted(set(values.tolist()) - set(allowed))
    if unknown:
        raise DataError(vol.path, f"label values {unknown} are not in the allowed set {allowed}")
    return values


def check_spatial_ndim(vol: Volume, ndim: int, channels_last: bool = False) -> None:
    """Raise unless ``vol`` has ``ndim`` spatial axes (a trailing singleton axis of a 2D image stored as 3D is fine)."""
    shape = vol.array.shape[:-1] if channels_last else vol.array.shape
    if ndim == 2 and len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) != ndim:
        raise DataError(vol.path, f"expected a {ndim}D image, got shape {tuple(vol.array.shape)}")


def check_same_geometry(
    image: Volume, label: Volume, atol: float = 1e-3, rtol: float = 1e-4, spatial_dims: int | None = None
) -> None:
    """Raise unless ``image`` and ``label`` share spatial shape and affine (within ``atol`` mm and ``rtol``).

    Args:
        image: the image volume (may carry trailing channel axes beyond ``spatial_dims``).
        label: the label volume.
        atol: absolute tolerance on affine entries, in mm.
        rtol: relative tolerance on affine entries.
        spatial_dims: number of leading spatial axes to compare (default: the label's number of axes).
    """
    nd = spatial_dims or label.array.ndim
    img_shape: Sequence[int] = image.array.shape[:nd]
    lab_shape: Sequence[int] = label.array.shape[:nd]
    if tuple(img_shape) != tuple(lab_shape):
        raise DataError(
            [image.path, label.path], f"image shape {tuple(img_shape)} and label shape {tuple(lab_shape)} differ"
        )
    if not np.allclose(image.affine, label.affine, atol=atol, rtol=rtol):
        diff = float(np.abs(image.affine - label.affine).max())
        raise DataError(
            [image.path, label.path], f"image and label affines differ by up to {diff:.4g} (tolerance {atol})"
        )
