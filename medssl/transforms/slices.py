"""Loading the slice files of one scan as one volume (see :func:`medssl.data.slices.stack_slices`), and normalising
such a volume slice by slice, as the slices were normalised in training."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, NormalizeIntensity

from medssl.errors import DataError

__all__ = ["StackSlicesd", "SliceWiseNormalizeIntensityd"]


class StackSlicesd(MapTransform):
    """Load each key's list of 2D slice files and stack them along a new axis after the two in-plane axes.

    Slices ``(H, W)`` become a volume ``(H, W, D)``; multi-channel slices ``(H, W, C)`` become ``(H, W, D, C)``
    (then ``EnsureChannelFirstd(channel_dim=-1)``). The volume keeps the first slice's affine (the slice files of
    ``medssl prepare`` keep the volume's axes, with the origin at their own slice) and takes the case id as its
    ``filename_or_obj``, so per-case tables name the scan. A key holding a single path is loaded as it is.

    Raises:
        DataError: the slices of one case differ in shape (naming the first file and the odd one).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(image_only=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            files = d[key]
            if isinstance(files, (str, bytes)) or not isinstance(files, (list, tuple)):
                d[key] = self.loader(files)
                continue
            slices = [self.loader(f) for f in files]
            for f, s in zip(files, slices):
                if s.shape != slices[0].shape:
                    raise DataError([files[0], f], f"slices of one scan differ in shape: {tuple(slices[0].shape)} "
                                    f"and {tuple(s.shape)}")
            volume = torch.stack([s.as_tensor() for s in slices], dim=2)
            meta = {k: v for k, v in slices[0].meta.items() if k != "affine"}
            meta["filename_or_obj"] = str(d.get("case_id", files[0]))
            meta["spatial_shape"] = tuple(volume.shape[:3])
            d[key] = MetaTensor(volume, affine=slices[0].affine, meta=meta)
        return d


class SliceWiseNormalizeIntensityd(MapTransform):
    """MONAI's :class:`~monai.transforms.NormalizeIntensity` on each slice of a channel-first volume ``(C, H, W, D)``
    along its last axis: a scan stacked from 2D slices is then normalised as each slice was when a 2D model trained
    on it (per slice), not with the statistics of the whole scan, which differ and cost the model accuracy.

    Args:
        keys: keys of the volumes.
        nonzero, channel_wise: as for ``NormalizeIntensity``.
    """

    def __init__(self, keys: KeysCollection, nonzero: bool = True, channel_wise: bool = True) -> None:
        super().__init__(keys)
        self.normalize = NormalizeIntensity(nonzero=nonzero, channel_wise=channel_wise)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            volume = d[key]
            slices = [self.normalize(volume[..., z]) for z in range(volume.shape[-1])]
            d[key] = torch.stack([torch.as_tensor(x) for x in slices], dim=-1)
            if isinstance(volume, MetaTensor):
                d[key] = MetaTensor(d[key], meta=volume.meta, applied_operations=volume.applied_operations)
        return d
