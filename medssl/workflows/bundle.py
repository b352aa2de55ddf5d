"""medssl's bundles: where they are, and the one way medssl builds a workflow from a bundle's configs.

The bundles ship inside the package (``medssl/bundles/`` of a wheel; the repository's top-level ``bundles/`` is their
source, mapped there at build time), so ``medssl demo``, ``medssl bench`` and ``medssl bundle export`` work after a
plain ``pip install medssl``. ``MEDSSL_BUNDLES`` points elsewhere when set.

:func:`config_workflow` is how the demo and the benchmarks run a bundle's ``train.json`` or ``evaluate.json``, and
:func:`load_bundle_inference` how ``medssl pseudolabel`` (the teacher of teacher-student training) and the deploy
application run its ``inference.json``: both parse the bundle's own configs with the same device override, so they
apply exactly the transforms, networks and settings the bundle declares.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medssl.errors import DataError

if TYPE_CHECKING:  # torch and MONAI load when a workflow is built: `medssl bundle list` and `export` need neither
    import torch
    from monai.bundle import ConfigParser

__all__ = [
    "BundleInference",
    "bundles_dir",
    "bundle_path",
    "list_bundles",
    "export_bundle",
    "device_overrides",
    "COMMON",
    "config_files",
    "config_workflow",
    "is_torchscript",
    "load_bundle_inference",
]

_PACKAGE = Path(__file__).resolve().parents[1]


def bundles_dir() -> Path:
    """The bundles folder: ``$MEDSSL_BUNDLES``, else the package's ``bundles/`` (an installed wheel), else the source
    tree's top-level ``bundles/`` (an editable install).

    Raises:
        FileNotFoundError: none of them exists.
    """
    candidates = [Path(os.environ["MEDSSL_BUNDLES"])] if os.environ.get("MEDSSL_BUNDLES") else []
    candidates += [_PACKAGE / "bundles", _PACKAGE.parent / "bundles"]
    for path in candidates:
        if (path / "meta_schema.json").is_file() or any(path.glob("*/configs/train.json")):
            return path
    raise FileNotFoundError(f"medssl's bundles are not found (looked in {', '.join(map(str, candidates))}); set "
                            "MEDSSL_BUNDLES to a folder of medssl bundles")  # fmt: skip


def list_bundles() -> list[str]:
    """The names of the bundles medssl ships."""
    return sorted(p.parent.parent.name for p in bundles_dir().glob("*/configs/train.json"))


def bundle_path(bundle: str | os.PathLike) -> Path:
    """A bundle folder: ``bundle`` itself when it is a folder, else the shipped bundle of that name.

    Raises:
        FileNotFoundError: neither exists (the message lists the shipped bundles).
    """
    path = Path(bundle)
    if path.is_dir():
        return path
    shipped = bundles_dir() / str(bundle)
    if (shipped / "configs").is_dir():
        return shipped
    raise FileNotFoundError(f"{bundle}: not a bundle folder nor a medssl bundle ({', '.join(list_bundles())})")


#: What a bundle folder ships in ``models/``: its trained weights, in the model zoo's names.
SHIPPED_MODELS = ("model.pt", "model.ts")


def _not_shipped(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree``'s ignore: caches, run outputs, and anything in ``models/`` but the shipped weights."""
    ignored = {n for n in names if n in ("__pycache__", "runs", "eval", "predictions")}
    if Path(folder).name == "models":
        ignored |= {n for n in names if n not in SHIPPED_MODELS}
    return ignored


def export_bundle(name: str, out: str | os.PathLike) -> Path:
    """Copy the shipped bundle ``name`` to ``out/name`` (as ``monai.bundle download`` writes a zoo bundle).

    The copy stands on its own: the configs it shares with the other bundles (links to ``bundles/_common`` in the
    source tree) are written as files, and of ``models/`` only the weights the bundle ships (``model.pt``,
    ``model.ts``) are copied, not what a training run from the bundle folder left there.

    Raises:
        FileNotFoundError: no such bundle.
        FileExistsError: ``out/name`` exists already (nothing is overwritten).
    """
    source = bundle_path(name)
    dest = Path(out) / source.name
    if dest.exists():
        raise FileExistsError(f"{dest} exists already; remove it or choose another --out")
    staging = Path(out) / f".{source.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=_not_shipped)
    os.replace(staging, dest)
    return dest


def device_overrides(device: str | torch.device | None) -> dict[str, Any]:
    """Bundle settings that run it on ``device`` (mixed precision on CUDA); nothing for None (the bundle's choice)."""
    import torch

    if device is None:
        return {}
    dev = torch.device(device)
    return {"device": f"$torch.device('{dev}')", "amp": dev.type == "cuda"}


#: The configuration every medssl bundle's training, evaluation and multi-process configs build on (the trainer, the
#: method block, the handler lists, validation, checkpoints): one file, ``bundles/_common/configs/common.json``,
#: linked into each bundle's ``configs/`` in the source tree and copied there in a wheel and an exported bundle.
COMMON = "common.json"


def config_files(configs: Sequence[str]) -> list[str]:
    """The config files of a bundle command, in order: :data:`COMMON` first where ``train.json`` is among them
    (``['configs/common.json','configs/train.json', ...]`` on ``python -m monai.bundle run``).

    >>> config_files(["train.json", "evaluate.json"])
    ['common.json', 'train.json', 'evaluate.json']
    >>> config_files(["inference.json"])
    ['inference.json']
    """
    configs = list(configs)
    return [COMMON, *configs] if "train.json" in configs and COMMON not in configs else configs


def config_workflow(
    bundle: str | os.PathLike,
    configs: Sequence[str] = ("train.json",),
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    workflow_type: str | None = None,
) -> Any:
    """MONAI's ``ConfigWorkflow`` of a bundle's ``configs`` (layered in order) with ``overrides``, not yet initialised.

    Args:
        bundle: a shipped bundle's name or a bundle folder.
        configs: config files under ``configs/``, e.g. ``["train.json", "evaluate.json"]`` (with ``train.json``,
            the bundles' common base ``common.json`` goes first, as the bundles' commands give it: see
            :func:`config_files`).
        overrides: config settings, as ``--key value`` on ``python -m monai.bundle run``.
        device: run on this device (see :func:`device_overrides`).
        workflow_type: MONAI's workflow type (default: ``train`` for ``train.json`` alone, else ``infer``).
    """
    from monai.bundle import ConfigWorkflow

    root = bundle_path(bundle) / "configs"
    configs = config_files(configs)
    files = [str(root / c) for c in configs]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(root / "metadata.json"),
        workflow_type=workflow_type or ("train" if list(configs) == [COMMON, "train.json"] else "infer"),
        **{**dict(overrides or {}), **device_overrides(device)},
    )


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
    import torch

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
        checkpoint: weights file (default: the config's ``checkpoint``, ``models/model.pt``): a checkpoint or
            state dict (loaded with ``weights_only=True`` into the config's network; a training checkpoint's network
            settings are applied to the config first, unless ``overrides`` set them), or a TorchScript model such as
            ``monai.bundle ckpt_export`` writes (``models/model.ts``), which is used in place of the config's network.
        device: torch device (default: the config's, CUDA when available).
        overrides: more config overrides, e.g. ``{"roi_size": [64, 64, 64]}``.
        config_file: the inference config, relative to ``bundle``.

    Raises:
        DataError: the bundle has no such config, or the checkpoint cannot be loaded into its network.
    """
    from monai.bundle import ConfigParser

    from medssl.checkpoints import load_weights, saved_settings

    bundle = bundle_path(bundle)
    config_path = bundle / config_file
    if not config_path.is_file():
        raise DataError(bundle, f"not a medssl bundle: {config_file} not found")
    parser = ConfigParser()
    parser.read_config(str(config_path))
    parser["bundle_root"] = str(bundle.resolve())
    for key, value in {**(overrides or {}), **{k: v for k, v in device_overrides(device).items() if k == "device"}}.items():
        _check_override(key, value, parser.get(key), config_path)
        parser[key] = value
    if checkpoint is not None:
        parser["checkpoint"] = str(checkpoint)
    ckpt = parser.get_parsed_content("checkpoint")
    dev = parser.get_parsed_content("device")
    if is_torchscript(ckpt):
        network = _load_torchscript(Path(ckpt), dev)
    else:
        # a training checkpoint says what network it holds: build that one, unless the caller chose otherwise
        for key, value in (saved_settings(ckpt) or {}).items():
            if key not in (overrides or {}) and key in parser:
                parser[key] = value
        network = parser.get_parsed_content("network")
        settings = parser.get_parsed_content("network_settings") if "network_settings" in parser else None
        load_weights(network, ckpt, map_location=dev, settings=settings)
    return BundleInference(
        network=network.eval(),
        preprocessing=parser.get_parsed_content("preprocessing"),
        inferer=parser.get_parsed_content("inferer"),
        postprocessing=parser.get_parsed_content("postprocessing"),
        device=dev,
        parser=parser,
    )
