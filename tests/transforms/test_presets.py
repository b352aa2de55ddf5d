"""Tests of the tasks' pipelines (medssl.transforms.presets): the training crops of 2D slices with cached indices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, NormalizeIntensityd, RandAdjustContrastd, RandGaussianSmoothd, Randomizable

from medssl.transforms.presets import _crops_and_flips, acdc_transforms, brats_transforms, strong_views


def _slice_case(tmp_path, size=24):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(size, size, 4)).astype(np.float32) + 2.0
    label = np.zeros((size, size), dtype=np.uint8)
    label[5:9, 14:20] = 2  # edema (2018 convention)
    label[6:8, 15:17] = 4  # enhancing
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "image.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "label.nii.gz"))
    return {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}


def test_2d_training_crops_with_cached_indices_equal_the_uncached_crops(tmp_path):
    case = _slice_case(tmp_path)
    pipeline = brats_transforms("train", spatial_dims=2, roi_size=(8, 8), num_samples=6)
    pipeline.set_random_state(seed=3)
    patches = pipeline(case)
    assert len(patches) == 6
    for patch in patches:
        assert set(patch) == {"image", "label"}  # the cached indices do not reach the batch
        assert patch["image"].shape == (4, 8, 8) and patch["label"].shape == (1, 8, 8)
    assert sum(bool((p["label"] > 0).any()) for p in patches) >= 1  # positive crops hold tumour

    # the same crops as RandCropByPosNegLabeld computing the indices itself at every call
    first_random = next(i for i, t in enumerate(pipeline.transforms) if isinstance(t, Randomizable))
    loaded = Compose(pipeline.transforms[:first_random])(case)  # what CacheDataset keeps
    keys = ["image", "label"]
    cached = Compose(_crops_and_flips("train", (8, 8), 6, keys, 0.0, cache_indices=True))
    uncached = Compose(_crops_and_flips("train", (8, 8), 6, keys, 0.0, cache_indices=False))
    cached.set_random_state(seed=5)
    uncached.set_random_state(seed=5)
    for a, b in zip(cached(dict(loaded)), uncached(dict(loaded))):
        for key in keys:
            torch.testing.assert_close(torch.as_tensor(a[key]), torch.as_tensor(b[key]))


def test_2d_scans_are_scored_normalised_slice_by_slice_as_the_slices_trained(tmp_path):
    """A scan stacked from 2D slices for evaluation is normalised per slice, as each slice is in training; with the
    whole scan's statistics (a bright slice and a dim one) the model would see other intensities than it learned."""
    cases = []
    for z, (scale, shift) in enumerate([(1.0, 2.0), (5.0, 40.0)]):  # two slices of very different intensity
        folder = tmp_path / f"z{z}"
        folder.mkdir()
        case = _slice_case(folder)
        image = nib.load(case["image"])
        data = image.get_fdata(dtype=np.float32) * scale + shift
        nib.save(nib.Nifti1Image(data, image.affine), case["image"])
        cases.append(case)
    stacked = {"image": [c["image"] for c in cases], "label": [c["label"] for c in cases]}
    scan = brats_transforms("eval", spatial_dims=2, roi_size=(8, 8))(stacked)
    assert scan["image"].shape == (4, 24, 24, 2)
    train = brats_transforms("train", spatial_dims=2, roi_size=(8, 8)).transforms
    stop = next(i for i, t in enumerate(train) if isinstance(t, NormalizeIntensityd)) + 1
    load = Compose(train[:stop])  # training's loading, up to and with its normalisation
    for z, case in enumerate(cases):
        trained = load(dict(case))["image"]  # (4, 24, 24), normalised on its own
        torch.testing.assert_close(torch.as_tensor(scan["image"][..., z]), torch.as_tensor(trained), atol=1e-5, rtol=0)
        assert abs(float(scan["image"][..., z].mean())) < 1e-4  # each slice centred, not only the scan


def test_strong_views_keep_a_z_scored_background_and_the_order_of_intensities():
    """The strong view's brightness and contrast are UniMatch's colour jitter: linear, so the zero background of a
    z-scored multi-modal slice stays zero. A gamma curve on a slice whose range a few bright voxels set moved every
    voxel, background included (by up to 6 standard deviations on real BraTS slices)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.zeros(4, 64, 64)
    brain = torch.zeros(64, 64, dtype=torch.bool)
    brain[16:48, 16:48] = True
    tissue = torch.randn(4, int(brain.sum()), generator=gen)
    tissue[:, :5] = 12.0  # a few bright voxels set the range, as enhancing tumour does
    tissue = (tissue - tissue.mean(1, keepdim=True)) / tissue.std(1, keepdim=True)  # z-scored on the brain
    image[:, brain] = tissue
    xform = Compose(strong_views(1, 2))
    xform.set_random_state(seed=0)
    far = torch.ones(64, 64, dtype=torch.bool)
    far[6:58, 6:58] = False  # background beyond the blur's reach
    changed = 0
    for _ in range(20):
        out = xform({"image": image.clone()})
        strong = torch.as_tensor(out["image_strong1"])
        assert torch.equal(torch.as_tensor(out["image"]), image)
        assert strong[:, far].abs().max() < 1e-4
        changed += int(not torch.allclose(strong, image))
        # increasing affine maps per channel: the bright voxels stay the brightest of the brain
        assert torch.all(strong[:, brain][:, :5].mean(1) > strong[:, brain][:, 5:].mean(1))
    assert changed >= 15


def test_gamma_strong_views_keep_the_zero_background_and_the_order_of_a_unit_scaled_slice():
    """ACDC's choice: a gamma curve over the range of a slice scaled to [0, 1] keeps the background (the minimum) at
    zero and the order of intensities; the ACDC pipeline takes it, the others the linear blend."""
    gen = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 64, 64)
    image[0, 16:48, 16:48] = torch.rand(32, 32, generator=gen)
    views = strong_views(1, 2, contrast="gamma")
    assert any(isinstance(t, RandAdjustContrastd) for t in views)
    xform = Compose([t for t in views if not isinstance(t, RandGaussianSmoothd)])  # blur is not monotone
    xform.set_random_state(seed=0)
    order = image.flatten().argsort()
    changed = 0
    for _ in range(20):
        strong = torch.as_tensor(xform({"image": image.clone()})["image_strong1"]).flatten()
        assert strong[image.flatten() == 0].abs().max() < 1e-6
        assert torch.all(strong[order].diff() >= -1e-6)
        changed += int(not torch.allclose(strong, image.flatten()))
    assert changed >= 15
    assert any(isinstance(t, RandAdjustContrastd) for t in acdc_transforms("unlabeled", (32, 32), strong=1).transforms)
    assert not any(isinstance(t, RandAdjustContrastd) for t in strong_views(1, 2))
    with pytest.raises(ValueError, match="contrast"):
        strong_views(1, 2, contrast="sigmoid")


def test_3d_brats_patches_are_cut_from_the_zoomed_volume(tmp_path):
    """With ``scale``, a 3D BraTS patch covers twice the field of view at half resolution: a 16^3 patch of a 32^3
    case zoomed by 0.5 is the whole case, its labels still in 0..3; a case smaller than roi / scale is refused; 2D
    slices take no scale."""
    from tests._brats import write_brats_folder

    from medssl.data.brats import prepare_brats
    from medssl.data.datalist import load_datalist

    folder = write_brats_folder(tmp_path / "raw", cases=1, size=32, seed=0)
    case = load_datalist(prepare_brats(folder, tmp_path / "prepared"))["training"][0]
    pipeline = brats_transforms("train", 3, roi_size=(16, 16, 16), num_samples=2, scale=0.5)
    pipeline.set_random_state(seed=0)
    patches = pipeline(case)
    whole = brats_transforms("eval", 3)(case)
    for patch in patches:
        assert patch["image"].shape == (4, 16, 16, 16) and patch["label"].shape == (1, 16, 16, 16)
        assert set(torch.unique(torch.as_tensor(patch["label"])).tolist()) <= {0, 1, 2, 3}
        # the zoomed case is the patch (up to flips): as many tumour voxels as the whole case at 1/8 of the volume
        ratio = float((patch["label"] > 0).sum()) / float((whole["label"] > 0).sum())
        assert ratio == pytest.approx(1 / 8, rel=0.25)
    with pytest.raises(RuntimeError) as refused:  # MONAI wraps the transform's error
        brats_transforms("train", 3, roi_size=(32, 32, 32), scale=0.5)(case)
    # a 32^3 patch at half resolution needs 64^3 voxels: the error names the file and both shapes
    assert "t1.nii.gz: spatial shape (32, 32, 32) is smaller than the region of interest (64, 64, 64)" in str(
        refused.value.__cause__
    )
    with pytest.raises(ValueError, match="2D slices take scale 1"):
        brats_transforms("train", 2, roi_size=(8, 8), scale=0.5)
