"""Segments from a bundle's metadata and DICOM SEG writing with highdicom (no Holoscan)."""

from __future__ import annotations

import numpy as np
import pytest

hd = pytest.importorskip("highdicom", reason="the deploy extra is not installed (make deploy-env)")

from monai.bundle import ConfigParser  # noqa: E402

from medssl.deploy.seg import SegmentLabel, bundle_segments, label_map_to_frames, write_dicom_seg  # noqa: E402
from medssl.deploy.series import scan_dicom_folder, sort_slices  # noqa: E402

from .conftest import REPO, shared_series  # noqa: E402


def _postprocessing(bundle):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    return parser.get_parsed_content("postprocessing")


@pytest.mark.parametrize(
    "bundle, expected",
    [
        ("lung_vessel_ct_ssl_segmentation", [(1, "vessel", "BloodVessel")]),
        (
            "brats_mri_transbts_ssl_segmentation",
            [(1, "necrotic / non-enhancing tumour core", "Necrosis"), (2, "peritumoral edema", "Edema"),
             (4, "enhancing tumour", "Neoplasm")],
        ),
    ],
)  # fmt: skip
def test_bundle_segments(bundle, expected):
    labels = bundle_segments(REPO / "bundles" / bundle, _postprocessing(bundle))
    assert [(s.value, s.name, s.snomed[1]) for s in labels] == expected


def test_label_map_to_frames_rejects_unknown_values():
    labels = [SegmentLabel(1, "a"), SegmentLabel(4, "b")]
    label_map = np.zeros((3, 2, 5), dtype=np.uint8)  # column, row, slice
    label_map[2, 1, 4] = 4
    label_map[0, 0, 0] = 1
    frames = label_map_to_frames(label_map, labels)
    assert frames.shape == (5, 2, 3) and frames[4, 1, 2] == 2 and frames[0, 0, 0] == 1 and frames.sum() == 3
    label_map[1, 1, 1] = 3
    with pytest.raises(ValueError, match=r"label values \[3\]"):
        label_map_to_frames(label_map, labels)


def test_seg_round_trip(tmp_path):
    folder = shared_series("dcmqi_ct_3slice")
    [series] = scan_dicom_folder(folder)
    datasets = sort_slices(series.datasets)
    rng = np.random.default_rng(0)
    label_map = rng.choice([0, 1, 2, 4], size=(512, 512, 3)).astype(np.uint8)
    labels = [SegmentLabel(1, "necrotic / non-enhancing tumour core"), SegmentLabel(2, "peritumoral edema"),
              SegmentLabel(4, "enhancing tumour")]  # fmt: skip
    path = write_dicom_seg(label_map, datasets, labels, tmp_path / "seg.dcm", "test bundle", "0.1.0")
    assert [p.name for p in tmp_path.iterdir()] == ["seg.dcm"]  # no temporary file left
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 3 and int(seg.NumberOfFrames) == 3 * 3
    assert seg.get_segment_description(3).segment_label == "enhancing tumour"
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    mask = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (slices, rows, columns), 1..3
    expected = label_map_to_frames(label_map, labels)
    np.testing.assert_array_equal(mask, expected)
