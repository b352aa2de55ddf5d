"""Per-scan evaluation of 2D networks: slice entries stacked back into volumes, scored as volumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.inferers import SliceInferer

from medssl.data.io import write_nifti
from medssl.data.slices import stack_slices
from medssl.workflows.evaluation import build_evaluator
from medssl.errors import DataError
from medssl.inference.slices import ResizedSliceInferer
from medssl.transforms.presets import acdc_transforms, brats_transforms
from medssl.transforms.slices import StackSlicesd


class _Oracle(torch.nn.Module):
    """Predicts the class written into the image: logits 10 * one-hot(round(image))."""

    def forward(self, x):
        return 10.0 * F.one_hot(x[:, 0].round().long(), 4).permute(0, 3, 1, 2).float()


def _slice_case(tmp_path, name, preds, labels):
    entries = []
    for z, (p, y) in enumerate(zip(preds, labels)):
        image = write_nifti(p.astype(np.float32), np.eye(4), tmp_path / f"{name}_z{z}_image.nii.gz")
        label = write_nifti(y.astype(np.uint8), np.eye(4), tmp_path / f"{name}_z{z}_label.nii.gz")
        entries.append({"image": str(image), "label": str(label), "case_id": name, "slice": z})
    return entries


def test_false_positive_on_an_empty_slice_counts_against_the_scan(tmp_path):
    label0 = np.zeros((8, 8))
    label0[2:6, 2:6] = 1  # 16 voxels of class 1 (RV) on slice 0
    label1 = np.zeros((8, 8))  # slice 1: nothing
    pred1 = np.zeros((8, 8))
    pred1[0:2, 0:2] = 1  # a 4-voxel false positive on the empty slice
    entries = _slice_case(tmp_path, "case", [label0, pred1], [label0, label1])
    # given in scrambled slice order: stacking sorts by slice
    volumes = stack_slices(entries[::-1])
    assert len(volumes) == 1 and volumes[0]["slices"] == [0, 1]
    evaluator = build_evaluator(
        DataLoader(Dataset(volumes, acdc_transforms("eval", (8, 8))), batch_size=1), _Oracle(), (8, 8),
        task="multiclass", class_names=["RV", "Myo", "LV"], device="cpu", inferer=ResizedSliceInferer((8, 8)),
        output_dir=tmp_path / "eval",
    )  # fmt: skip
    evaluator.run()
    # per scan: 2 * 16 / (20 + 16); per slice with empty slices skipped it would be 1.0
    assert evaluator.state.metrics["val_dice_RV"] == pytest.approx(32 / 36)
    table = pd.read_csv(tmp_path / "eval" / "per_case.csv")
    assert table["case"].tolist() == ["case"] and table["val_mean_dice_RV"].tolist() == pytest.approx([32 / 36])


class _BratsOracle(torch.nn.Module):
    """Predicts enhancing tumour (contiguous class 3) where the first channel, normalised slice by slice, is high."""

    def forward(self, x):
        return 10.0 * F.one_hot(torch.where(x[:, 0] > 0.5, 3, 0), 4).permute(0, 3, 1, 2).float()


def test_brats_regions_are_scored_per_scan_with_a_false_positive_on_a_tumour_free_slice(tmp_path):
    """The 2D BraTS evaluation (the bundle's pipeline and slice inferer) stacks a case's slices and scores WT/TC/ET on
    the scan, as BraTS does: a false positive on a slice without tumour costs Dice, where a per-slice score with empty
    slices skipped would not see it."""
    brain = np.ones((8, 8))
    label0 = np.zeros((8, 8))
    label0[2:6, 2:6] = 4  # 16 voxels of enhancing tumour (2018 label 4) on slice 0; slice 1 has none
    seen0, seen1 = brain.copy(), brain.copy()
    seen0[2:6, 2:6] = 2  # the oracle finds them (brighter than the brain after the slice's normalisation)
    seen1[0:2, 0:2] = 2  # and 4 voxels on the tumour-free slice
    entries = []
    for z, (seen, label) in enumerate(((seen0, label0), (seen1, np.zeros((8, 8))))):
        image = write_nifti(np.repeat(seen[..., None], 4, -1).astype(np.float32), np.eye(4), tmp_path / f"i{z}.nii.gz")
        label = write_nifti(label.astype(np.uint8), np.eye(4), tmp_path / f"l{z}.nii.gz")
        entries.append({"image": str(image), "label": str(label), "case_id": "scan", "slice": z})
    volumes = stack_slices(entries)
    evaluator = build_evaluator(
        DataLoader(Dataset(volumes, brats_transforms("eval", spatial_dims=2, roi_size=(8, 8))), batch_size=1),
        _BratsOracle(), (8, 8), task="brats", device="cpu", hd95=False,
        inferer=SliceInferer(roi_size=(8, 8), sw_batch_size=4, spatial_dim=2, overlap=0.25, mode="gaussian"),
        output_dir=tmp_path / "eval",
    )  # fmt: skip
    evaluator.run()
    for region in ("WT", "TC", "ET"):  # enhancing tumour is inside all three: 2 * 16 / (20 + 16) each
        assert evaluator.state.metrics[f"val_dice_{region}"] == pytest.approx(32 / 36)
    table = pd.read_csv(tmp_path / "eval" / "per_case.csv")
    assert table["case"].tolist() == ["scan"] and table["val_mean_dice_ET"].tolist() == pytest.approx([32 / 36])


def test_stacked_volume_shape_and_mismatched_slices(tmp_path):
    entries = _slice_case(tmp_path, "a", [np.zeros((6, 5))] * 3, [np.zeros((6, 5))] * 3)
    data = StackSlicesd(["image", "label"])(stack_slices(entries)[0])
    assert tuple(data["image"].shape) == (6, 5, 3) and data["image"].meta["filename_or_obj"] == "a"
    odd = write_nifti(np.zeros((6, 4), np.float32), np.eye(4), tmp_path / "odd.nii.gz")
    with pytest.raises(DataError, match="odd.nii.gz.*differ in shape"):
        StackSlicesd("image")({"image": [entries[0]["image"], str(odd)]})


def test_volume_entries_pass_unchanged():
    entry = {"image": "v.nii.gz", "label": "l.nii.gz", "case_id": "v"}
    assert stack_slices([entry]) == [entry]
