"""Loading a medssl bundle's inference pieces (network, pre-processing, inferer, post-processing) from its configs.

``medssl pseudolabel`` (the teacher of teacher-student training) and the deploy application run a bundle this way,
so that they apply exactly the transforms and sliding-window settings its ``inference.json`` declares.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from medssl.errors import DataError
from medssl.handlers.checkpoint import load_weights

__all__ = ["BundleInference", "is_torchscript", "load_bundle_inference"]


@dataclass
class BundleInference:
    """What it takes to run a bundle on new images."""

    network: torch.nn.Module
    preprocessing: Any
    inferer: Any
    postprocessing: Any
    device: torch.device
    parser: ConfigParser


def _check_override(key: str, value: Any, default: Any, config: Path) -> None:
    """Raise ``TypeError`` when ``value`` is text where ``config`` holds a number, a flag or a list for ``key``."""
    is_text = isinstance(value, str) and not value.startswith(("$", "@", "%"))  # "$..." and "@..." are config syntax
    if isinstance(default, (bool, int, float, list)) and is_text:
        raise TypeError(
            f"override {key}={value!r}: {config} sets {key} to a {type(default).__name__} ({default!r}), got text"
        )
    if isinstance(default, list) and isinstance(value, (bool, int, float)):
        raise TypeError(f"override {key}={value!r}: {config} sets {key} to a list ({default!r}), got {value!r}")


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``, ``monai.bundle ckpt_export``), not a checkpoint."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    try:
        return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as e:
        problem = f"TorchScript model cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        raise DataError(path, problem) from None


def load_bundle_inference(
    bundle: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    overrides: dict[str, Any] | None = None,
    config_file: str = "configs/inference.json",
) -> BundleInference:
    """Parse ``bundle/config_file`` and load the network weights from ``checkpoint``.

    Args:
        bundle: the bundle folder.
        checkpoint: weights file (default: the config's ``checkpoint``, ``models/model_best.pt``): a checkpoint or
            state dict (loaded with ``weights_only=True`` into the config's network), or a TorchScript model such as
            ``monai.bundle ckpt_export`` writes (``models/model.ts``), which is used in place of the config's network.
        device: torch device (default: the config's, CUDA when available).
        overrides: more config overrides, e.g. ``{"roi_size": [64, 64, 64]}``.
        config_file: the inference config, relative to ``bundle``.

    Raises:
        DataError: the bundle has no such config, or the checkpoint cannot be loaded into its network.
    """
    bundle = Path(bundle)
    config_path = bundle / config_file
    if not config_path.is_file():
        raise DataError(bundle, f"not a medssl bundle: {config_file} not found")
    parser = ConfigParser()
    parser.read_config(str(config_path))
    parser["bundle_root"] = str(bundle.resolve())
    if device is not None:
        parser["device"] = f"$torch.device('{torch.device(device)}')"
    for key, value in (overrides or {}).items():
        _check_override(key, value, parser.get(key), config_path)
        parser[key] = value
    if checkpoint is not None:
        parser["checkpoint"] = str(checkpoint)
    ckpt = parser.get_parsed_content("checkpoint")
    dev = parser.get_parsed_content("device")
    if is_torchscript(ckpt):
        network = _load_torchscript(Path(ckpt), dev)
    else:
        network = parser.get_parsed_content("network")
        load_weights(network, ckpt, map_location=dev)
    return BundleInference(
        network=network.eval(),
        preprocessing=parser.get_parsed_content("preprocessing"),
        inferer=parser.get_parsed_content("inferer"),
        postprocessing=parser.get_parsed_content("postprocessing"),
        device=dev,
        parser=parser,
    )
