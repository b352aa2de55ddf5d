"""Sliding-window inference on a volume zoomed by a factor, with the logits brought back to the volume's own grid.

A network trained on patches of volumes zoomed by ``scale`` (half resolution for the LA track's CPU protocol) is run
on each volume zoomed the same way (MONAI's ``Zoom``, as the training pipeline zooms), and its logits are resized
trilinearly to the input's size: evaluation and inference see, and score, every volume at its own resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.transforms import Zoom

from medssl.checks import check_positive
from medssl.inference.predict import make_sliding_window_inferer

__all__ = ["ScaledSlidingWindowInferer"]


class ScaledSlidingWindowInferer(Inferer):
    """MONAI's sliding window (:func:`~medssl.inference.predict.make_sliding_window_inferer`) at a zoom of the input.

    Args:
        roi_size: window size, in voxels of the zoomed volume.
        scale: zoom factor (1: the input as it is).
        device: where windows run (None: the input's device).
        sw_batch_size, overlap, mode, stitch_on_cpu: as for the sliding window.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        scale: float = 1.0,
        device: torch.device | str | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        stitch_on_cpu: bool | None = None,
    ) -> None:
        super().__init__()
        self.scale = float(check_positive("scale", scale))
        self.roi_size = list(roi_size)
        self.device = None if device is None else torch.device(device)
        self.window_args = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode,
                            "stitch_on_cpu": stitch_on_cpu}  # fmt: skip
        self.zoom = Zoom(zoom=self.scale, mode="trilinear", keep_size=False)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits of ``network`` for ``inputs`` (batch-first), on the inputs' own grid."""
        device = self.device or inputs.device
        window = make_sliding_window_inferer(self.roi_size, device, **self.window_args)
        if self.scale == 1.0:
            return window(inputs, network, *args, **kwargs)
        zoomed = torch.stack([_plain(self.zoom(x)) for x in inputs])
        logits = _plain(window(zoomed, network, *args, **kwargs))
        return F.interpolate(logits, size=tuple(inputs.shape[2:]), mode="trilinear", align_corners=False)


def _plain(tensor: Any) -> torch.Tensor:
    """A plain tensor (a MetaTensor's data without its meta: the logits on another grid carry none)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)
