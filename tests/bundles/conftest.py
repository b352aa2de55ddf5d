"""Helpers of the bundle tests: tiny synthetic data and running a bundle's configs as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
#: The real 3-volume LA 2018 sample in the UA-MT HDF5 layout.
LA_SAMPLE = REPO.parent / "shared" / "data" / "la_ssl4mis_sample"


def _run_bundle(bundle: str, configs: list[str], overrides: dict, timeout: int = 600, env: dict | None = None):
    """``python -m monai.bundle run`` in the bundle folder, as its README says (``configs/common.json`` first where
    ``train.json`` is among ``configs``); returns the CompletedProcess."""
    from medssl.workflows.bundle import config_files

    files = [f"configs/{c}" for c in config_files(configs)]
    config_arg = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, "--logging_file", "configs/logging.conf"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(cmd, cwd=BUNDLES / bundle, capture_output=True, text=True, timeout=timeout, env=full_env)
    if result.returncode != 0:
        raise AssertionError(f"bundle run failed ({' '.join(cmd)}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


MULTI_GPU = "['configs/common.json','configs/train.json','configs/multi_gpu_train.json']"


def _run_bundle_dist(bundle: str, overrides: dict, port: int, timeout: int = 300) -> str:
    """The bundle's multi-GPU command (torchrun, 2 processes; gloo on the CPU) in its folder, as its README gives it;
    checks that both processes finished training and returns the log."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "monai.bundle", "run", "--config_file", MULTI_GPU]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, cwd=BUNDLES / bundle, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    # both ranks train; only rank 0 logs statistics and writes checkpoints
    assert log.count("SemiSupervisedTrainer - INFO - Engine run finished") == 2, log[-3000:]
    return log


def _workflow(bundle: str, configs: list[str], overrides: dict):
    """A MONAI ``ConfigWorkflow`` of the bundle's configs with overrides, initialised, in this process."""
    import ast

    from monai.bundle import ConfigWorkflow

    def parse(value):  # the command line parses "[16,16,16]" into a list; do the same here
        try:
            return ast.literal_eval(value) if isinstance(value, str) else value
        except (ValueError, SyntaxError):
            return value

    from medssl.workflows.bundle import config_files

    overrides = {k: parse(v) for k, v in overrides.items()}
    wf = ConfigWorkflow(
        config_file=[str(BUNDLES / bundle / "configs" / c) for c in config_files(configs)],
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=str(BUNDLES / bundle / "configs" / "logging.conf"),
        workflow_type="train" if "train.json" in configs else "infer",
        **overrides,
    )
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def lung_data(tmp_path_factory):
    """Eight 32^3 synthetic lung-vessel cases."""
    from medssl.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("lung_bundle")
    synthesize("lung_vessel", cases=8, size=32, seed=0, out=root / "data")
    return root


@pytest.fixture(scope="module")
def brats_data(tmp_path_factory):
    """Six 32^3 synthetic BraTS cases (t1, t1ce, t2, flair; 2018 labels) with ``data/dataset.json``."""
    from medssl.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("brats_bundle")
    synthesize("brats", cases=6, size=32, seed=0, out=root / "data")
    return root


@pytest.fixture(scope="module")
def brats2d_data(tmp_path_factory):
    """Axial slices of six 32^3 synthetic BraTS cases, as ``medssl prepare brats --slices2d`` writes them.

    The phantoms are laid out as a BraTS 2018 folder (``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``) and prepared
    with :func:`~medssl.data.brats.prepare_brats`; ``slices/datalist.json`` then keeps the four middle slices of each
    case, so that an epoch is a few iterations.
    """
    import json

    from _brats import write_brats_folder

    from medssl.data.brats import prepare_brats

    root = tmp_path_factory.mktemp("brats2d_bundle")
    write_brats_folder(root, cases=6, size=32, seed=1)
    prepare_brats(root / "brats", root / "prepared", slices2d=root / "slices")
    datalist_path = root / "slices" / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    kept = []
    for cid in sorted({e["case_id"] for e in datalist["training"]}):
        slices = [e for e in datalist["training"] if e["case_id"] == cid]
        kept += slices[len(slices) // 2 - 2 : len(slices) // 2 + 2]
    datalist.update({"training": kept, "numTraining": len(kept)})
    datalist_path.write_text(json.dumps(datalist, indent=1))
    return root


@pytest.fixture
def run_bundle():
    """Run a bundle's configs with ``python -m monai.bundle run``."""
    return _run_bundle


@pytest.fixture
def run_bundle_dist():
    """Run a bundle's multi-GPU command with torchrun, 2 processes."""
    return _run_bundle_dist


@pytest.fixture
def workflow():
    """Build an initialised ``ConfigWorkflow`` of a bundle's configs."""
    return _workflow


@pytest.fixture
def bundles_dir():
    """The repository's bundles folder."""
    return BUNDLES


def _verify_bundle(bundle: str) -> None:
    """``verify_metadata`` (against the schema kept in the repository, offline) and ``verify_net_in_out``."""
    for cmd in (
        ["verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", "configs/meta_schema.json"],
        ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"],
    ):
        result = subprocess.run([sys.executable, "-m", "monai.bundle", *cmd], cwd=BUNDLES / bundle, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "verified with no error" in result.stdout + result.stderr


@pytest.fixture
def verify_bundle():
    """Run MONAI's bundle checks on a bundle of the repository."""
    return _verify_bundle


@pytest.fixture(scope="module")
def acdc_data(tmp_path_factory):
    """A tiny ACDC-like folder in the SSL4MIS layout (8 patients of 2 slices, 32 x 32), prepared with ``medssl prepare
    ssl4mis``: ``datalist_3.json``, ``datalist_7.json``, ``datalist_all.json``, ``images/``, ``labels/``."""
    from _ssl4mis import make_acdc_like

    from medssl.cli import main

    root = tmp_path_factory.mktemp("acdc_bundle")
    make_acdc_like(root / "raw", patients=8, slices=2, size=32)
    assert main(["prepare", "ssl4mis", "--root", str(root / "raw"), "--out", str(root / "data")]) == 0
    return root / "data"


@pytest.fixture(scope="module")
def la_data(tmp_path_factory):
    """The sample prepared as the LA docs say (1 labelled, the last training ID for validation), with a copy of the
    test volume under another name as an unlabelled case, so that a semi-supervised method has one to read (the
    datalist refuses a case that is both unlabelled and a test case)."""
    import json
    import shutil

    from medssl.data.ssl4mis import prepare_ssl4mis

    if not LA_SAMPLE.is_dir():
        pytest.skip(f"{LA_SAMPLE} is absent (the real LA sample)")

    out = tmp_path_factory.mktemp("la") / "data"
    prepare_ssl4mis(LA_SAMPLE, out, labeled=(1,), num_classes=2, val_from_train=1)
    split = json.loads((out / "datalist_1.json").read_text())
    assert not split["unlabeled"] and len(split["training"]) == len(split["validation"]) == len(split["testing"]) == 1
    copy = out / "images" / "unlabelled_copy.nii.gz"
    shutil.copy(out / split["testing"][0]["image"], copy)
    split["unlabeled"] = [{"image": str(copy), "case_id": "unlabelled_copy"}]
    (out / "datalist_ssl.json").write_text(json.dumps(split))
    return out
