"""Figures medssl writes for people: image/label montages and prediction comparisons (matplotlib, no screen)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medssl.data.io import atomic_path

__all__ = ["save_overlay_grid", "save_figure"]


def _axial(arr: np.ndarray, z: int | None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr
    return arr[..., arr.shape[-1] // 2 if z is None else z]


def save_overlay_grid(
    rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray]]]],
    path: str | os.PathLike,
    z: int | None = None,
    window: tuple[float, float] | None = None,
    title: str | None = None,
) -> Path:
    """Save a grid of axial slices: one row per case, the image then each mask drawn in red over it.

    Args:
        rows: per row ``(row_name, image (x, y[, z]), [(column_name, mask), ...])``.
        path: PNG to write (atomically).
        z: axial slice index (default: the middle slice).
        window: display range of the image (default: its 1st and 99th percentiles).
        title: figure title.

    Returns:
        the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = 1 + max(len(masks) for _, _, masks in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.6 * n_cols, 2.6 * len(rows)), squeeze=False)
    for r, (row_name, image, masks) in enumerate(rows):
        img = _axial(image, z).T  # x, y -> rows are y for display
        lo, hi = window if window is not None else np.percentile(img, [1, 99])
        axes[r, 0].imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        axes[r, 0].set_title(f"{row_name}: image" if r == 0 else row_name, fontsize=8)
        for c, (col_name, mask) in enumerate(masks, start=1):
            axes[r, c].imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            m = _axial(mask, z).T.astype(float)
            axes[r, c].imshow(np.ma.masked_where(m <= 0, m), cmap="autumn", alpha=0.6, origin="lower")
            axes[r, c].set_title(col_name, fontsize=8)
        for c in range(n_cols):
            axes[r, c].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG atomically (no half-written file under ``path``) and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
