"""Distribution alignment of pseudo-labels (ReMixMatch, Berthelot et al., ICLR 2020), for dense predictions.

Pseudo-labels that drop a minority class (tumour in a brain scan, the cardiac structures of a whole slice) come from
predictions whose class marginal on unlabelled images is below the class's share of the labelled ones. ReMixMatch
multiplies each prediction by the ratio of the labelled marginal ``p(y)`` to the running mean of the unlabelled
predictions ``p~(y)`` and renormalises: ``q' = normalise(q * p(y) / p~(y))``. For segmentation the marginals are over
voxels: ``p(y)`` is a running mean of each class's share of the labelled label maps of each batch, ``p~(y)`` of the
mean predicted probability of each class over the unlabelled voxels (ReMixMatch keeps the last 128 batches' mean;
here both are exponential moving averages with ``momentum``, started at the first batch). A one-channel (sigmoid)
prediction is the two-class distribution ``[1 - p, p]``.

The aligned prediction replaces the one the cut reads: the pseudo-labels and the confidence mask are both taken from
it. The statistics are kept in the checkpoint (the method's state, under :attr:`DistributionAlignment.name`).

The labelled marginal from batches is the marginal of the crops as sampled: a pipeline that centres half of its
labelled crops on the foreground (``RandCropByPosNegLabeld``, as medssl's 3D and BraTS pipelines do) and crops the
unlabelled images anywhere over-states the foreground, and the alignment then inflates it. ``prior`` gives the
labelled marginal instead: :func:`crop_class_shares` computes it from the labelled label maps as the unlabelled
pipeline crops them (uniform random crops), the marginal the unlabelled crops have where the labelled cases are like
them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from medssl.checks import check_in_range
from medssl.engines.keys import SSLKeys
from medssl.transforms.thresholding import class_distribution, distribution_logits

__all__ = ["DistributionAlignment", "class_shares", "crop_class_shares"]

_EPS = 1e-6


def class_shares(label: torch.Tensor, classes: int) -> torch.Tensor:
    """Each class's share of the voxels of ``label``: (B, 1, *spatial) class indices (or a binary map for one
    channel), or (B, C, *spatial) one-hot. Returns a vector of ``max(classes, 2)`` shares summing to 1."""
    label = label.detach().float()
    if classes == 1:
        fg = label.mean()
        return torch.stack([1.0 - fg, fg])
    if label.shape[1] == classes and classes > 1:
        counts = label.transpose(0, 1).reshape(classes, -1).sum(dim=1)
    else:
        counts = torch.bincount(label.round().long().flatten(), minlength=classes)[:classes].float()
    return counts / counts.sum().clamp_min(_EPS)


def _coverage(length: int, crop: int) -> np.ndarray:
    """The probability that each index of an axis of ``length`` lies in a crop of ``crop`` whose start is uniform over
    the positions that fit (a crop longer than the axis takes all of it, as MONAI's random spatial crops do)."""
    if crop >= length:
        return np.ones(length)
    index = np.arange(length)
    first, last = np.maximum(0, index - crop + 1), np.minimum(index, length - crop)
    return (last - first + 1) / (length - crop + 1)


def crop_class_shares(
    labels: Sequence[str | os.PathLike | Mapping[str, Any]],
    roi_size: Sequence[int],
    classes: int,
    convention: str | None = None,
    key: str = "label",
) -> list[float]:
    """Each class's expected share of the voxels of a uniform random crop of ``roi_size`` from the label maps
    ``labels``, each map drawn equally often: the labelled class marginal of a pipeline that crops its unlabelled
    images uniformly (``RandSpatialCropSamplesd``), for :class:`DistributionAlignment`'s ``prior``. Exact (each voxel
    weighted by its chance of lying in the crop), not sampled.

    Args:
        labels: label map files (2D or 3D, as the pipeline's arrays: channel-less), or datalist entries holding one
            under ``key``.
        roi_size: the crop, one size per axis of the maps (a pipeline that zooms its volumes by ``s`` before
            cropping: the crop divided by ``s``).
        classes: the network's output channels (1: one sigmoid channel, the shares of background and foreground).
        convention: a BraTS label convention to map the files' values to contiguous classes first (None: the values
            are the class indices).
        key: the entries' label key.

    Returns:
        ``max(classes, 2)`` shares summing to 1.

    Raises:
        ValueError: no label maps, a map whose dimensions differ from ``roi_size``'s, or values that are not classes
            (the message names the file).
    """
    from monai.transforms import LoadImage

    from medssl.transforms.brats_labels import to_contiguous

    if not labels:
        raise ValueError("crop_class_shares needs at least one label map, got none.")
    n = max(classes, 2)
    counts, total = np.zeros(n), 0.0
    load = LoadImage(image_only=True)
    for item in labels:
        path = item[key] if isinstance(item, Mapping) else item
        label = np.asarray(load(path))
        if label.ndim != len(roi_size):
            raise ValueError(f"{path}: a label map of shape {label.shape}, not {len(roi_size)}D as roi_size {roi_size}.")
        if convention is not None:
            try:
                label = np.asarray(to_contiguous(label, convention))
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        label = (label > 0.5).astype(np.int64) if classes == 1 else np.rint(label).astype(np.int64)
        if label.min() < 0 or label.max() >= n:
            raise ValueError(f"{path}: label values {sorted(np.unique(label).tolist())} are not classes 0-{n - 1}.")
        weight = np.ones(())
        for axis, (length, crop) in enumerate(zip(label.shape, roi_size)):
            shape = [1] * label.ndim
            shape[axis] = length
            weight = weight * _coverage(length, int(crop)).reshape(shape)
        counts += np.bincount(label.ravel(), weights=np.broadcast_to(weight, label.shape).ravel(), minlength=n)[:n]
        total += float(np.prod([min(length, int(c)) for length, c in zip(label.shape, roi_size)]))
    return (counts / total).tolist()


class DistributionAlignment:
    """Aligns the class marginal of unlabelled predictions with the labelled images' (see the module docstring).

    Args:
        momentum: of the running means, in [0, 1) (0: this batch's marginals only).
        prior: the labelled class marginal, one share per class (two for one sigmoid channel), instead of the
            running mean of the labelled batches' label maps; normalised to sum to 1.

    Raises:
        ValueError: ``momentum`` out of range, or a ``prior`` share negative or all zero.
    """

    name = "distribution_alignment"

    def __init__(self, momentum: float = 0.999, prior: Sequence[float] | None = None) -> None:
        self.momentum = check_in_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        self.prior: torch.Tensor | None = None
        if prior is not None:
            shares = torch.as_tensor(list(prior), dtype=torch.float32)
            if shares.ndim != 1 or (shares < 0).any() or float(shares.sum()) <= 0:
                raise ValueError(f"prior must be non-negative class shares with a positive sum, got {list(prior)}.")
            self.prior = shares / shares.sum()
        self.labelled: torch.Tensor | None = self.prior
        self.unlabelled: torch.Tensor | None = None

    def _update(self, running: torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
        if running is None:
            return batch
        return self.momentum * running.to(batch.device) + (1.0 - self.momentum) * batch

    def __call__(self, engine: Engine, logits: torch.Tensor) -> torch.Tensor:
        """The logits of the aligned prediction of ``logits`` (detached), after updating both marginals with this
        iteration's labelled labels (``engine.state.output[LABEL]``, when present) and ``logits``."""
        with torch.no_grad():
            q = class_distribution(logits.detach().float())
            if self.prior is not None and self.prior.numel() != q.shape[1]:
                raise ValueError(f"prior has {self.prior.numel()} class shares, the prediction {q.shape[1]} classes")
            label = engine.state.output.get(SSLKeys.LABEL)
            if label is not None and self.prior is None:
                self.labelled = self._update(self.labelled, class_shares(label, logits.shape[1]).to(q.device))
            self.unlabelled = self._update(self.unlabelled, q.transpose(0, 1).reshape(q.shape[1], -1).mean(dim=1))
            if self.labelled is None:  # no labelled evidence yet: nothing to align to
                return logits.detach()
            ratio = self.labelled.to(q.device) / self.unlabelled.clamp_min(_EPS)
            aligned = q * ratio.view(1, -1, *([1] * (q.ndim - 2)))
            aligned = aligned / aligned.sum(dim=1, keepdim=True).clamp_min(_EPS)
            return distribution_logits(aligned, logits.shape[1], _EPS).to(logits.dtype)

    def state_dict(self) -> dict[str, Any]:
        empty = torch.zeros(0)
        return {"labelled": empty if self.labelled is None else self.labelled.cpu(),
                "unlabelled": empty if self.unlabelled is None else self.unlabelled.cpu()}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.labelled = state["labelled"] if state["labelled"].numel() else self.prior
        self.unlabelled = state["unlabelled"] if state["unlabelled"].numel() else None
