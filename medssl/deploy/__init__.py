"""Deploying a trained bundle: a MONAI Deploy application, DICOM series in, DICOM SEG (and NIfTI) out.

The MONAI Deploy App SDK pulls Holoscan and CUDA Python and changes what ``import monai`` loads, so it lives in its
own environment (``make deploy-env`` creates ``.venv-deploy``; ``pip install "medssl[deploy]"`` elsewhere). Nothing
here imports it at import time: ``medssl deploy run`` imports :mod:`medssl.deploy.run`, which checks for it.
"""

from __future__ import annotations

import importlib.util

__all__ = ["DeployUnavailableError", "require_sdk"]

_REQUIRED = {"monai.deploy.core": "monai-deploy-app-sdk", "pydicom": "pydicom", "highdicom": "highdicom"}


class DeployUnavailableError(ImportError):
    """The packages of medssl's ``deploy`` extra are not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def require_sdk() -> None:
    """Raise :class:`DeployUnavailableError` naming what is missing when the deploy extra is not installed."""
    missing = [package for module, package in _REQUIRED.items() if not _installed(module)]
    if missing:
        raise DeployUnavailableError(
            f"the deploy extra is not installed (missing: {', '.join(missing)}); run `make deploy-env` and use "
            ".venv-deploy/bin/medssl, or `pip install \"medssl[deploy]\"` in a separate environment"
        )
