"""The 3D LA bundle on the real 3-volume LA 2018 sample (``../shared/data/la_ssl4mis_sample``): prepared with
``medssl prepare ssl4mis``, trained a few iterations at half resolution, evaluated per volume at full resolution
(Dice, Jaccard, HD95, ASD), and inferred to a NIfTI with the input's geometry, run as users run it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medssl.checkpoints import load_state_dict_file

BUNDLE = "la_mri_ssl_segmentation"
SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "la_ssl4mis_sample"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is absent (the real LA sample)")
TINY = {"roi_size": "[32,32,32]", "scale": 0.5, "network_channels": "[4,8,16,32,64]", "num_res_units": 0,
        "batch_size": 1, "unlabeled_batch_size": 1, "num_samples": 2, "num_workers": 0, "iterations": 4,
        "val_interval": 2, "optimizer_name": "adamw", "learning_rate": 0.001, "method#warmup": 0, "method#ramp": 0}


@pytest.mark.parametrize("method", ["fixmatch"])  # the semi-supervised path: weak and strong views, the cut
def test_trains_evaluates_and_infers_on_real_volumes(la_data, tmp_path, run_bundle, method):
    run = tmp_path / "run"
    train = {"bundle_root": str(run), "dataset_dir": str(la_data), "datalist": str(la_data / "datalist_ssl.json"),
             "ssl_method": method, **TINY}  # fmt: skip
    run_bundle(BUNDLE, ["train.json"], train)
    last = load_state_dict_file(run / "models" / "model_last.pt")
    assert last["trainer"]["iteration"] == 4
    assert last["settings"] == {"network_channels": [4, 8, 16, 32, 64], "num_res_units": 0,
                                "network_norm": "instance", "roi_size": [32, 32, 32], "scale": 0.5}  # fmt: skip
    assert set(torch.load(run / "models" / "model.pt", weights_only=True)) == set(last["model"])
    curve = pd.read_csv(run / "eval" / "val_curve.csv")
    assert curve["iteration"].tolist() == [2, 4] and curve["val_mean_dice"].between(0, 1).all()

    # evaluation: the test volume at its own resolution, the four metrics of the LA papers
    run_bundle(BUNDLE, ["train.json", "evaluate.json"], {**train, "output_dir": str(run / "test")})
    table = pd.read_csv(run / "test" / "per_case.csv")
    case = json.loads((la_data / "datalist_1.json").read_text())["testing"][0]["case_id"]
    assert table["case"].tolist() == [case]
    for metric in ("val_mean_dice", "val_jaccard", "val_hd95", "val_asd"):
        assert any(c.startswith(metric) for c in table.columns), (metric, list(table.columns))
    dice = float(table.filter(like="val_mean_dice").iloc[0, 0])
    jaccard = float(table.filter(like="val_jaccard").iloc[0, 0])
    assert 0 <= jaccard <= dice <= 1 and jaccard == pytest.approx(dice / (2 - dice), abs=1e-4)  # J = D / (2 - D)

    # inference on a real volume: a NIfTI on the input's grid and affine, labels 0/1
    images = tmp_path / "images"
    images.mkdir()
    source = la_data / "images" / f"{case}.nii.gz"
    shutil.copy(source, images)
    run_bundle(BUNDLE, ["inference.json"], {"bundle_root": str(run), "dataset_dir": str(images),
                                            **{k: TINY[k] for k in ("roi_size", "scale", "network_channels",
                                                                    "num_res_units")}})  # fmt: skip
    seg = nib.load(run / "predictions" / f"{case}_seg.nii.gz")
    image = nib.load(source)
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}


def test_scaled_inference_zooms_as_training_does_and_returns_the_inputs_grid():
    """The inferer zooms each volume with MONAI's Zoom (the training pipeline's), so a network that is the identity
    on the zoomed grid gives back the volume resized to its own size."""
    from monai.transforms import Zoom

    from medssl.inference.scaled import ScaledSlidingWindowInferer

    volume = torch.rand(1, 1, 40, 36, 22)
    identity = torch.nn.Identity()
    out = ScaledSlidingWindowInferer([16, 16, 16], scale=0.5, device="cpu")(volume, identity)
    assert out.shape == volume.shape
    zoomed = torch.as_tensor(Zoom(0.5, mode="trilinear", keep_size=False)(volume[0]))[None]
    assert zoomed.shape[2:] == (20, 18, 11)
    back = torch.nn.functional.interpolate(zoomed, size=(40, 36, 22), mode="trilinear", align_corners=False)
    assert torch.allclose(out, back, atol=1e-5)
    assert torch.allclose(ScaledSlidingWindowInferer([16, 16, 16], scale=1.0)(volume, identity), volume, atol=1e-6)
