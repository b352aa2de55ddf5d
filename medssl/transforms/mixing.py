"""Mixing images by a box: CutMix (UniMatch's strong views) and bidirectional copy-paste (BCP).

A box mask is 1 inside a random axis-aligned box and 0 elsewhere; mixing takes ``b`` inside the box and ``a``
outside, for images, labels and loss weights alike, so a mixed label is the box composition of its two sources.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medssl.checks import check_in_range

__all__ = ["box_mask", "random_area_box_mask", "box_mix"]


def box_mask(
    batch: int, spatial: Sequence[int], side_ratio: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """``(batch, 1, *spatial)`` masks, each 1 inside a box of ``side_ratio`` times every side at a random place
    (BCP pastes a box of 2/3 of each side)."""
    check_in_range("side_ratio", side_ratio, 0.0, 1.0, low_inclusive=False)
    mask = torch.zeros(batch, 1, *spatial, device=device)
    for i in range(batch):
        index = [slice(None), slice(None)]
        for size in spatial:
            length = max(1, int(round(size * side_ratio)))
            start = int(torch.randint(0, size - length + 1, (1,), generator=generator))
            index.append(slice(start, start + length))
        mask[i : i + 1][tuple(index)] = 1.0
    return mask


def random_area_box_mask(
    batch: int,
    spatial: Sequence[int],
    area: Sequence[float] = (0.02, 0.4),
    prob: float = 0.5,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """CutMix masks as UniMatch draws them: with probability ``prob`` a box covering an ``area`` share (uniform in
    the range) with a random aspect ratio in [0.3, 1/0.3], else no box."""
    lo, hi = (float(a) for a in area)
    mask = torch.zeros(batch, 1, *spatial, device=device)
    for i in range(batch):
        if float(torch.rand((), generator=generator)) >= prob:
            continue
        share = lo + (hi - lo) * float(torch.rand((), generator=generator))
        aspect = 0.3 + (1 / 0.3 - 0.3) * float(torch.rand((), generator=generator))
        side = (share * float(torch.tensor(spatial).prod())) ** (1.0 / len(spatial))
        index = [slice(None), slice(None)]
        for d, size in enumerate(spatial):
            stretch = aspect ** (0.5 if d == 0 else -0.5 if d == 1 else 0.0)
            length = int(min(size, max(1, round(side * stretch))))
            start = int(torch.randint(0, size - length + 1, (1,), generator=generator))
            index.append(slice(start, start + length))
        mask[i : i + 1][tuple(index)] = 1.0
    return mask


def box_mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``b`` inside the box, ``a`` outside: ``a * (1 - mask) + b * mask`` (any channels, broadcast over them)."""
    mask = mask.to(a.dtype)
    return a * (1 - mask) + b.to(a.dtype) * mask
