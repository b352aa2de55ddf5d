"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` and errors that name the file and the problem."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medssl.errors import DataError

__all__ = ["load_state_dict_file", "load_weights"]


def load_state_dict_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the problem.

    Raises:
        DataError: the file is absent, empty, truncated, or needs arbitrary unpickling (refused: it could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    if path.stat().st_size == 0:
        raise DataError(path, "checkpoint is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"it holds a {found.group(1)} object" if found else "it holds objects other than tensors"
        raise DataError(
            path,
            f"checkpoint refused: {what}, and unpickling it could run code; medssl loads only tensors "
            "and plain containers (weights_only=True)",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise DataError(path, f"checkpoint cannot be read (truncated or not a PyTorch file): {e}") from None


def _check_fits(network: torch.nn.Module, state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`DataError` saying how ``state`` differs from ``network``'s own state dict."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing tensors (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})"] if unexpected else []
        parts += [f"{len(shapes)} of other shape (e.g. {shapes[0]})"] if shapes else []
        name = type(network).__name__
        raise DataError(path, f"weights do not fit {name}: {', '.join(parts)}; a checkpoint of another network?")


def load_weights(
    network: torch.nn.Module, path: str | os.PathLike, key: str | None = "model", map_location: Any = "cpu"
) -> torch.nn.Module:
    """Load the weights of ``network`` from a checkpoint file (its ``key`` entry, or the whole file if absent).

    Raises:
        DataError: the file cannot be read safely, or its weights belong to another network.
    """
    state = load_state_dict_file(path, map_location)
    if isinstance(state, Mapping) and key is not None and key in state:
        state = state[key]
    target = getattr(network, "module", network)
    if isinstance(state, Mapping):
        _check_fits(target, state, path)
    try:
        target.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise DataError(
            path, f"weights do not fit {type(network).__name__} ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    return network
