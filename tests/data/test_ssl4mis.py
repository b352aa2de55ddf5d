"""``medssl prepare ssl4mis``: the SSL4MIS HDF5 layout (2D slices + volumes, and 3D volumes) to medssl datalists."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _ssl4mis import LAYOUTS_3D, make_acdc_like, make_la_like, write_h5

from medssl.cli import main
from medssl.data.datalist import load_datalist
from medssl.data.ssl4mis import detect_layout, labeled_cases, prepare_ssl4mis, read_h5_case
from medssl.errors import DataError, DatalistError

SHARED_ACDC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "acdc_ssl4mis"
SHARED_LA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "la_ssl4mis_sample"


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


def _ids(datalist, part):
    return [e["case_id"] for e in datalist.get(part, [])]


def test_la_sample_validation_carved_from_the_end_of_train_list(tmp_path):
    if not SHARED_LA.is_dir():
        pytest.skip(f"{SHARED_LA} is absent (real-data check)")
    out = tmp_path / "la"
    args = ["--labeled", "1", "--num-classes", "2", "--val-from-train", "1"]
    assert main(["prepare", "ssl4mis", "--root", str(SHARED_LA), "--out", str(out), *args]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["datalist_1.json", "datalist_all.json"]
    train = (SHARED_LA / "train.list").read_text().split()
    test = (SHARED_LA / "test.list").read_text().split()
    assert len(train) == 2 and len(test) == 1
    d1, dall = load_datalist(out / "datalist_1.json"), load_datalist(out / "datalist_all.json")
    # labelled: the first ID of train.list; validation: the last; test: test.list; nothing else is unlabelled
    assert _ids(d1, "training") == [train[0]] and _ids(d1, "validation") == [train[-1]]
    assert _ids(d1, "testing") == test and _ids(d1, "unlabeled") == []
    # the upper bound labels every training ID but the validation one
    assert _ids(dall, "training") == [train[0]] and _ids(dall, "validation") == [train[-1]]
    for d in (d1, dall):
        assert d["split"]["validation"] == [train[-1]] and d["split"]["val_from_train"] == 1
        assert d["split"]["validation_from"].startswith("the last 1 IDs of train.list")
        assert d["labels"] == {"0": "0", "1": "1"}
    assert d1["split"]["labeled"] == [train[0]] and d1["split"]["labeled_fraction"] == 1.0
    shapes = {}
    for entry in d1["training"] + d1["validation"] + d1["testing"]:
        image, label = nib.load(entry["image"]), nib.load(entry["label"])
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        assert np.array_equal(image.affine, np.eye(4))  # the files carry no spacing
        values = np.asanyarray(label.dataobj)
        assert set(np.unique(values).tolist()) == {0, 1} and 0.05 < values.mean() < 0.12  # 7-10% atrium
        shapes[entry["case_id"]] = image.shape
    assert sorted(shapes.values()) == [(175, 132, 88), (183, 140, 88), (199, 143, 88)]  # SOURCE.md: X x Y x 88
    # the voxels are the HDF5 file's, axes kept
    with __import__("h5py").File(SHARED_LA / "2018LA_Seg_Training Set" / train[-1] / "mri_norm2.h5") as f:
        original = f["image"][()]
    assert np.allclose(np.asanyarray(nib.load(d1["validation"][0]["image"]).dataobj), original)


def test_val_from_train_leaves_the_last_ids_unlabelled_by_every_setting(tmp_path):
    root = make_la_like(tmp_path / "la", cases=6)
    written = prepare_ssl4mis(root, tmp_path / "out", labeled=(1, 4), val_from_train=2)
    d1, d4, dall = (load_datalist(written[k]) for k in ("1", "4", "all"))
    assert _ids(d1, "training") == ["CASE00"] and _ids(d1, "unlabeled") == ["CASE01", "CASE02", "CASE03"]
    assert _ids(d4, "training") == ["CASE00", "CASE01", "CASE02", "CASE03"] and _ids(d4, "unlabeled") == []
    assert _ids(dall, "training") == _ids(d4, "training") and _ids(dall, "unlabeled") == []
    for d in (d1, d4, dall):
        assert _ids(d, "validation") == ["CASE04", "CASE05"] and _ids(d, "testing") == ["CASE06"]
        assert all(Path(e["label"]).is_file() for e in d["validation"])
        assert d["split"]["validation"] == ["CASE04", "CASE05"] and d["split"]["val_from_train"] == 2
    assert d1["split"]["labeled_fraction"] == 0.25  # of the 4 training IDs left, not of the 6 in train.list
    assert dall["split"]["labeled_fraction"] == 1.0 and dall["split"]["labeled"] == _ids(d4, "training")


def test_default_settings_per_layout(tmp_path):
    la = prepare_ssl4mis(make_la_like(tmp_path / "la", cases=10, size=12), tmp_path / "la_out", val_from_train=2)
    assert set(la) == {"1", "4", "8", "all"}
    d8 = load_datalist(la["8"])
    assert len(d8["training"]) == 8 and d8["labels"] == {"0": "0", "1": "1"} and d8["split"]["validation_from"]
    acdc = prepare_ssl4mis(make_acdc_like(tmp_path / "acdc", patients=7, slices=1), tmp_path / "acdc_out")
    assert set(acdc) == {"3", "7", "all"}
    d3 = load_datalist(acdc["3"])
    assert len(d3["labels"]) == 4 and d3["split"]["val_from_train"] == 0
    assert d3["split"]["validation_from"] == "val.list" and d3["split"]["validation"] == _ids(d3, "validation")


def test_labeled_reaching_into_the_validation_ids(tmp_path):
    root = make_la_like(tmp_path / "la", cases=4)
    with pytest.raises(ValueError, match=r"labeled=3 would reach into the validation cases.*at most 2 can be labelled"):
        prepare_ssl4mis(root, tmp_path / "out", labeled=(1, 3), val_from_train=2)
    assert not (tmp_path / "out").exists()
    prepare_ssl4mis(root, tmp_path / "out", labeled=(2,), val_from_train=2)  # the largest k that stays clear


@pytest.mark.parametrize("n", [4, 5])
def test_val_from_train_not_smaller_than_the_list(tmp_path, n):
    root = make_la_like(tmp_path / "la", cases=4)
    with pytest.raises(DatalistError, match=rf"train.list: names 4 cases: too few to carve val_from_train={n}"):
        prepare_ssl4mis(root, tmp_path / "out", labeled=(1,), val_from_train=n)
    assert not (tmp_path / "out").exists()


def test_val_from_train_with_a_validation_list_is_refused(tmp_path, capsys):
    la = make_la_like(tmp_path / "la", cases=4)
    (la / "val.list").write_text("CASE03\n")
    with pytest.raises(DatalistError, match=r"val.list: .*val_from_train=1 .* would be ambiguous"):
        prepare_ssl4mis(la, tmp_path / "out", labeled=(1,), val_from_train=1)
    acdc = make_acdc_like(tmp_path / "acdc", patients=7, slices=1)
    args = ["prepare", "ssl4mis", "--root", str(acdc), "--out", str(tmp_path / "out"), "--val-from-train", "2"]
    assert main(args) == 2
    assert "val.list: this folder has its own validation list" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (acdc / "val.list").unlink()  # a 2D list names slices: whole volumes cannot be carved from it
    with pytest.raises(ValueError, match="2D layout"):
        prepare_ssl4mis(acdc, tmp_path / "out", val_from_train=2)
    with pytest.raises(ValueError, match="val_from_train must be 0 or more"):
        prepare_ssl4mis(la, tmp_path / "out", val_from_train=-1)
