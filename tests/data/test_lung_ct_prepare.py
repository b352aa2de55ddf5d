"""Tests of medssl.data.lung_ct: ``medssl prepare lung-vessel-ct`` on synthetic cases and on small real scans."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist

from medssl.data.io import read_volume
from medssl.data.lung_ct import find_lung_vessel_cases, prepare_lung_vessel_ct
from medssl.errors import DataError

from _dicom import write_dicom_series

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHAPE = (20, 18, 16)
SPACING = (0.8, 0.8, 2.0)
ORIGIN_LPS = (-10.0, 5.0, 30.0)
# A 90 degree turn about z plus a flipped z axis: resampling must keep a non-trivial orientation.
TURNED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
BLOB = (slice(6, 8), slice(11, 13), slice(4, 6))


def _phantom(shape=SHAPE, blob=BLOB):
    """CT in HU (air, lung, a vessel tube along z, one bright blob, out-of-window extremes) and its tube label."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    image = np.full(shape, -1000, dtype=np.int16)
    image[2:-2, 2:-2, :] = -850
    tube = ((x - 10) ** 2 + (y - 7) ** 2 <= 4)[:, :, None] & np.ones(shape, dtype=bool)
    image[tube] = 200
    image[blob] = 450
    image[0:3, 0:3, 0:3] = -3024  # scanners' padding value outside the reconstruction circle
    image[14:17, 12:15, 10:13] = 2500  # bone-like, above the window
    return image, tube.astype(np.uint8)


def _sitk(array, spacing=SPACING, origin=ORIGIN_LPS, direction=None):
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _write(array, path, **geometry) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_sitk(array, **geometry), str(path))
    return path


def _write_dicom_series(array, folder, spacing=SPACING, origin=ORIGIN_LPS) -> Path:
    """A minimal axial CT series, one int16 file per slice, as a scanner export would give it."""
    return write_dicom_series(array, folder, spacing, origin)


def _tree_digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _world(affine, index):
    return (affine @ np.append(np.asarray(index, dtype=float), 1.0))[:3]


def _centre_of_mass_world(array, affine):
    w = np.asarray(array, dtype=float)
    idx = np.stack(np.nonzero(w), axis=1)
    com = (idx * w[tuple(idx.T)][:, None]).sum(0) / w[tuple(idx.T)].sum()
    return _world(affine, com)


def _blob_shift(src, out):
    """World shift of the bright blob from input to output, looking only within 6 mm of where it was."""
    centre = _centre_of_mass_world(src.array == 450, src.affine)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in out.array.shape], indexing="ij"), axis=-1).astype(float)
    world = grid @ out.affine[:3, :3].T + out.affine[:3, 3]
    near = np.abs(world - centre).max(axis=-1) < 6.0
    weight = np.clip(out.array.astype(float) - 200, 0, None) * near  # above the tube's 200 HU: the blob only
    return _centre_of_mass_world(weight, out.affine) - centre


@pytest.fixture
def root(tmp_path):
    """Three cases in three formats; c is unlabelled."""
    image, tube = _phantom()
    base = tmp_path / "raw"
    _write(image, base / "images" / "a.nii.gz")
    _write(tube, base / "labels" / "a.nii.gz")
    _write(image, base / "images" / "b.mha", direction=TURNED)
    _write(tube, base / "labels" / "b.mha", direction=TURNED)
    _write(image, base / "images" / "c.nrrd")
    return base


# ---------------------------------------------------------------------------------------------- formats and outputs
@pytest.mark.parametrize("fmt", ["nii.gz", "mha", "nrrd", "dicom"])
def test_formats_resampled_isotropic(tmp_path, fmt):
    image, tube = _phantom()
    raw = tmp_path / "raw"
    if fmt == "dicom":
        _write_dicom_series(image, raw / "images" / "case1")
        _write(tube, raw / "labels" / "case1.nii.gz")
    else:
        _write(image, raw / "images" / f"case1.{fmt}")
        _write(tube, raw / "labels" / f"case1.{fmt}")
    out = tmp_path / "out"
    datalist_path = prepare_lung_vessel_ct(raw, out, spacing=(1.0, 1.0, 1.0))

    assert datalist_path == out.resolve() / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    assert datalist["training"] == [
        {"image": "imagesTr/case1.nii.gz", "label": "labelsTr/case1.nii.gz", "case_id": "case1"}
    ]
    assert datalist["unlabeled"] == []
    assert datalist["spacing"] == [1.0, 1.0, 1.0] and datalist["window"] == [-1000, 500]
    assert datalist["labels"] == {"0": "background", "1": "vessel"} and datalist["name"] == "lung_vessel_ct"

    img = nib.load(out / "imagesTr" / "case1.nii.gz")
    lab = nib.load(out / "labelsTr" / "case1.nii.gz")
    expected_shape = tuple(round(n * s / 1.0) for n, s in zip(SHAPE, SPACING))
    assert img.shape == lab.shape == expected_shape == (16, 14, 32)
    np.testing.assert_allclose(img.header.get_zooms(), (1.0, 1.0, 1.0), atol=1e-5)
    np.testing.assert_allclose(img.affine, lab.affine, atol=1e-5)
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    arr = np.asanyarray(img.dataobj)
    assert arr.min() == -1000 and arr.max() == 500  # the phantom holds -3024 and 2500
    assert set(np.unique(np.asanyarray(lab.dataobj)).tolist()) == {0, 1}
    # The field of view's first corner stays where it was.
    src = read_volume(next((raw / "images").iterdir()))
    np.testing.assert_allclose(_world(img.affine, [-0.5] * 3), _world(src.affine, [-0.5] * 3), atol=1e-4)


def test_physical_alignment_with_turned_axes(root, tmp_path):
    out = tmp_path / "out"
    prepare_lung_vessel_ct(root, out, spacing=1.0)
    src_img, src_lab = read_volume(root / "images" / "b.mha"), read_volume(root / "labels" / "b.mha")
    img, lab = read_volume(out / "imagesTr" / "b.nii.gz"), read_volume(out / "labelsTr" / "b.nii.gz")
    # Axes keep their directions (turned in x-y, z flipped), only the spacing changes.
    axes_out = img.affine[:3, :3] / np.array(img.spacing)
    np.testing.assert_allclose(axes_out, src_img.affine[:3, :3] / np.array(src_img.spacing), atol=1e-6)
    np.testing.assert_allclose(img.spacing, (1.0, 1.0, 1.0), atol=1e-6)
    # The bright blob lies at the same world position (within half an output voxel).
    shift = _blob_shift(src_img, img)
    assert np.abs(shift).max() < 0.5, shift
    # So does the vessel tube, and its volume is conserved.
    shift = _centre_of_mass_world(lab.array, lab.affine) - _centre_of_mass_world(src_lab.array, src_lab.affine)
    assert np.abs(shift).max() < 0.5, shift
    assert lab.array.sum() * 1.0 == pytest.approx(src_lab.array.sum() * np.prod(SPACING), rel=0.1)


def test_spacing_none_keeps_grid_and_values(root, tmp_path):
    out = tmp_path / "out"
    prepare_lung_vessel_ct(root, out, spacing=None, window=(-900, 300))
    src = read_volume(root / "images" / "a.nii.gz")
    img = read_volume(out / "imagesTr" / "a.nii.gz")
    np.testing.assert_array_equal(img.array, np.clip(src.array, -900, 300))
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    lab, src_lab = read_volume(out / "labelsTr" / "a.nii.gz"), read_volume(root / "labels" / "a.nii.gz")
    np.testing.assert_array_equal(lab.array, src_lab.array)
    assert json.loads((out / "datalist.json").read_text())["spacing"] is None


def test_unlabelled_cases_and_monai_datalist(root, tmp_path):
    out = tmp_path / "out"
    before = _tree_digest(root)
    path = prepare_lung_vessel_ct(root, out, spacing=2.0)
    datalist = json.loads(path.read_text())
    assert [e["case_id"] for e in datalist["training"]] == ["a", "b"]
    assert datalist["unlabeled"] == [{"image": "imagesTr/c.nii.gz", "case_id": "c"}]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    # MONAI reads it with paths made absolute against the datalist's folder.
    training = load_decathlon_datalist(str(path), True, "training")
    unlabeled = load_decathlon_datalist(str(path), False, "unlabeled")
    assert all(Path(e["image"]).is_file() and Path(e["label"]).is_file() for e in training)
    assert Path(unlabeled[0]["image"]).is_file()
    assert _tree_digest(root) == before
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_explicit_case_list(tmp_path):
    image, tube = _phantom()
    img = _write(image, tmp_path / "in" / "ct_0001.nii.gz")
    lab = _write(tube, tmp_path / "in" / "vessels_0001.nrrd")
    unl = _write(image, tmp_path / "in" / "other.mha")
    cases = [{"image": img, "label": lab}, {"image": str(unl), "case_id": "u1"}]
    datalist = json.loads(prepare_lung_vessel_ct(cases, tmp_path / "out", spacing=None).read_text())
    assert [e["case_id"] for e in datalist["training"]] == ["ct_0001"]
    assert [e["case_id"] for e in datalist["unlabeled"]] == ["u1"]
    assert datalist["source"] == str((tmp_path / "in").resolve())


# -------------------------------------------------------------------------------------------------- lung cropping
def _lung_box(shape=SHAPE):
    lung = np.zeros(shape, dtype=np.uint8)
    lung[6:14, 5:12, 4:10] = 1
    lung[8, 8, 7] = 2  # left/right lung labels count as lung alike
    return lung


def test_lung_mask_crop_exact_without_resampling(root, tmp_path):
    _write(_lung_box(), root / "lungs" / "a.nii.gz")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="no lung mask for case"):
        prepare_lung_vessel_ct(root, out, spacing=None, margin_mm=2.0)
    src = read_volume(root / "images" / "a.nii.gz")
    img, lab = read_volume(out / "imagesTr" / "a.nii.gz"), read_volume(out / "labelsTr" / "a.nii.gz")
    # margin 2 mm = ceil(2 / 0.8) = 3 voxels in x and y, ceil(2 / 2) = 1 in z, clipped at the image border.
    lo, hi = (3, 2, 3), (17, 15, 11)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    assert img.array.shape == lab.array.shape == (14, 13, 8)
    np.testing.assert_array_equal(img.array, np.clip(src.array[box], -1000, 500))
    np.testing.assert_array_equal(lab.array, read_volume(root / "labels" / "a.nii.gz").array[box])
    # Voxel (0, 0, 0) of the crop is voxel lo of the input, in world coordinates.
    np.testing.assert_allclose(_world(img.affine, (0, 0, 0)), _world(src.affine, lo), atol=1e-4)
    # Cases without a lung mask stay whole.
    assert read_volume(out / "imagesTr" / "b.nii.gz").array.shape == SHAPE


def test_lung_mask_crop_with_resampling(root, tmp_path):
    lungs = tmp_path / "lungmasks"
    _write(_lung_box(), lungs / "b.mha", direction=TURNED)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="case.*a, c, which stay uncropped"):
        prepare_lung_vessel_ct(root, out, spacing=1.0, lung_masks={"b": lungs / "b.mha"}, margin_mm=0.0)
    src_lung = read_volume(lungs / "b.mha")
    img, lab = read_volume(out / "imagesTr" / "b.nii.gz"), read_volume(out / "labelsTr" / "b.nii.gz")
    assert img.array.shape == lab.array.shape
    assert all(n < m for n, m in zip(img.array.shape, (16, 14, 32)))
    # The crop holds every lung voxel centre (nearest-neighbour sampling: within half an input voxel).
    inv = np.linalg.inv(img.affine)
    for corner in [(6, 5, 4), (13, 11, 9)]:
        ijk = (inv @ np.append(_world(src_lung.affine, corner), 1.0))[:3]
        assert np.all(ijk > -1.5) and np.all(ijk < np.array(img.array.shape) + 0.5), ijk
    # The blob and the label stay in place through resampling and cropping.
    src_img = read_volume(root / "images" / "b.mha")
    shift = _blob_shift(src_img, img)
    assert np.abs(shift).max() < 0.5, shift
    assert lab.array.any()


# ------------------------------------------------------------------------------------------------------ bad input
def _bad_geometry(raw):
    _write(_phantom()[1], raw / "labels" / "z.nii.gz", spacing=(0.8, 0.8, 2.5))
    return raw / "labels" / "z.nii.gz", "affines differ"


def _bad_shape(raw):
    _write(np.zeros((20, 18, 15), dtype=np.uint8), raw / "labels" / "z.nii.gz")
    return raw / "labels" / "z.nii.gz", "shape"


def _nan_image(raw):
    image = _phantom()[0].astype(np.float32)
    image[3, 4, 5] = np.nan
    _write(image, raw / "images" / "z.nii.gz")
    return raw / "images" / "z.nii.gz", "NaN"


def _label_0_2(raw):
    _write(_phantom()[1] * 2, raw / "labels" / "z.nii.gz")
    return raw / "labels" / "z.nii.gz", "[2]"


def _label_0_255(raw):
    _write(_phantom()[1] * 255, raw / "labels" / "z.nii.gz")
    return raw / "labels" / "z.nii.gz", "0/1"


def _zero_bytes(raw):
    (raw / "labels" / "z.nii.gz").write_bytes(b"")
    return raw / "labels" / "z.nii.gz", "empty"


def _truncated_gz(raw):
    path = raw / "images" / "z.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "cannot be read"


def _not_gzip(raw):
    path = raw / "labels" / "z.nii.gz"
    path.write_bytes(gzip.decompress(path.read_bytes())[:100])
    return path, "cannot be read"


def _orphan_label(raw):
    _write(_phantom()[1], raw / "labels" / "nothing.nii.gz")
    return raw / "labels" / "nothing.nii.gz", "without a matching image"


BAD_CASES = [_bad_geometry, _bad_shape, _nan_image, _label_0_2, _label_0_255, _zero_bytes, _truncated_gz, _not_gzip,
             _orphan_label]  # fmt: skip


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("make_bad", BAD_CASES, ids=[f.__name__.strip("_") for f in BAD_CASES])
def test_bad_input_writes_nothing(root, tmp_path, make_bad, validate):
    image, tube = _phantom()
    # Case z sorts last, so with validate=False cases a-c are converted before z fails.
    _write(image, root / "images" / "z.nii.gz")
    _write(tube, root / "labels" / "z.nii.gz")
    bad_file, problem = make_bad(root)
    before = _tree_digest(root)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_lung_vessel_ct(root, out, spacing=1.0, validate=validate)
    assert str(bad_file) in str(err.value) and problem in str(err.value), str(err.value)
    assert not out.exists()
    assert _tree_digest(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no staging folder left behind


def test_mismatched_geometry_names_both_files(root, tmp_path):
    _write(_phantom()[1], root / "labels" / "c.nrrd", origin=(0.0, 0.0, 0.0))
    with pytest.raises(DataError) as err:
        prepare_lung_vessel_ct(root, tmp_path / "out")
    assert str(root / "images" / "c.nrrd") in str(err.value) and str(root / "labels" / "c.nrrd") in str(err.value)


def test_missing_file_in_list(tmp_path):
    image, _ = _phantom()
    img = _write(image, tmp_path / "in" / "a.nii.gz")
    with pytest.raises(DataError, match="missing.nii.gz: file not found"):
        prepare_lung_vessel_ct([{"image": img, "label": tmp_path / "in" / "missing.nii.gz"}], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_several_bad_cases_reported_together(root, tmp_path):
    (root / "labels" / "a.nii.gz").write_bytes(b"")
    _write(_phantom()[1] * 3, root / "labels" / "b.mha", direction=TURNED)
    with pytest.raises(DataError, match=r"2 of 3 cases failed validation") as err:
        prepare_lung_vessel_ct(root, tmp_path / "out")
    assert "a.nii.gz: file is empty" in str(err.value) and "b.mha: vessel label must be binary" in str(err.value)


def test_empty_lung_mask(root, tmp_path):
    _write(np.zeros(SHAPE, dtype=np.uint8), root / "lungs" / "a.nii.gz")
    with pytest.raises(DataError, match="lung mask is empty"), pytest.warns(UserWarning):
        prepare_lung_vessel_ct(root, tmp_path / "out")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r: (r / "images" / "loose.dcm").write_bytes(b"x"), "put each series in its own sub-folder"),
        (lambda r: (r / "images" / "notes.txt").write_text("x"), "not an image file"),
        (lambda r: _write(_phantom()[0], r / "images" / "a.mha"), "two inputs for case 'a'"),
    ],
)
def test_layout_errors(root, tmp_path, make, match):
    make(root)
    with pytest.raises(DataError, match=match):
        find_lung_vessel_cases(root)


def test_layout_ignores_hidden_files_and_needs_images(root, tmp_path):
    (root / "images" / ".DS_Store").write_bytes(b"x")
    assert [c.case_id for c in find_lung_vessel_cases(root)] == ["a", "b", "c"]
    with pytest.raises(DataError, match="images"):
        find_lung_vessel_cases(tmp_path / "raw" / "labels")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"spacing": (1.0, 0.0, 1.0)}, ValueError),
        ({"spacing": (1.0, 1.0)}, ValueError),
        ({"spacing": "1"}, TypeError),
        ({"window": (500, -1000)}, ValueError),
        ({"window": (-1000, 1e6)}, ValueError),
        ({"margin_mm": -1.0}, ValueError),
    ],
)
def test_bad_arguments(root, tmp_path, kwargs, error):
    with pytest.raises(error):
        prepare_lung_vessel_ct(root, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_inputs(tmp_path):
    image, _ = _phantom()
    img = _write(image, tmp_path / "imagesTr" / "a.nii.gz")
    with pytest.raises(ValueError, match="overwrite the input"):
        prepare_lung_vessel_ct([{"image": img}], tmp_path)


# ------------------------------------------------------------------------------------------------------ real data
def _shared(sub: str) -> Path:
    folder = SHARED_DATA / sub
    if not folder.is_dir():
        pytest.skip(f"shared test data {folder} is absent")
    return folder


def test_real_dicom_folder_with_nrrd_label(tmp_path):
    folder = _shared("dcmqi_ct_3slice")
    out = tmp_path / "out"
    datalist = json.loads(
        prepare_lung_vessel_ct(
            [{"image": folder / "dicom", "label": folder / "liver_seg.nrrd", "case_id": "ct3"}], out, spacing=None
        ).read_text()
    )
    assert datalist["training"][0]["case_id"] == "ct3"
    src = read_volume(folder / "dicom")
    img, lab = read_volume(out / "imagesTr" / "ct3.nii.gz"), read_volume(out / "labelsTr" / "ct3.nii.gz")
    assert img.array.shape == lab.array.shape == (512, 512, 3)
    assert img.array.dtype == np.int16 and img.array.min() == -1000 and img.array.max() == 500
    np.testing.assert_array_equal(img.array, np.clip(src.array, -1000, 500))
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-4)
    assert lab.array.dtype == np.uint8 and int(lab.array.sum()) == 107098
    assert 0 < float(src.array[lab.array == 1].mean()) < 200  # the label sits on soft tissue (liver)


def test_real_pulmonary_artery_resampled(tmp_path):
    folder = _shared("totalseg_chest_pulmonary_artery")
    out = tmp_path / "out"
    cases = [{"image": folder / "ct_cropped.nii.gz", "label": folder / "pulmonary_artery.nii.gz", "case_id": "pa"}]
    prepare_lung_vessel_ct(cases, out, spacing=2.0)
    src = read_volume(folder / "ct_cropped.nii.gz")
    src_lab = read_volume(folder / "pulmonary_artery.nii.gz")
    img, lab = read_volume(out / "imagesTr" / "pa.nii.gz"), read_volume(out / "labelsTr" / "pa.nii.gz")
    expected = tuple(round(n * 1.5 / 2.0) for n in (122, 102, 112))
    assert img.array.shape == lab.array.shape == expected
    np.testing.assert_allclose(img.spacing, (2.0, 2.0, 2.0), atol=1e-5)
    assert img.array.min() == -1000 and img.array.max() == 500
    assert set(np.unique(lab.array).tolist()) == {0, 1}
    volume_in = float(src_lab.array.sum()) * 1.5**3
    assert float(lab.array.sum()) * 2.0**3 == pytest.approx(volume_in, rel=0.1)
    shift = _centre_of_mass_world(lab.array, lab.affine) - _centre_of_mass_world(src_lab.array, src_lab.affine)
    assert np.abs(shift).max() < 1.0, shift
    # Contrast-filled arteries: blood well above soft tissue, in the resampled image too.
    assert 150 < float(img.array[lab.array == 1].mean()) < 500


def test_real_lung_mask_crop(tmp_path):
    folder = _shared("totalseg_example_ct")
    out = tmp_path / "out"
    cases = [{"image": folder / "example_ct.nii.gz", "lung": folder / "lung_mask.nii.gz", "case_id": "abd"}]
    datalist = json.loads(prepare_lung_vessel_ct(cases, out, spacing=None, margin_mm=6.0).read_text())
    assert datalist["training"] == [] and datalist["unlabeled"][0]["case_id"] == "abd"
    src, lung = read_volume(folder / "example_ct.nii.gz"), read_volume(folder / "lung_mask.nii.gz")
    nz = np.nonzero(lung.array)
    lo = [max(int(ix.min()) - 2, 0) for ix in nz]  # 6 mm at 3 mm spacing
    hi = [min(int(ix.max()) + 3, n) for ix, n in zip(nz, src.array.shape)]
    img = read_volume(out / "imagesTr" / "abd.nii.gz")
    assert img.array.shape == tuple(b - a for a, b in zip(lo, hi))
    np.testing.assert_array_equal(img.array, np.clip(src.array[tuple(slice(a, b) for a, b in zip(lo, hi))], -1000, 500))
    np.testing.assert_allclose(_world(img.affine, (0, 0, 0)), _world(src.affine, lo), atol=1e-3)
    assert math.isclose(float(np.linalg.norm(img.affine[:3, 0])), 3.0, rel_tol=1e-5)
