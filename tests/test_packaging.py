"""A plain (non-editable) install carries the bundles: build the wheel, install it outside the source tree, and run
a shipped bundle from it with ``python -m monai.bundle run``, as a user who ran ``pip install medssl`` would.

The wheel goes into its own folder with ``--no-deps`` and is put first on ``PYTHONPATH``, so it reuses this
environment's packages (MONAI, torch) while ``import medssl`` is the wheel's, not the source tree's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _ssl4mis import make_acdc_like
from _wheel import installed_wheel, run_python

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return installed_wheel(tmp_path_factory)


def _run(args, env, cwd, timeout=600):
    return run_python(args, env, cwd, timeout)


def test_wheel_ships_every_bundle(installed, tmp_path):
    root, env = installed
    where = _run(["-c", "import medssl, medssl.workflows.bundle as b; print(medssl.__file__); print(b.bundles_dir())"], env, tmp_path)
    package, bundles = where.split()
    assert package.startswith(str(root / "site")) and bundles == str(root / "site" / "medssl" / "bundles")
    listed = _run(["-m", "medssl", "bundle", "list"], env, tmp_path)
    names = {line.split("\t")[0] for line in listed.splitlines()}
    # the bundles' common base (bundles/_common) is not a bundle
    assert names == {p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "train.json").is_file()}
    assert "_common" not in names and len(names) == 5


def test_bundle_runs_from_the_wheel(installed, tmp_path):
    _, env = installed
    make_acdc_like(tmp_path / "raw", patients=8, slices=2, size=32)
    _run(["-m", "medssl", "prepare", "ssl4mis", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "data")], env, tmp_path)
    _run(["-m", "medssl", "bundle", "export", "acdc_mri_ssl_segmentation", "--out", str(tmp_path / "b")], env, tmp_path)
    bundle = tmp_path / "b" / "acdc_mri_ssl_segmentation"
    overrides = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(tmp_path / "data"), "ssl_method": "segpl",
                 "roi_size": "[32,32]", "network_channels": "[4,8,16,32,64]", "num_res_units": 0, "batch_size": 2,
                 "unlabeled_batch_size": 2, "num_workers": 0, "iterations": 2, "val_interval": 2}  # fmt: skip
    args = ["-m", "monai.bundle", "run", "--config_file", "['configs/common.json','configs/train.json']"]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    _run(args, env, bundle)
    assert (tmp_path / "run" / "models" / "model_last.pt").is_file()
    curve = (tmp_path / "run" / "eval" / "val_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,iteration") and len(curve) == 2
    with pytest.raises(AssertionError, match="exists already"):  # export never overwrites
        _run(["-m", "medssl", "bundle", "export", "acdc_mri_ssl_segmentation", "--out", str(tmp_path / "b")], env, tmp_path)
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    # the exported bundle carries the common base as a file of its own, not as a link out of the bundle
    common = bundle / "configs" / "common.json"
    assert common.is_file() and not common.is_symlink()
    assert common.read_text() == (REPO / "bundles" / "_common" / "configs" / "common.json").read_text()
    # the documented offline checks run from the exported bundle: the schema travels with it
    for cmd in (["verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", "configs/meta_schema.json"],
                ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
                 "configs/inference.json"]):  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "monai.bundle", *cmd], capture_output=True, text=True, env=env,
                                cwd=bundle, timeout=300)  # fmt: skip
        assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr, result.stderr


def _shipped_weights_segment(env, tmp_path, name, case):
    """Export bundle ``name`` from the wheel, run its documented inference command (only ``--dataset_dir`` and
    ``--output_dir``) on ``case`` as ``medssl prepare ssl4mis`` wrote it under ``tmp_path / "data"``; return the
    segmentation and the expert label (arrays on the same grid and affine) and the case's row of the per-volume table
    the bundle ships."""
    import csv

    import nibabel as nib
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(tmp_path / "data" / "images" / f"{case}.nii.gz", images)
    _run(["-m", "medssl", "bundle", "export", name, "--out", str(tmp_path / "b")], env, tmp_path)
    bundle = tmp_path / "b" / name
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "model.ts").is_file()
    out = tmp_path / "out"
    log = run_python(["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir",
                      str(images), "--output_dir", str(out)], env, bundle, stderr=True)  # fmt: skip
    written = out / f"{case}_seg.nii.gz"
    assert f"wrote {written}" in log
    seg, label = nib.load(written), nib.load(tmp_path / "data" / "labels" / f"{case}.nii.gz")
    assert seg.shape == label.shape and np.allclose(seg.affine, label.affine)
    with open(bundle / "docs" / "test_per_volume.csv") as f:
        row = {r["case"]: r for r in csv.DictReader(f)}[case]
    return np.asarray(seg.dataobj), np.asarray(label.dataobj), row


ACDC = REPO.parent / "shared" / "data" / "acdc_ssl4mis"


@pytest.mark.skipif(not ACDC.is_dir(), reason="the real ACDC data (../shared/data/acdc_ssl4mis) is absent")
def test_shipped_acdc_weights_reproduce_their_table_from_an_exported_bundle(installed, tmp_path):
    """From the wheel, outside the repository: export the ACDC bundle, run its documented inference command on a real
    test volume (NIfTI from ``medssl prepare ssl4mis``), and score the segmentation against the expert label: within
    0.005 of the volume's figure in the per-volume table the bundle ships."""
    import numpy as np

    _, env = installed
    case = "patient011_frame01"  # the first volume of test.list
    raw = tmp_path / "raw"  # a minimal SSL4MIS folder: one labelled slice, one validation and one test volume
    (raw / "data").mkdir(parents=True)
    first_slice = (ACDC / "train_slices.list").read_text().split()[0]
    (raw / "data" / f"{first_slice}.h5").symlink_to(ACDC / "data" / f"{first_slice}.h5")
    validation = (ACDC / "val.list").read_text().split()[0]
    for name in (validation, case):
        (raw / "data" / f"{name}.h5").symlink_to(ACDC / "data" / f"{name}.h5")
    for name, lines in (("train_slices.list", [first_slice]), ("val.list", [validation]), ("test.list", [case])):
        (raw / name).write_text("\n".join(lines) + "\n")
    _run(["-m", "medssl", "prepare", "ssl4mis", "--root", str(raw), "--out", str(tmp_path / "data"), "--labeled", "1"],
         env, tmp_path)  # fmt: skip
    pred, truth, row = _shipped_weights_segment(env, tmp_path, "acdc_mri_ssl_segmentation", case)
    dice = np.mean([2 * ((pred == c) & (truth == c)).sum() / ((pred == c).sum() + (truth == c).sum()) for c in (1, 2, 3)])
    assert abs(dice - float(row["dice_mean"])) <= 0.005, (dice, row["dice_mean"])


LA = REPO.parent / "shared" / "data" / "la_ssl4mis_sample"


@pytest.mark.skipif(not LA.is_dir(), reason="the real LA sample (../shared/data/la_ssl4mis_sample) is absent")
def test_shipped_la_weights_reproduce_their_table_from_an_exported_bundle(installed, tmp_path):
    """From the wheel, outside the repository: export the LA bundle, run its documented inference command on the real
    test volume of the LA sample (one of the 20 of test.list, NIfTI from ``medssl prepare ssl4mis``), and score it
    against the expert label: within 0.005 of the volume's Dice in the per-volume table the bundle ships."""

    _, env = installed
    case = (LA / "test.list").read_text().split()[0]
    _run(["-m", "medssl", "prepare", "ssl4mis", "--root", str(LA), "--out", str(tmp_path / "data"), "--labeled", "1",
          "--num-classes", "2", "--val-from-train", "1"], env, tmp_path)  # fmt: skip
    pred, truth, row = _shipped_weights_segment(env, tmp_path, "la_mri_ssl_segmentation", case)
    dice = 2 * ((pred > 0) & (truth > 0)).sum() / ((pred > 0).sum() + (truth > 0).sum())
    assert abs(dice - float(row["dice"])) <= 0.005, (dice, row["dice"])
