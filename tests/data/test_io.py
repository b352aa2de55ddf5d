"""Tests of medssl.data.io: atomic writes, JSON, and volume reading (NIfTI, MHA, NRRD, DICOM series) on synthetic
and real scans."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medssl.data.io import atomic_path, exclusive, read_json, read_volume, write_json, write_nifti
from medssl.errors import DataError

from _dicom import write_dicom_series

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _shared(sub: str) -> Path:
    folder = SHARED_DATA / sub
    if not folder.is_dir():
        pytest.skip(f"shared test data {folder} is absent")
    return folder


def _sitk(array, spacing=(0.8, 0.9, 2.0), origin=(-10.0, 5.0, 30.0), direction=None):
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _write_dicom_series(array, folder, spacing=(0.8, 0.8, 2.0), origin=(-10.0, 5.0, 30.0)) -> Path:
    return write_dicom_series(array, folder, spacing, origin)


@pytest.fixture
def ramp():
    return np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 50


# -------------------------------------------------------------------------------------------------- atomic writes
def test_atomic_path_success_renames_into_place(tmp_path):
    target = tmp_path / "sub" / "seg.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["seg.nii.gz"]


def test_atomic_path_error_leaves_no_temp_and_no_target(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_error_keeps_previous_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# ----------------------------------------------------------------------------------------------------------- JSON
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fcntl locks are POSIX")
def test_exclusive_makes_a_second_holder_wait(tmp_path):
    import threading
    import time

    events: list[str] = []
    first_in = threading.Event()

    def hold(name: str, after: threading.Event | None) -> None:
        if after is not None:
            after.wait()
        with exclusive(tmp_path / "data" / ".lock"):
            events.append(f"{name} in")
            first_in.set()
            time.sleep(0.2)
            events.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=("a", None)), threading.Thread(target=hold, args=("b", first_in))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert events == ["a in", "a out", "b in", "b out"]  # b waited for a, though it asked while a held the lock


def test_json_round_trip(tmp_path):
    obj = {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}], "spacing": [1.0, 1.5], "x": None}
    path = write_json(obj, tmp_path / "d" / "datalist.json")
    assert path == tmp_path / "d" / "datalist.json"
    assert read_json(path) == obj
    assert path.read_text().endswith("\n")


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"training": [')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON") as err:
        read_json(bad)
    assert err.value.path == str(bad)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="binary.json: not valid JSON"):
        read_json(binary)
    with pytest.raises(DataError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------------- volume I/O
def test_nifti_and_mha_agree(tmp_path, ramp):
    """The same image through nibabel (NIfTI) and through SimpleITK (MHA, LPS converted) gives one array and affine."""
    # A turned and flipped orientation, so that a wrong axis order or sign shows.
    image = _sitk(ramp, direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "a.mha"))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"))
    nii, mha, nrrd = (read_volume(tmp_path / f"a.{ext}") for ext in ("nii.gz", "mha", "nrrd"))
    assert nii.array.shape == (6, 5, 4)
    np.testing.assert_array_equal(nii.array, ramp)
    for other in (mha, nrrd):
        np.testing.assert_array_equal(other.array, nii.array)
        np.testing.assert_allclose(other.affine, nii.affine, atol=1e-5)
    # The RAS affine worked out by hand from the LPS geometry.
    expected = np.eye(4)
    expected[:3, :3] = LPS_TO_RAS @ np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    expected[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    np.testing.assert_allclose(mha.affine, expected, atol=1e-6)
    # Voxel (i, j, k) of the array sits where SimpleITK puts index (i, j, k).
    ijk = (5, 1, 3)
    world = LPS_TO_RAS @ np.array(image.TransformIndexToPhysicalPoint(ijk))
    np.testing.assert_allclose((mha.affine @ [*ijk, 1])[:3], world, atol=1e-6)
    assert mha.array[ijk] == image[ijk]
    np.testing.assert_allclose(mha.spacing, (0.8, 0.9, 2.0), atol=1e-6)


def test_write_nifti_round_trip(tmp_path, ramp):
    affine = np.array([[0.0, -0.9, 0.0, 3.0], [0.8, 0.0, 0.0, -4.0], [0.0, 0.0, 2.0, 5.0], [0, 0, 0, 1]])
    path = write_nifti(ramp, affine, tmp_path / "x.nii.gz", dtype=np.float32)
    vol = read_volume(path)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, ramp)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    img = nib.load(path)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert read_volume(path, dtype=np.int16).array.dtype == np.int16


def test_dicom_series_folder(tmp_path, ramp):
    folder = _write_dicom_series(ramp, tmp_path / "series")
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.array, ramp)
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([-0.8, -0.8, 2.0]), atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 3], [10.0, -5.0, 30.0], atol=1e-5)


@pytest.mark.parametrize("name", ["x.nii.gz", "x.mha", "x.nrrd"])
def test_empty_missing_truncated(tmp_path, ramp, name):
    path = tmp_path / name
    with pytest.raises(DataError, match="file not found") as err:
        read_volume(path)
    assert err.value.path == str(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"file is empty \(0 bytes\)"):
        read_volume(path)
    sitk.WriteImage(_sitk(ramp.astype(np.float32) * 1.37), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(DataError, match="cannot be read as an image") as err:
        read_volume(path)
    assert err.value.path == str(path)


def test_dicom_folder_errors(tmp_path, ramp):
    with pytest.raises(DataError, match="no DICOM series"):
        read_volume(tmp_path)
    # A truncated slice: GDCM would drop it from the series without a word.
    folder = _write_dicom_series(ramp, tmp_path / "trunc")
    data = (folder / "002.dcm").read_bytes()
    (folder / "002.dcm").write_bytes(data[:300])
    with pytest.raises(DataError, match="cannot be read") as err:
        read_volume(folder)
    assert err.value.path == str(folder / "002.dcm")
    (folder / "002.dcm").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_volume(folder)
    # A missing slice: ITK would spread the rest evenly and misplace every slice after the gap.
    folder = _write_dicom_series(ramp, tmp_path / "gap")
    (folder / "001.dcm").unlink()
    with pytest.raises(DataError, match="unevenly spaced"):
        read_volume(folder)
    # Two series in one folder.
    folder = _write_dicom_series(ramp, tmp_path / "two")
    other = _write_dicom_series(ramp, tmp_path / "other")
    for f in other.iterdir():
        img = sitk.ReadImage(str(f))
        img.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.9.1.2")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"b{f.name}"))
        writer.Execute(img)
    with pytest.raises(DataError, match="2 DICOM series"):
        read_volume(folder)
    # Files that are not DICOM beside a series do not matter.
    folder = _write_dicom_series(ramp, tmp_path / "notes")
    (folder / "README.txt").write_text("exported by hand")
    assert read_volume(folder).array.shape == (6, 5, 4)


# ------------------------------------------------------------------------------------------------------ real data
def test_real_jpeg2000_series_matches_its_segmentation():
    folder = _shared("totalseg_ct_dicom_series")
    ct = read_volume(folder / "dicom")
    seg = read_volume(folder / "example_seg_dicom.nii.gz")
    assert ct.array.shape == seg.array.shape == (512, 512, 20)
    np.testing.assert_allclose(ct.spacing, (0.977, 0.977, 2.0), atol=1e-3)
    assert int(ct.array.min()) == -1024 and int(ct.array.max()) == 1839
    # The seg is stored y-flipped: voxel (i, j, k) of the CT is voxel (i, 511 - j, k) of the seg, in world space.
    flip = np.array([[1, 0, 0, 0], [0, -1, 0, 511], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(ct.affine, seg.affine @ flip, atol=1e-3)
    for ijk in [(0, 0, 0), (511, 0, 19), (100, 400, 7)]:
        np.testing.assert_allclose(ct.affine @ [*ijk, 1], seg.affine @ [ijk[0], 511 - ijk[1], ijk[2], 1], atol=1e-3)
    # Sampled by world position, the liver (label 5) lies on soft tissue; by raw index it would not.
    liver = np.argwhere(np.asarray(seg.array) == 5)
    world = np.c_[liver, np.ones(len(liver))] @ seg.affine.T
    ct_idx = np.rint(world @ np.linalg.inv(ct.affine).T)[:, :3].astype(int)
    hu = ct.array[tuple(ct_idx.T)].astype(float)
    assert 0 < hu.mean() < 200, hu.mean()
    assert not 0 < ct.array[np.asarray(seg.array) == 5].mean() < 200


def test_real_uncompressed_series_and_nrrd_labels():
    folder = _shared("dcmqi_ct_3slice")
    ct = read_volume(folder / "dicom")
    assert ct.array.shape == (512, 512, 3)
    np.testing.assert_allclose(ct.spacing, (0.8105, 0.8105, 1.0), atol=1e-4)
    assert int(ct.array.min()) == -3024 and int(ct.array.max()) == 1381
    for name, value in [("liver_seg.nrrd", 1), ("spine_seg.nrrd", 2), ("heart_seg.nrrd", 3)]:
        lab = read_volume(folder / name)
        assert lab.array.shape == ct.array.shape
        np.testing.assert_allclose(lab.affine, ct.affine, atol=1e-4)
        assert set(np.unique(lab.array).tolist()) == {0, value}
    liver = read_volume(folder / "liver_seg.nrrd").array == 1
    assert 0 < float(ct.array[liver].mean()) < 200


def test_real_sparse_header_series():
    folder = _shared("lungmask_chest_ct_2slice")
    vol = read_volume(folder)
    assert vol.array.shape == (512, 512, 2)
    np.testing.assert_allclose(vol.spacing, (0.625, 0.625, 1.0), atol=1e-6)
    assert int(vol.array.min()) == -2048 and int(vol.array.max()) == 1502
    # Lung parenchyma is in view: plenty of voxels in the lung HU range.
    assert ((vol.array > -950) & (vol.array < -700)).mean() > 0.05
