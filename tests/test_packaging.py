"""A plain (non-editable) install carries the bundles: build the wheel, install it outside the source tree, and run
a shipped bundle from it with ``python -m monai.bundle run``, as a user who ran ``pip install medssl`` would.

The wheel goes into its own folder with ``--no-deps`` and is put first on ``PYTHONPATH``, so it reuses this
environment's packages (MONAI, torch) while ``import medssl`` is the wheel's, not the source tree's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _ssl4mis import make_acdc_like

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a clean copy: setuptools' build/ folder of the checkout may hold deleted modules
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "models", "runs", "eval")
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for name in ("medssl", "bundles"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
        capture_output=True, text=True, encoding="utf-8",
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((root / "dist").glob("medssl-*.whl"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(root / "site"), str(wheel)],
        capture_output=True, text=True, encoding="utf-8",
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "PYTHONWARNINGS": "ignore"}
    env.pop("MEDSSL_BUNDLES", None)
    return root, env


def _run(args, env, cwd, timeout=600):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, encoding="utf-8", env=env, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_wheel_ships_every_bundle(installed, tmp_path):
    root, env = installed
    where = _run(["-c", "import medssl, medssl.workflows.bundle as b; print(medssl.__file__); print(b.bundles_dir())"], env, tmp_path)
    package, bundles = where.split()
    assert package.startswith(str(root / "site")) and bundles == str(root / "site" / "medssl" / "bundles")
    listed = _run(["-m", "medssl", "bundle", "list"], env, tmp_path)
    names = {line.split("\t")[0] for line in listed.splitlines()}
    assert names == {p.name for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir()}


def test_bundle_runs_from_the_wheel(installed, tmp_path):
    _, env = installed
    make_acdc_like(tmp_path / "raw", patients=8, slices=2, size=32)
    _run(["-m", "medssl", "prepare", "ssl4mis", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "data")], env, tmp_path)
    _run(["-m", "medssl", "bundle", "export", "acdc_mri_ssl_segmentation", "--out", str(tmp_path / "b")], env, tmp_path)
    bundle = tmp_path / "b" / "acdc_mri_ssl_segmentation"
    overrides = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(tmp_path / "data"), "ssl_method": "segpl",
                 "roi_size": "[32,32]", "network_channels": "[4,8,16,32,64]", "num_res_units": 0, "batch_size": 2,
                 "unlabeled_batch_size": 2, "num_workers": 0, "iterations": 2, "val_interval": 2}  # fmt: skip
    args = ["-m", "monai.bundle", "run", "--config_file", "configs/train.json"]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    _run(args, env, bundle)
    assert (tmp_path / "run" / "models" / "model_last.pt").is_file()
    curve = (tmp_path / "run" / "eval" / "val_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,iteration") and len(curve) == 2
    with pytest.raises(AssertionError, match="exists already"):  # export never overwrites
        _run(["-m", "medssl", "bundle", "export", "acdc_mri_ssl_segmentation", "--out", str(tmp_path / "b")], env, tmp_path)
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
