"""Finding, checking and choosing DICOM series, and their geometry (pydicom only; no Holoscan)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the deploy extra is not installed (make deploy-env)")

import pydicom  # noqa: E402

from medssl.data.io import read_volume  # noqa: E402
from medssl.deploy.series import choose_series, scan_dicom_folder, series_affine, sort_slices  # noqa: E402
from medssl.errors import DataError  # noqa: E402

from .conftest import shared_series  # noqa: E402


def _copy(src, dst):
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no DICOM image") as e:
        scan_dicom_folder(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="input folder not found"):
        scan_dicom_folder(tmp_path / "absent")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_file_is_named(tmp_path, damage):
    folder = _copy(shared_series("dcmqi_ct_3slice"), tmp_path / "dicom")
    victim = folder / "02.dcm"
    data = victim.read_bytes()
    victim.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00" * 50, "empty": b""}[damage])
    with pytest.raises(DataError) as e:
        scan_dicom_folder(folder)
    assert str(victim) in str(e.value)


def test_several_series_need_a_rule(tmp_path):
    folder = _copy(shared_series("dcmqi_ct_3slice"), tmp_path / "dicom")
    other = "1.2.826.0.1.3680043.8.498.1"
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = other
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"copy_{f.name}")
    series = scan_dicom_folder(folder)
    assert len(series) == 2 and all(len(s.files) == 3 for s in series)
    with pytest.raises(DataError, match="2 CT series match and no rule chooses"):
        choose_series(series, folder, modality="CT")
    assert choose_series(series, folder, modality="CT", series_uid=other).uid == other
    with pytest.raises(DataError, match="no series with SeriesInstanceUID 9.9"):
        choose_series(series, folder, modality="CT", series_uid="9.9")


def test_non_ct_series_for_ct_bundle(tmp_path):
    folder = _copy(shared_series("dcmqi_ct_3slice"), tmp_path / "dicom")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    series = scan_dicom_folder(folder)
    with pytest.raises(DataError, match="the bundle segments CT images, but the folder holds only: MR series"):
        choose_series(series, folder, modality="CT")


def test_anonymised_series_gets_stable_uids():
    folder = shared_series("totalseg_ct_dicom_series")
    first, second = scan_dicom_folder(folder), scan_dicom_folder(folder)
    assert len(first) == 1 and len(first[0].files) == 20 and first[0].repaired
    assert first[0].uid == second[0].uid and first[0].uid  # derived, the same each time
    assert len({str(ds.SOPInstanceUID) for ds in first[0].datasets}) == 20


@pytest.mark.parametrize("name", ["dcmqi_ct_3slice", "totalseg_ct_dicom_series"])
def test_affine_matches_simpleitk(name):
    folder = shared_series(name)
    [series] = scan_dicom_folder(folder)
    datasets = sort_slices(series.datasets)
    reference = read_volume(folder)  # SimpleITK / GDCM, LPS converted to RAS
    np.testing.assert_allclose(series_affine(datasets, folder), reference.affine, atol=1e-4)
    assert reference.array.shape == (datasets[0].Columns, datasets[0].Rows, len(datasets))


def test_uneven_slices_are_refused(tmp_path):
    folder = _copy(shared_series("totalseg_ct_dicom_series"), tmp_path / "dicom")
    [series] = scan_dicom_folder(folder)
    datasets = sort_slices(series.datasets)
    with pytest.raises(DataError, match="unevenly spaced"):
        series_affine(datasets[:5] + datasets[6:], folder)
