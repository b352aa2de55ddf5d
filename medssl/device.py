"""The device a run uses: chosen at run time, the GPU when there is one, never hard-coded."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch device; None picks CUDA when available, else the CPU.

    Raises:
        ValueError: a CUDA device is asked for on a machine without one.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for, but CUDA is not available on this machine")
    return device
