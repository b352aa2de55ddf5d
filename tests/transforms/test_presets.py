"""Tests of the tasks' pipelines (medssl.transforms.presets): the training crops of 2D slices with cached indices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, Randomizable

from medssl.transforms.presets import _crops_and_flips, brats_transforms


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
