"""Checks of each case as it is loaded for training, evaluation or inference.

A scan that slipped past data preparation (NaN voxels, unknown labels, image and label on different grids, a 2D
image for a 3D network) must stop the run with the file's name and the problem, not with a cryptic error from deep
inside a network or a loss several minutes later.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medssl.errors import DataError

__all__ = ["ValidateCased"]


def _source(data: Mapping, key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    name = meta.get("filename_or_obj", None)
    if isinstance(name, (list, tuple)):
        name = ", ".join(str(n) for n in name)
    return str(name) if name else f"<{key}>"


class ValidateCased(MapTransform):
    """Check loaded, channel-first images and labels; raise :class:`~medssl.errors.DataError` naming the file.

    Checks: image voxels are finite and not all equal; images have ``spatial_dims`` spatial axes and, when given,
    ``channels`` channels; labels hold only ``label_values``; every key shares the spatial shape and (within
    ``atol`` mm) the affine of the first key; the spatial shape is at least ``min_shape`` when given.

    Args:
        keys: image keys (checked for finite values and channels).
        label_keys: label keys (checked for allowed values).
        spatial_dims: 2 or 3, or a tuple of the accepted values (an inference pipeline taking slices and volumes).
        channels: expected image channels, or None.
        label_values: allowed label values, or None to skip.
        min_shape: smallest allowed spatial shape (e.g. the training ROI), or None.
        atol: tolerance on affine entries, in mm.
        allow_missing_keys: skip keys that are absent (e.g. the label of an unlabelled case).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        spatial_dims: int | tuple[int, ...] = 3,
        channels: int | None = None,
        label_values: Iterable[int] | None = None,
        min_shape: Iterable[int] | None = None,
        atol: float = 1e-3,
        allow_missing_keys: bool = True,
    ) -> None:
        label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
        super().__init__(list(self._as_list(keys)) + label_keys, allow_missing_keys)
        self.image_keys = list(self._as_list(keys))
        self.label_keys = label_keys
        self.spatial_dims = tuple(spatial_dims) if isinstance(spatial_dims, (tuple, list)) else (int(spatial_dims),)
        self.channels = channels
        self.label_values = None if label_values is None else sorted({int(v) for v in label_values})
        self.min_shape = None if min_shape is None else tuple(int(s) for s in min_shape)
        self.atol = atol

    @staticmethod
    def _as_list(keys: KeysCollection) -> list:
        return [keys] if isinstance(keys, (str, int)) else list(keys)

    def _check_image(self, key: Hashable, img: Any, src: str) -> None:
        arr = torch.as_tensor(img)
        if arr.ndim - 1 not in self.spatial_dims:
            dims = " or ".join(f"{d}D" for d in self.spatial_dims)
            raise DataError(src, f"expected a {dims} image with a channel axis, got shape {tuple(arr.shape)}")
        if self.channels is not None and arr.shape[0] != self.channels:
            raise DataError(src, f"expected {self.channels} image channels, got {arr.shape[0]}")
        if torch.is_floating_point(arr):
            finite = torch.isfinite(arr)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(arr).sum())
                raise DataError(src, f"image holds {n_nan} NaN and {int((~finite).sum()) - n_nan} Inf voxels")
        if arr.numel() and bool((arr == arr.reshape(-1)[0]).all()):
            raise DataError(src, f"image is constant (every voxel is {float(arr.reshape(-1)[0])})")

    def _check_label(self, key: Hashable, lab: Any, src: str) -> None:
        arr = torch.as_tensor(lab)
        if torch.is_floating_point(arr) and not bool(torch.isfinite(arr).all()):
            raise DataError(src, "label holds NaN or Inf voxels")
        if self.label_values is not None:
            values = sorted({int(v) for v in torch.unique(arr).tolist()}) if arr.numel() else []
            if torch.is_floating_point(arr) and not bool((arr == arr.round()).all()):
                raise DataError(src, "label holds non-integer values")
            unknown = sorted(set(values) - set(self.label_values))
            if unknown:
                raise DataError(src, f"label values {unknown} are not in the allowed set {self.label_values}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref_key = None
        for key in self.key_iterator(d):
            src = _source(d, key)
            value = d[key]
            if key in self.image_keys:
                self._check_image(key, value, src)
            else:
                self._check_label(key, value, src)
            shape = tuple(value.shape[1:])
            if self.min_shape is not None and any(s < m for s, m in zip(shape, self.min_shape)):
                raise DataError(src, f"spatial shape {shape} is smaller than the region of interest {self.min_shape}")
            if ref_key is None:
                ref_key, ref_shape, ref_affine, ref_src = key, shape, getattr(value, "affine", None), src
                continue
            if shape != ref_shape:
                raise DataError([ref_src, src], f"'{ref_key}' shape {ref_shape} and '{key}' shape {shape} differ")
            affine = getattr(value, "affine", None)
            if ref_affine is not None and affine is not None:
                diff = float(np.abs(np.asarray(ref_affine, dtype=float) - np.asarray(affine, dtype=float)).max())
                if diff > self.atol:
                    raise DataError([ref_src, src], f"'{ref_key}' and '{key}' affines differ by up to {diff:.4g} mm")
        return d
