from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from monai.transforms import AsDiscrete, Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

from medssl.data.datalist import load_datalist
from medssl.data.io import write_nifti
from medssl.errors import DatalistError
from medssl.inference.predict import make_sliding_window_inferer, predict_to_files, resolve_device, write_pseudolabels

# an oblique-free but flipped, anisotropic, shifted affine: the output must come back on exactly this grid
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 1.2, 0, -12.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])


def _preprocessing():
    return Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
        ]
    )


def _case(tmp_path, name, shape=(20, 18, 9)):
    rng = np.random.default_rng(0)
    path = tmp_path / f"{name}.nii.gz"
    write_nifti(rng.normal(size=shape).astype(np.float32), AFFINE, path)
    return path


def _net():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(4, 8), strides=(2,))


def test_prediction_has_input_shape_and_affine(tmp_path):
    img = _case(tmp_path, "case1")
    inferer = make_sliding_window_inferer((16, 16, 16), torch.device("cpu"), sw_batch_size=2)
    [out] = predict_to_files(_net(), [{"image": str(img)}], _preprocessing(), inferer, AsDiscrete(argmax=True), tmp_path / "pred")
    assert out.name == "case1_seg.nii.gz"
    seg = nib.load(out)
    assert seg.shape == (20, 18, 9)
    np.testing.assert_allclose(seg.affine, AFFINE, atol=1e-4)
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}
    assert seg.get_data_dtype() == np.uint8


def test_slices_of_one_case_get_one_file_each(tmp_path):
    # 2D slice datalists (medssl prepare brats --slices2d) list several entries per case id, told apart by "slice"
    img = _case(tmp_path, "case1")
    entries = [{"image": str(img), "case_id": "case1", "slice": z} for z in (3, 12)]
    entries.append({"image": str(img), "case_id": "case2"})
    inferer = make_sliding_window_inferer((16, 16, 16), torch.device("cpu"))
    paths = predict_to_files(_net(), entries, _preprocessing(), inferer, AsDiscrete(argmax=True), tmp_path / "pred")
    assert [p.name for p in paths] == ["case1_z003_seg.nii.gz", "case1_z012_seg.nii.gz", "case2_seg.nii.gz"]
    assert all(p.is_file() for p in paths)


def test_write_pseudolabels_adds_files_to_unlabelled_entries(tmp_path):
    imgs = [_case(tmp_path, f"u{i}") for i in range(2)]
    lab = _case(tmp_path, "l0")
    dl = tmp_path / "split.json"
    dl.write_text(json.dumps({"training": [{"image": lab.name, "label": lab.name}], "unlabeled": [{"image": p.name} for p in imgs]}))
    before = dl.read_bytes()
    inferer = make_sliding_window_inferer((16, 16, 16), torch.device("cpu"))
    out = write_pseudolabels(_net(), dl, tmp_path / "teacher", _preprocessing(), inferer, AsDiscrete(argmax=True))
    assert dl.read_bytes() == before
    new = load_datalist(out)
    assert len(new["unlabeled"]) == 2 and new["training"] == load_datalist(dl)["training"]
    for entry, img in zip(new["unlabeled"], imgs):
        assert entry["pseudo_labeled"] is True
        pl = nib.load(entry["pseudo_label"])
        assert pl.shape == nib.load(img).shape
        np.testing.assert_allclose(pl.affine, AFFINE, atol=1e-4)
    assert not list((tmp_path / "teacher").rglob("*.tmp*"))  # no temporary file left behind


def test_write_pseudolabels_refuses_empty_unlabelled_set(tmp_path):
    lab = _case(tmp_path, "l0")
    dl = tmp_path / "split.json"
    dl.write_text(json.dumps({"training": [{"image": lab.name, "label": lab.name}], "unlabeled": []}))
    with pytest.raises(DatalistError, match="unlabelled set is empty"):
        write_pseudolabels(_net(), dl, tmp_path / "t", _preprocessing(), None, AsDiscrete(argmax=True))
    assert not (tmp_path / "t").exists()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
