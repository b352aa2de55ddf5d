"""Slice-by-slice inference of a 2D network at a fixed in-plane size: the SSL4MIS protocol for 2D cardiac MRI.

The semi-supervised ACDC papers train a 2D network on whole slices resized to one size (256 x 256; medssl's CPU
protocol 128 x 128) and test it on each slice of a volume resized the same way, the prediction resized back to the
slice's own size. MONAI's ``SliceInferer`` slides a window over each slice at its native size, and ``Resized`` +
``Invertd`` would need one pipeline for slice files and another for volumes; this inferer does the resizing itself,
so the same pre-processing serves a 2D slice ``(B, C, H, W)`` and a volume ``(B, C, H, W, D)`` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

from medssl.checks import check_positive

__all__ = ["ResizedSliceInferer"]


class ResizedSliceInferer(Inferer):
    """Run a 2D network on every slice, resized to ``spatial_size``; resize its logits back to the slice's size.

    Slices of a volume are taken along the last axis and go through the network ``sw_batch_size`` at a time. The
    image is resized with bilinear interpolation (as the training slices are), the logits back with bilinear
    interpolation before any argmax, so labels are not resampled twice.

    Args:
        spatial_size: the network's in-plane input size ``(h, w)``.
        sw_batch_size: slices per forward pass.

    Raises:
        ValueError: ``spatial_size`` is not two positive sizes; (on call) the input is not 4D or 5D.

    >>> inferer = ResizedSliceInferer((64, 64))
    >>> net = torch.nn.Conv2d(1, 4, 3, padding=1)
    >>> inferer(torch.zeros(1, 1, 90, 70, 5), net).shape
    torch.Size([1, 4, 90, 70, 5])
    """

    def __init__(self, spatial_size: Sequence[int], sw_batch_size: int = 32) -> None:
        super().__init__()
        size = tuple(int(s) for s in spatial_size)
        if len(size) != 2 or any(s < 1 for s in size):
            raise ValueError(f"spatial_size must be two positive sizes (h, w), got {tuple(spatial_size)}.")
        self.spatial_size = size
        self.sw_batch_size = int(check_positive("sw_batch_size", sw_batch_size))

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if inputs.ndim not in (4, 5):
            raise ValueError(f"expected (B, C, H, W) slices or (B, C, H, W, D) volumes, got {tuple(inputs.shape)}.")
        x = torch.as_tensor(inputs)  # plain tensor: no metadata tracking in the loop
        volume = x.ndim == 5
        if volume:
            b, c, h, w, d = x.shape
            x = x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
        else:
            b, c, h, w = x.shape
        resized = (h, w) != self.spatial_size
        if resized:
            x = F.interpolate(x, size=self.spatial_size, mode="bilinear", align_corners=False)
        out = torch.cat([network(chunk, *args, **kwargs) for chunk in torch.split(x, self.sw_batch_size)], dim=0)
        if resized:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        if volume:
            out = out.reshape(b, d, -1, h, w).permute(0, 2, 3, 4, 1)
        return out
