"""``medssl prepare ssl4mis``: the SSL4MIS HDF5 layout (2D slices + volumes, and 3D volumes) to medssl datalists."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _ssl4mis import LAYOUTS_3D, make_acdc_like, make_la_like, write_h5

from medssl.data.datalist import load_datalist
from medssl.data.ssl4mis import detect_layout, labeled_cases, prepare_ssl4mis, read_h5_case
from medssl.errors import DataError, DatalistError

SHARED_ACDC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "acdc_ssl4mis"


def test_2d_layout_labelled_subset_is_the_first_patients(tmp_path):
    root = make_acdc_like(tmp_path / "acdc", patients=8, slices=2)
    written = prepare_ssl4mis(root, tmp_path / "out", labeled=(3, 7))
    assert set(written) == {"3", "7", "all"}
    d3, d7, dall = (load_datalist(written[k]) for k in ("3", "7", "all"))
    train = (root / "train_slices.list").read_text().split()
    # 3 patients x 2 frames x 2 slices, in list order; the rest unlabelled and without labels
    assert [Path(e["image"]).name for e in d3["training"]] == [f"{n}.nii.gz" for n in train[:12]]
    assert [Path(e["image"]).name for e in d3["unlabeled"]] == [f"{n}.nii.gz" for n in train[12:]]
    assert all("label" not in e for e in d3["unlabeled"])
    assert len(d7["training"]) == 28 and len(d7["unlabeled"]) == 4
    assert len(dall["training"]) == 32 and not dall["unlabeled"]
    assert {e["case_id"] for e in d3["training"]} == {f"patient00{p}_frame0{f}" for p in (1, 2, 3) for f in (1, 2)}
    assert d3["split"]["labeled_patients"] == 3 and d7["split"]["labeled_patients"] == 7
    # slices stay 2D; volumes go from slices x H x W to H x W x slices, with labels unchanged
    first = d3["training"][0]
    assert first["slice"] == 1 and nib.load(first["image"]).shape == (32, 36)
    vol = d3["validation"][0]
    with __import__("h5py").File(root / "data" / f"{vol['case_id']}.h5") as f:
        label = f["label"][()]
    converted = np.asanyarray(nib.load(vol["label"]).dataobj)
    assert converted.shape == (40, 32, 3) and np.array_equal(converted, np.moveaxis(label, 0, -1))
    assert len(d3["validation"]) == 2 and len(d3["testing"]) == 2


@pytest.mark.parametrize("where", LAYOUTS_3D)
def test_3d_layout_first_cases_of_train_list(tmp_path, where):
    root = make_la_like(tmp_path / "la", cases=4, where=where)
    assert detect_layout(root).kind == "3d"
    written = prepare_ssl4mis(root, tmp_path / "out", labeled=(1, 2), num_classes=2)
    d1 = load_datalist(written["1"])
    assert [e["case_id"] for e in d1["training"]] == ["CASE00"]
    assert [e["case_id"] for e in d1["unlabeled"]] == ["CASE01", "CASE02", "CASE03"]
    assert [e["case_id"] for e in d1["testing"]] == ["CASE04"] and "validation" not in d1
    assert nib.load(d1["training"][0]["image"]).shape == (16, 18, 12)  # axes kept


def test_labelled_subset_of_the_real_acdc_lists():
    if not SHARED_ACDC.is_dir():
        pytest.skip(f"{SHARED_ACDC} is absent (real-data check)")
    names = (SHARED_ACDC / "train_slices.list").read_text().split()
    assert labeled_cases(names, 3, "2d") == names[:68]  # SSL4MIS patients_to_slices: 3 -> 68, 7 -> 136
    assert labeled_cases(names, 7, "2d") == names[:136]
    volumes = (SHARED_ACDC / "train.list").read_text().split()
    assert labeled_cases(volumes, 2, "3d") == volumes[:2]
    # the real files read as the reader expects: a 2D slice and a volume (slices x H x W), labels in 0..3
    image, label = read_h5_case(SHARED_ACDC / "data" / f"{names[0]}.h5", 2, 4)
    assert image.shape == label.shape and label.max() <= 3
    volume = (SHARED_ACDC / "val.list").read_text().split()[0]
    image, label = read_h5_case(SHARED_ACDC / "data" / f"{volume}.h5", 3, 4)
    assert image.shape == label.shape and image.shape[0] < image.shape[1] and set(np.unique(label)) == {0, 1, 2, 3}


def _bad(tmp_path, image, label, name="patient001_frame01_slice_1"):
    root = make_acdc_like(tmp_path / "acdc", patients=7, slices=1)
    write_h5(root / "data" / f"{name}.h5", image, label)
    return root, root / "data" / f"{name}.h5"


@pytest.mark.parametrize(
    "image, label, problem",
    [
        (np.zeros((8, 8), np.float32), None, "no dataset ['label']"),
        (None, np.zeros((8, 8), np.uint8), "no dataset ['image']"),
        (np.zeros((8, 8), np.float32), np.zeros((8, 9), np.uint8), "shape (8, 9) differ"),
        (np.zeros((8, 8), np.float32), np.full((8, 8), 5, np.uint8), "label values [5] are not in 0..3"),
        (np.full((8, 8), np.nan, np.float32), np.zeros((8, 8), np.uint8), "NaN or Inf"),
        (np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 8), np.uint8), "expected a 2D 'image'"),
    ],
)
def test_bad_files_name_the_file_and_write_nothing(tmp_path, image, label, problem):
    root, path = _bad(tmp_path, image, label)
    with pytest.raises(DataError, match="patient001_frame01_slice_1.h5") as err:
        prepare_ssl4mis(root, tmp_path / "out", labeled=(3,))
    assert problem in str(err.value)
    assert not (tmp_path / "out" / "images").exists() and not list((tmp_path / "out").glob("*.json"))


def test_list_naming_an_absent_file(tmp_path):
    root = make_acdc_like(tmp_path / "acdc", patients=7, slices=1)
    (root / "test.list").write_text("patient999_frame01\n")
    with pytest.raises(DatalistError, match="test.list.*patient999_frame01"):
        prepare_ssl4mis(root, tmp_path / "out", labeled=(3,))


def test_not_an_ssl4mis_folder_and_too_many_patients(tmp_path):
    with pytest.raises(DataError, match="not a folder in the SSL4MIS layout"):
        detect_layout(tmp_path)
    root = make_acdc_like(tmp_path / "acdc", patients=7, slices=1)
    with pytest.raises(ValueError, match="labeled must be between 1 and 7"):
        prepare_ssl4mis(root, tmp_path / "out", labeled=(8,))


def test_read_h5_case_returns_checked_arrays(tmp_path):
    path = write_h5(tmp_path / "a.h5", np.ones((4, 5), np.float64), np.array([[0, 1, 2, 3, 0]] * 4, np.int64))
    image, label = read_h5_case(path, 2, 4)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and label.max() == 3
