"""Shared pieces of the deploy tests: the shared DICOM data and a lung-vessel bundle trained for a few iterations.

These tests run in ``.venv-deploy`` (``make test-deploy``); each module skips itself where the deploy extra is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
LUNG_BUNDLE = REPO / "bundles" / "lung_vessel_ct_ssl_segmentation"
# ROI of the tests' inference: a multiple of the UNet's 16x down-sampling; deeper than the 3-slice series (padded).
TEST_ROI = [64, 64, 16]


def shared_series(name: str) -> Path:
    """``../shared/data/<name>/dicom``, or skip the test with a message where the shared data is absent."""
    folder = SHARED_DATA / name / "dicom"
    if not folder.is_dir():
        pytest.skip(f"shared test data {folder} is absent")
    return folder


@pytest.fixture(scope="session")
def trained_lung_bundle(tmp_path_factory) -> Path:
    """The weights of the lung-vessel bundle after one epoch of real training on synthetic phantoms (16^3 ROI)."""
    from medssl.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("deploy_bundle")
    synthesize("lung_vessel", cases=4, size=32, seed=0, out=root / "data")
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/common.json','configs/train.json']",
        "--logging_file", "configs/logging.conf", "--bundle_root", str(root / "run"),
        "--dataset_dir", str(root / "data"), "--epochs", "1", "--labeled_fraction", "0.5", "--val_fraction", "0.25",
        "--test_fraction", "0", "--ssl_method", "supervised", "--roi_size", "[16,16,16]", "--num_workers", "0",
        "--val_interval", "1", "--cache_rate", "0.0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, cwd=LUNG_BUNDLE, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    checkpoint = root / "run" / "models" / "model_best.pt"
    assert checkpoint.is_file()
    return checkpoint
