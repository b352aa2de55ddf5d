"""Helpers of the reliability tests: tiny inputs, snapshots of folders, and bundle runs in a subprocess.

Imported by name (``from _reliability import ...``): conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
LUNG = "lung_vessel_ct_ssl_segmentation"
BRATS2D = "brats_mri_axial_slices_ssl_segmentation"
# Tiny settings of the lung bundle: 32^3 synthetic cases, 16^3 patches, no workers.
LUNG_TINY = {"roi_size": "[16,16,16]", "num_workers": 0, "val_interval": 1, "cache_rate": 0.0}
# A small 2D TransBTS for the BraTS slice bundle: its checkpoint is built in a second.
BRATS2D_TINY = {"roi_size": [16, 16], "network_channels": [4, 8, 16, 32], "embed_dim": 16, "num_layers": 1,
                "num_heads": 2, "mlp_dim": 16}  # fmt: skip


def _load_bundle_conftest():
    spec = importlib.util.spec_from_file_location("_bundle_conftest", REPO / "tests" / "bundles" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workflow_of = _load_bundle_conftest()._workflow  # the bundle tests' in-process ConfigWorkflow builder


def snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``folders`` (absent folders hold nothing)."""
    out = {}
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            files = [folder]
        else:
            files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
        for p in files:
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (none when it is absent)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def write_nifti(array, path: Path, affine=None) -> Path:
    """Write ``array`` as NIfTI (identity affine unless given) without medssl's own writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else np.asarray(affine, float)), str(path))
    return path


def lung_phantom(shape=(20, 18, 16), seed=0):
    """A CT in HU (air, lung, one vessel tube along z) and its binary vessel label."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    image = np.full(shape, -1000, dtype=np.int16)
    image[2:-2, 2:-2, :] = -850
    tube = ((x - shape[0] // 2) ** 2 + (y - shape[1] // 2) ** 2 <= 4)[:, :, None] & np.ones(shape, dtype=bool)
    image[tube] = 200
    image += rng.integers(-20, 20, size=shape).astype(np.int16)
    return image, tube.astype(np.uint8)


def bundle_command(bundle: str, configs: list[str], overrides: dict) -> list[str]:
    """``python -m monai.bundle run`` with ``configs`` (``common.json`` first where ``train.json`` is among them) and
    ``--key value`` overrides, as a bundle's README runs it."""
    from medssl.workflows.bundle import config_files

    files = [f"configs/{c}" for c in config_files(configs)]
    config_arg = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, "--logging_file", "configs/logging.conf"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def bundle_env() -> dict:
    """Environment of a bundle subprocess: no warnings, one thread per process (2-core CI machine)."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run_bundle(
    bundle: str, configs: list[str], overrides: dict, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a bundle in a subprocess (``env`` added to its environment); return the CompletedProcess whatever its exit
    status."""
    return subprocess.run(
        bundle_command(bundle, configs, overrides),
        cwd=BUNDLES / bundle,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        env={**bundle_env(), **(env or {})},
    )
