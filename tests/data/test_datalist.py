from __future__ import annotations

import json

import pytest

from medssl.data.datalist import case_id, load_datalist, require_unlabeled, save_datalist
from medssl.errors import DatalistError


def _write(tmp_path, obj, name="dl.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def _touch(tmp_path, *names):
    for n in names:
        (tmp_path / n).write_bytes(b"x")


def test_relative_paths_resolve_against_datalist_folder(tmp_path):
    _touch(tmp_path, "a.nii.gz", "a_seg.nii.gz", "t1.nii.gz", "t2.nii.gz")
    p = _write(
        tmp_path,
        {
            "training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}],
            "unlabeled": [{"image": ["t1.nii.gz", "t2.nii.gz"], "case_id": "b"}],
        },
    )
    dl = load_datalist(p)
    assert dl["training"][0]["image"] == str(tmp_path / "a.nii.gz")
    assert dl["unlabeled"][0]["image"] == [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")]
    assert case_id(dl["training"][0]) == "a" and case_id(dl["unlabeled"][0]) == "b"


def test_missing_file_is_named(tmp_path):
    p = _write(tmp_path, {"training": [{"image": "gone.nii.gz", "label": "gone_seg.nii.gz"}]})
    with pytest.raises(DatalistError, match="missing file .*gone.nii.gz"):
        load_datalist(p)
    assert load_datalist(p, check_files=False)["training"][0]["image"].endswith("gone.nii.gz")


def test_duplicate_case_is_refused(tmp_path):
    _touch(tmp_path, "a.nii.gz", "a_seg.nii.gz")
    p = _write(tmp_path, {"training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}], "unlabeled": [{"image": "a.nii.gz"}]})
    with pytest.raises(DatalistError, match="'a' appears twice"):
        load_datalist(p)


@pytest.mark.parametrize(
    "obj, word",
    [
        ([], "JSON object"),
        ({"training": {"image": "x"}}, "list of objects"),
        ({"training": [{"label": "x"}]}, "no 'image'"),
        ({"training": [{"image": "x"}]}, "no 'label'"),
        ({"validation": []}, "names no case in 'training' or 'unlabeled'"),
    ],
)
def test_malformed_datalists(tmp_path, obj, word):
    with pytest.raises(DatalistError, match=word) as err:
        load_datalist(_write(tmp_path, obj), check_files=False)
    assert "dl.json" in str(err.value)


def test_not_json(tmp_path):
    p = tmp_path / "dl.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="dl.json: not valid JSON"):
        load_datalist(p)


def test_require_unlabeled():
    with pytest.raises(DatalistError, match="unlabelled set is empty"):
        require_unlabeled({"training": [{"image": "a"}]}, "split.json")
    with pytest.raises(DatalistError, match="split.json"):
        require_unlabeled({"unlabeled": []}, "split.json")
    assert require_unlabeled({"unlabeled": [{"image": "a"}]}) == [{"image": "a"}]


def test_save_makes_paths_relative_and_round_trips(tmp_path):
    _touch(tmp_path, "a.nii.gz", "a_seg.nii.gz")
    dl = {"training": [{"image": str(tmp_path / "a.nii.gz"), "label": str(tmp_path / "a_seg.nii.gz")}]}
    out = save_datalist(dl, tmp_path / "out.json")
    assert json.loads(out.read_text())["training"][0] == {"image": "a.nii.gz", "label": "a_seg.nii.gz"}
    assert load_datalist(out) == dl


def test_a_datalist_of_test_cases_alone_is_read_where_they_are_asked_for(tmp_path):
    """Inference reads a datalist of 'testing' cases alone (it was refused: no 'training' nor 'unlabeled' list)."""
    path = _write(tmp_path, {"testing": [{"image": "a.nii.gz"}]})
    with pytest.raises(DatalistError, match="names no case"):
        load_datalist(path, check_files=False)
    assert load_datalist(path, check_files=False, require=("testing",))["testing"][0]["image"] == str(tmp_path / "a.nii.gz")
