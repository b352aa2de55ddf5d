"""Fixtures of the reliability tests; the helpers live in ``_reliability.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _reliability import BRATS2D, BRATS2D_TINY, BUNDLES, LUNG  # noqa: E402


@pytest.fixture(scope="session")
def lung_data(tmp_path_factory) -> Path:
    """Six 32^3 synthetic lung-vessel cases: ``<root>/data/dataset.json``."""
    from medssl.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("reliability_lung")
    synthesize("lung_vessel", cases=6, size=32, seed=0, out=root / "data")
    return root


@pytest.fixture(scope="session")
def lung_teacher(tmp_path_factory) -> Path:
    """An (untrained) checkpoint of the lung bundle's network, as training writes it (``{"model": ...}``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / LUNG / "configs" / "inference.json"))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lung_teacher") / "model_best.pt"
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def brats2d_teacher(tmp_path_factory) -> Path:
    """A checkpoint of a small 2D TransBTS of the BraTS slice bundle (built with :data:`BRATS2D_TINY`)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / BRATS2D / "configs" / "inference.json"))
    for key, value in BRATS2D_TINY.items():
        parser[key] = value
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("brats2d_teacher") / "model_best.pt"
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, path)
    return path
