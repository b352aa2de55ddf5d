"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` and errors that name the file and the problem.

Checkpoints also say what network they hold: a bundle's training checkpoints carry its network's construction
settings (:class:`NetworkSettings`, the entry ``settings``), so that evaluation and inference with other settings
end in one line that names the settings to pass, not in a list of missing tensors. ``models/model.pt`` stays a plain
state dict (:func:`medssl.handlers.checkpoint.export_model`); the settings of the weights a bundle ships are in its
``metadata.json``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medssl.errors import DataError

__all__ = [
    "load_state_dict_file",
    "load_weights",
    "NetworkSettings",
    "SettingsMismatch",
    "settings_difference",
    "SETTINGS_KEY",
    "saved_settings",
]

#: The entry of a training checkpoint that holds its network's settings.
SETTINGS_KEY = "settings"


class SettingsMismatch(ValueError):
    """A checkpoint's network settings differ from the configuration that loads it."""


def _cli(value: Any) -> str:
    """``value`` as ``python -m monai.bundle run`` takes it on the command line."""
    if isinstance(value, (list, tuple)):
        return '"[' + ",".join(str(v) for v in value) + ']"'
    return str(value)


def settings_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """What differs between a checkpoint's settings and the configuration's, in one line with the overrides that make
    the configuration fit the checkpoint; empty when nothing does (settings that only one side names are ignored)."""
    differ = [k for k in saved if k in current and _plain(saved[k]) != _plain(current[k])]
    if not differ:
        return ""
    was = ", ".join(f"{k}={_plain(saved[k])}" for k in differ)
    now = ", ".join(f"{k}={_plain(current[k])}" for k in differ)
    fix = " ".join(f"--{k} {_cli(_plain(saved[k]))}" for k in differ)
    return f"trained with {was}; this configuration has {now}: pass {fix}"


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, tuple):
        value = list(value)
    return value


class NetworkSettings:
    """The settings a bundle builds its network from (``{"network_channels": [...], "num_res_units": 0, ...}``), as
    a checkpointable entry: saved with the weights, compared when a checkpoint is loaded. (Not a ``dict``: ignite
    takes a mapping in a checkpoint's objects for a group of objects to load one by one.)

    Raises (on load):
        SettingsMismatch: the checkpoint's settings differ from these (the message says how, and what to pass).
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def state_dict(self) -> dict[str, Any]:
        """The settings, plain values only (they load with ``weights_only=True``)."""
        return {k: _plain(v) for k, v in self.settings.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check ``state`` (a checkpoint's settings) against these."""
        difference = settings_difference(state, self.settings)
        if difference:
            raise SettingsMismatch(difference)


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


def saved_settings(path: str | os.PathLike) -> dict[str, Any] | None:
    """The network settings a training checkpoint holds (its ``settings`` entry), None for a plain state dict.

    Raises:
        DataError: the file cannot be read safely.
    """
    state = load_state_dict_file(path)
    found = state.get(SETTINGS_KEY) if isinstance(state, Mapping) else None
    return {k: _plain(v) for k, v in found.items()} if isinstance(found, Mapping) else None


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
    network: torch.nn.Module,
    path: str | os.PathLike,
    key: str | None = "model",
    map_location: Any = "cpu",
    settings: Mapping[str, Any] | NetworkSettings | None = None,
    missing: str | None = None,
) -> torch.nn.Module:
    """Load the weights of ``network`` from a checkpoint file (its ``key`` entry, or the whole file if absent).

    Args:
        network: the network (a ``DistributedDataParallel`` wrapper loads into the network it wraps).
        path: the checkpoint file.
        key: the entry of a training checkpoint that holds the weights.
        map_location: where tensors go.
        settings: the settings ``network`` was built with: a checkpoint that holds other settings
            (:class:`NetworkSettings`) is refused in one line that names them.
        missing: what to tell the user when ``path`` does not exist (e.g. that the bundle must be trained first).

    Raises:
        DataError: the file is absent or cannot be read safely, holds other settings, or its weights belong to
            another network.
    """
    if missing and not Path(path).is_file():
        raise DataError(path, f"checkpoint not found: {missing}")
    state = load_state_dict_file(path, map_location)
    settings = settings.settings if isinstance(settings, NetworkSettings) else settings
    if settings is not None and isinstance(state, Mapping) and isinstance(state.get(SETTINGS_KEY), Mapping):
        difference = settings_difference(state[SETTINGS_KEY], settings)
        if difference:
            raise DataError(path, f"checkpoint of another network: {difference}")
    if isinstance(state, Mapping) and key is not None and key in state:
        state = state[key]
    target = getattr(network, "module", network)
    if isinstance(state, Mapping):
        try:
            _check_fits(target, state, path)
        except DataError as e:
            if not settings:
                raise
            named = ", ".join(f"{k}={_plain(v)}" for k, v in settings.items())
            raise DataError(path, f"{e.problem}; were they trained with other settings than these ({named})?") from None
    try:
        target.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise DataError(
            path, f"weights do not fit {type(network).__name__} ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    return network

